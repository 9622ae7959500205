"""scripts.benchmark_change on stored synthetic score streams (--from-json): the analysis runs
end to end without an agent, a mean shift is detected and confirmed after it is suspected, the
result re-analyses to itself, and bad arguments are one-line errors."""

import json

import numpy as np

from scripts import benchmark_change


def _episodes(rng, n, length, shift=0.0):
    return [[(rng.exponential(size=length) + shift).tolist(), False] for _ in range(n)]


def _stored(tmp_path):
    rng = np.random.default_rng(0)
    data = {
        "run": "synthetic", "env": "Synthetic-v0", "seed": 0,
        "gate": {"score": "max", "window": 1, "threshold": float(np.log(20)), "n": 1000},
        "scores": {
            "reference": _episodes(rng, 20, 60),
            "test": _episodes(rng, 24, 60),
            "shifted": {"mean +3": _episodes(rng, 6, 60, shift=3.0)},
        },
    }  # fmt: skip
    path = tmp_path / "stored.json"
    path.write_text(json.dumps(data))
    return path


def test_from_json_detects_a_mean_shift_and_reanalyses_to_itself(tmp_path):
    stored = _stored(tmp_path)
    out1, out2 = tmp_path / "a.json", tmp_path / "b.json"
    args = ["--rates", "0.01", "--ref-sizes", "12", "--splits", "2", "--delay-streams", "3"]
    assert benchmark_change.main(["--from-json", str(stored), *args, "--out", str(out1)]) == 0
    r = json.loads(out1.read_text())
    assert r["reference"] == {"episodes": 20, "decisions": 1200, "terminated": 0}
    assert r["test"]["episodes"] == 24 and r["test"]["decisions"] == 1440
    # exponential scores: P(score > log 20) = 1/20 exactly, so the abstain rate is near 0.05
    assert abs(r["test"]["abstain_rate"] - 0.05) < 0.02
    for variant in benchmark_change.VARIANTS:
        fa = r["false_alarms"][f"{variant} 0.01"]
        assert fa["per_1000"] == 1000 * len(fa["alarms"]) / 1440
    d = r["delays"]["default 0.01 mean +3"]
    assert d["detected"] == d["streams"] == 3 and d["false_before_switch"] == 0
    # reported at the suspicion, confirmed by a second crossing in a later episode
    assert all(0 <= s < c for s, c in zip(d["delays"], d["confirmed_after"], strict=True))
    # without confirmation the detection is the action: the same suspicion index
    e = r["delays"]["edged 0.01 mean +3"]
    assert e["delays"] == e["confirmed_after"] == d["delays"]
    assert set(r["reference_size"]) == {"12"}
    # the result stores its streams: re-analysing it gives the same figures
    assert benchmark_change.main(["--from-json", str(out1), *args, "--out", str(out2)]) == 0
    r2 = json.loads(out2.read_text())
    for key in ("false_alarms", "delays", "reference_size", "reference", "test"):
        assert r2[key] == r[key]


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert benchmark_change.main(["--from-json", str(tmp_path / "missing.json")]) == 2
    assert benchmark_change.main([]) == 2  # neither RUN_DIR nor --from-json
    (tmp_path / "x.json").write_text("{}")
    assert benchmark_change.main(["--from-json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "not found" in err[0] and "RUN_DIR" in err[1] and "'scores'" in err[2]
