"""End to end: scripts.benchmark_ood on a debug run writes every score's detection figures,
including the windowed bias test and the either-test alarm, with thresholds and false-abstain
rates in [0, 1]."""

import json
import math

from scripts import benchmark_ood
from scripts import train as train_script


def test_benchmark_ood_reports_bias_and_either_tests(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["debug", "env.id=HalfCheetah-v5", f"run_dir={run}", "train.steps=150", "eval.every=0"]
    assert train_script.main(args) == 0
    out = tmp_path / "results"
    rc = benchmark_ood.main(
        [str(run), "--episodes", "4", "--max-steps", "30", "--switch-at", "10", "--out", str(out)]
    )
    assert rc == 0
    (path,) = out.glob("ood_*.json")
    r = json.loads(path.read_text())
    for name in ("max_w1", "max_w10", "bias_w10", "either_w10"):
        assert 0.0 <= r["false_abstain_rate"][name] <= 1.0
    assert math.isfinite(r["thresholds"]["bias_w10"]) and math.isfinite(
        r["thresholds"]["either_w10"]
    )
    for rates in r["false_abstain_by_t"].values():
        assert set(rates) == {"t<10", "t>=10"} and all(0.0 <= v <= 1.0 for v in rates.values())
    for shift in r["shifts"].values():
        for name in ("max_w10", "bias_w10", "either_w10"):
            assert 0.0 <= shift[name]["auroc"] <= 1.0
    for delays in r["mid_episode"]["per_shift"].values():
        assert {
            "detected",
            "bias_detected",
            "either_detected",
            "either_false_alarms_before_switch",
        } <= set(delays)
    assert "bias_w10" in capsys.readouterr().out
