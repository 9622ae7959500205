"""End to end: a debug run meets a schedule of worlds (scripts.continual) in every mode."""

import json

import pytest

from scripts import continual as continual_script
from scripts import train as train_script


def test_continual_schedule_runs_every_mode(tmp_path):
    run = tmp_path / "run"
    args = ["debug", f"run_dir={run}", "train.steps=150", "eval.every=0", "abstain.holdout=0.3"]
    assert train_script.main(args) == 0
    out = tmp_path / "results"
    # a hair-trigger detector, so that alarms (and the learning they start) happen in 200 steps;
    # the default gate (either): the first recalibration after adaptation leaves the bias test
    # out (fewer than Calibrator.min_holdout() = 380 new held-out transitions in 200 steps);
    # one reference episode arms the detector (the default 20 would take 1600 steps here), and
    # one episode may raise the alarm (uncapped: the cap needs two episodes of evidence), and
    # short untested edges (the default 10 would leave no time to recalibrate in 200 steps), and
    # a suspicion confirmed in the next episode (the default allows 3)
    # (the two modes as two processes would run them, one per core, merged into one result)
    # the debug schedule with a longer second phase, so that a probe (library) ends in it
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(
        "phases:\n  - {steps: 60, shift: none}\n"
        "  - {steps: 200, shift: {kind: actuator_offset, severity: 0.8}}\n"
    )
    common = [str(run), str(schedule), "env.max_episode_steps=40",
              "continual.recalib_after=10", "continual.boost_steps=10", "--out", str(out),
              "change.false_alarm=0.99", "change.horizon=5", "change.min_episodes=1",
              "continual.deploy_episodes=1",
              "change.episode_cap=1", "change.edge=2", "change.confirm=1",
              "continual.probe_steps=5", "continual.review_steps=0", "--merge",
              "continual.keep_within=-1"]  # fmt: skip
    for mode in ("adaptive", "frozen", "library"):
        assert continual_script.main([*common, "--modes", mode]) == 0
    (path,) = out.glob("continual_*.json")
    result = json.loads(path.read_text())
    assert set(result["modes"]) == {"adaptive", "frozen", "library"}
    assert [c.split("--modes ")[1] for c in result["command"]] == ["adaptive", "frozen", "library"]
    # library: every alarm asked the stored worlds; one not recalled stored a new world
    lib = result["modes"]["library"]
    asked = [r for p in lib["phases"] for r in p.get("recognition", [])]
    assert len(asked) == sum(len(p["confirmed"]) for p in lib["phases"]) > 0
    assert asked[0]["recalled"] is None and asked[0]["rates"] == [None]  # only the current one
    assert all(len(r["surprise"]) == len(r["epistemic"]) == len(r["rates"]) for r in asked)
    # (a stored world on trial answers after continual.probe_steps, at an episode end)
    assert all(r["answer"] == "recall" or r["recalled"] is None for r in asked)
    assert len(lib["worlds"]) == 1 + sum(r["answer"] == "new" for r in asked)
    probed = [r for r in asked if r["probes"]]  # the stored original world was tried out
    assert probed and all(r["answer"] in ("recall", "new") for r in probed)
    verdicts = [e["verdict"] for e in lib["events"] if e["kind"] == "probe"]
    assert verdicts == [r["answer"] for r in probed]
    assert lib["worlds"][0] == "original"
    assert not [e for e in lib["events"] if e["kind"] == "review"]  # review_steps=0: none
    # with a review: the new world's learnt model and its source each act before it recalibrates
    review_out = tmp_path / "review"
    common[common.index(str(out))] = str(review_out)
    common[common.index("continual.review_steps=0")] = "continual.review_steps=5"
    assert continual_script.main([*common, "--modes", "library"]) == 0
    (review_path,) = review_out.glob("continual_*.json")
    rev = json.loads(review_path.read_text())["modes"]["library"]
    asked = [r for p in rev["phases"] for r in p.get("recognition", [])]
    reviewed = [r["review"] for r in asked if "review" in r]
    kept = [e for e in rev["events"] if e["kind"] == "review" and "kept" in e]
    assert reviewed and [e["kept"] for e in kept] == [r["kept"] for r in reviewed]
    for r in reviewed:
        better = "source" if r["returns"]["source"] > r["returns"]["learnt"] else "learnt"
        assert r["kept"] == better and r["source"] == 0
    # the source acts first, then the learnt model, whose turn is already its calibration data:
    # no recalibration before its turn; if the source is kept, it is recalibrated after
    turn = [e["step"] for e in rev["events"] if e["kind"] == "review" and e.get("stage")]
    calib = [e["step"] for e in rev["events"] if e["kind"] == "calibration"]
    assert turn and calib and calib[0] > turn[0]
    if reviewed[0]["kept"] == "source":
        assert [c for c in calib if c > kept[0]["step"]]
    # keep_within: a source that returns about as much in the new world is kept, gate recalibrated
    keep_out = tmp_path / "keep"
    common[common.index(str(review_out))] = str(keep_out)
    assert continual_script.main([*common, "continual.keep_within=1e6", "--modes", "library"]) == 0
    (keep_path,) = keep_out.glob("continual_*.json")
    kp = json.loads(keep_path.read_text())["modes"]["library"]
    asked = [r for p in kp["phases"] for r in p.get("recognition", [])]
    assert asked and asked[0]["answer"] == "new"  # the first change: only one world stored
    assert all("kept_as_is" in r for r in asked if r["answer"] == "new")
    assert kp["updates"] == 0 and not [e for e in kp["events"] if e["kind"] == "review"]
    alarm = next(e["step"] for e in kp["events"] if e["kind"] == "alarm")
    assert [e for e in kp["events"] if e["kind"] == "calibration" and e["step"] > alarm]
    for mode, r in result["modes"].items():
        phases = r["phases"]
        assert [p["world"] for p in phases] == ["original", "actuator_offset 0.8"]
        assert 60 <= phases[1]["switch_step"] <= 100  # at the first episode end after step 60
        kinds = {e["kind"] for e in r["events"]}
        assert {"episode", "switch"} <= kinds
        alarms = [e for e in r["events"] if e["kind"] == "alarm"]
        # the deployed model learns only after a detected change, and never when frozen
        assert r["updates"] == 0 if mode == "frozen" else (r["updates"] > 0) == bool(alarms)
        # each phase keeps all of its alarms (a later one must not overwrite the first's delay)
        assert [a for p in phases for a in p["alarms"]] == [e["detected"] for e in alarms]
        assert [c for p in phases for c in p["confirmed"]] == [e["step"] for e in alarms]
        for p in phases:
            assert p["alarm_step"] == (p["alarms"][0] if p["alarms"] else None)
            # reported at the suspicion, acted on at its confirmation (change.confirm)
            # (or at the confirmation when the suspicion came before this world began)
            assert all(d <= c for d, c in zip(p["alarms"], p["confirmed"], strict=True))
        suspicions = {t for p in phases for t in p["suspicions"] + p["confirmed"]}
        assert {a for p in phases for a in p["alarms"]} <= suspicions
        assert alarms  # the detector is set to alarm almost surely (false_alarm 0.99 in 5 steps)
        # the episode after an alarm is held out, so the new world recalibrates
        if mode != "frozen":
            calib = [e for e in r["events"] if e["kind"] == "calibration"]
            assert calib and calib[0]["step"] > alarms[0]["step"]
            assert calib[0]["bias_test"] is False  # staged: the plain score first
            assert "detector_armed" in calib[0] and calib[0]["detector_episodes"] >= 1
        assert phases[0]["detector_armed"] is True
        # the forgetting figure keeps each episode's return (default continual.eval_episodes 5)
        for when in ("before", "after"):
            rets = phases[0][f"original_returns_{when}"]
            assert len(rets) == 5
            assert abs(sum(rets) / 5 - phases[0][f"original_return_{when}"]) < 1e-6
    from scripts import plot_continual

    assert plot_continual.main([str(path)]) == 0
    assert path.with_suffix(".png").stat().st_size > 10_000
    from scripts import summarize_continual

    assert summarize_continual.main([str(path)]) == 0
    summary = json.loads(path.with_name(path.stem + "_summary.json").read_text())
    assert [p["world"] for p in summary["modes"]["adaptive"]["phases"]] == [
        "original",
        "actuator_offset 0.8",
    ]
    eps = [e for e in result["modes"]["adaptive"]["events"] if e["kind"] == "episode"]
    lo = summary["modes"]["adaptive"]["phases"][1]["switch_step"]
    late = [e for e in eps if e["step"] > lo]
    per_step = sum(e["return"] for e in late) / sum(e["length"] for e in late)
    assert abs(summary["modes"]["adaptive"]["phases"][1]["reward_per_step"] - per_step) < 1e-9
    mean = sum(e["return"] for e in late) / len(late)
    assert abs(summary["modes"]["adaptive"]["phases"][1]["return_mean"] - mean) < 1e-9
    # references kept in an older summary serve when their scratch runs are gone
    old = tmp_path / "old_summary.json"
    ref = {"return": 1e9, "steps": 4000, "run": "/gone/scratch-offset"}
    old.write_text(json.dumps({"scratch": {"actuator_offset 0.8": ref}}))
    assert summarize_continual.main([str(path), "--scratch-from", str(old)]) == 0
    summary = json.loads(path.with_name(path.stem + "_summary.json").read_text())
    assert summary["scratch"]["actuator_offset 0.8"] == ref
    shifted = summary["modes"]["adaptive"]["phases"][1]
    assert shifted["scratch_return"] == 1e9 and shifted["steps_to_90pct"] is None


def test_continual_bad_schedule_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "s.yaml"
    bad.write_text("phases:\n  - steps: -3\n")
    assert continual_script.main([str(tmp_path), str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_merge_keeps_other_modes_and_refuses_another_run(tmp_path):
    from worldmodel.errors import UserError

    path = tmp_path / "r.json"
    base = {"run": "r", "schedule": {"phases": []}, "overrides": ["a=1"]}
    path.write_text(json.dumps({**base, "modes": {"naive": 1, "frozen": 2}, "command": "c1"}))
    merged = continual_script._merged(path, {**base, "modes": {"frozen": 3}, "command": "c2"})
    assert merged["modes"] == {"naive": 1, "frozen": 3} and merged["command"] == ["c1", "c2"]
    path.write_text(json.dumps(merged))  # the same process writing again adds no command
    assert continual_script._merged(path, {**base, "modes": {}, "command": "c2"})["command"] == [
        "c1",
        "c2",
    ]
    with pytest.raises(UserError, match="another run, schedule or overrides"):
        continual_script._merged(path, {**base, "overrides": ["a=2"], "modes": {}, "command": "c3"})
