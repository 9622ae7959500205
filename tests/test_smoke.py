"""End to end through the scripts: train the debug config, evaluate it, resume it, and the one-line
`error:` exits for bad input."""

import json

import numpy as np
import pytest

from scripts import evaluate as evaluate_script
from scripts import train as train_script
from worldmodel.checkpoint import Checkpointer


def _events(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _updates_at_checkpoints(events):
    return [(e["env_step"], e["updates"]) for e in events if e["kind"] == "checkpoint"]


def test_train_evaluate_resume(tmp_path):
    # debug: seed_steps=100, steps=300, eval/checkpoint every 150. Stopping first at exactly
    # seed_steps also checks that a resume does not repeat the seed_steps catch-up updates.
    run = tmp_path / "run"
    assert train_script.main(["debug", f"run_dir={run}", "train.steps=100"]) == 0
    assert (run / "config.yaml").is_file()
    events = _events(run)
    assert {"train", "episode", "eval", "checkpoint"} <= {e["kind"] for e in events}
    assert all(np.isfinite(e["loss"]) for e in events if e["kind"] == "train")
    assert _updates_at_checkpoints(events) == [(100, 100)]
    assert Checkpointer(run / "checkpoints").latest_step() == 100

    assert evaluate_script.main([str(run), "--episodes", "2"]) == 0
    result = json.loads((run / "eval-100.json").read_text())
    assert result["checkpoint_step"] == 100 and len(result["returns"]) == 2
    assert np.all(np.isfinite(result["returns"]))
    assert result["mean"] == pytest.approx(np.mean(result["returns"]), rel=1e-12)
    # Training's evaluation also played the prior alone, on the seeds `evaluate --no-plan` uses.
    final = [e for e in events if e["kind"] == "eval"][-1]
    assert final["env_step"] == 100 and len(final["prior"]["returns"]) == 2
    assert evaluate_script.main([str(run), "--episodes", "2", "--no-plan"]) == 0
    alone = json.loads((run / "eval-100.json").read_text())
    np.testing.assert_allclose(alone["returns"], final["prior"]["returns"], rtol=1e-5)
    assert alone["returns"] != result["returns"]  # the planner acted otherwise
    _check_termination_report(run, tmp_path / "termination.json")

    assert train_script.main(["debug", f"run_dir={run}"]) == 0  # resumes up to steps=300
    later = _events(run)[len(events) :]
    assert [(e["kind"], e["env_step"]) for e in later if e["kind"] == "resume"] == [("resume", 100)]
    assert [e["env_step"] for e in later if e["kind"] == "eval"] == [150, 300]
    assert all(e["env_step"] > 100 for e in later if e["kind"] in ("train", "episode"))
    assert _updates_at_checkpoints(later) == [(150, 150), (300, 300)]  # one update per step
    assert Checkpointer(run / "checkpoints").latest_step() == 300


def _check_termination_report(run, out):
    """scripts.termination_check on a trained run: its groups cover every stored transition."""
    from scripts import termination_check
    from scripts.bundle import load_run

    assert termination_check.main([str(run), "--json", str(out)]) == 0
    report = json.loads(out.read_text())["model"]
    agent, state, _, _, replay = load_run(run)
    stored = int(replay["size"]) * np.asarray(replay["obs"]).shape[0]
    groups = ("terminal, trained", "terminal, held out", "not terminal")
    assert sum(report[g]["n"] for g in groups) == stored
    assert report["terminal, trained"]["n"] > 0  # the point mass's episodes end at its goal
    assert all(
        0 <= report[g][k] <= 1 for g in groups for k in ("p_term", "p_imagined") if report[g]["n"]
    )
    fits = termination_check.refit(agent, state.params, replay, folds=2, steps=20)
    assert set(fits) == {"(z_t, a_t)", "z_t+1 (encoded)", "next observation"}
    assert all(0 <= f["false_positive_rate"] <= 1 for f in fits.values())


def _one_error_line(capsys):
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["debug", "model.latnet_dim=3"], "model.latnet_dim"),
        (["debug", "env.id=NoSuchEnv-v0"], "NoSuchEnv-v0"),
        (["no_such_overlay"], "no_such_overlay"),
    ],
)
def test_bad_input_is_one_error_line(args, needle, tmp_path, capsys):
    capsys.readouterr()
    assert train_script.main([*args, f"run_dir={tmp_path / 'run'}"]) == 2
    assert needle in _one_error_line(capsys)


@pytest.mark.parametrize("override", ["model.latent_dim=12", "planner.num_elites=999"])
def test_bad_model_values_are_one_error_line(override, tmp_path, capsys):
    capsys.readouterr()
    assert train_script.main(["debug", override, f"run_dir={tmp_path / 'run'}"]) == 2
    _one_error_line(capsys)


def test_evaluate_missing_run_dir(tmp_path, capsys):
    capsys.readouterr()
    assert evaluate_script.main([str(tmp_path / "nope")]) == 2
    assert "config.yaml" in _one_error_line(capsys)


def test_benchmark_learning_records_and_resumes(tmp_path):
    """A benchmark's raw JSON says whether each run reached train.steps; --runs continues one."""
    from scripts import benchmark_learning

    run, out = tmp_path / "run", tmp_path / "bench.json"
    args = ["debug", "--seeds", "3", "--runs", str(run), "--out", str(out)]
    assert benchmark_learning.main([*args, "train.steps=150"]) == 0
    first = json.loads(out.read_text())["runs"][0]
    assert first["seed"] == 3 and first["complete"] and first["env_steps"] == 150
    assert [e["env_step"] for e in first["evals"]] == [150]
    assert benchmark_learning.main(args) == 0  # debug's own train.steps = 300: resumed to it
    again = json.loads(out.read_text())["runs"][0]
    assert again["complete"] and again["env_steps"] == 300
    assert [e["env_step"] for e in again["evals"]] == [150, 300]
    assert all(len(e["returns"]) == 2 for e in again["evals"])
    assert all(len(e["prior"]["returns"]) == 2 for e in again["evals"])
    from scripts.plot_learning import collect

    groups = collect([out])  # the prior-alone curve is plotted beside the planner's
    assert [len(s) for s, _ in groups["debug (prior alone)"]] == [2]
    assert benchmark_learning.main(["debug", "--seeds", "0", "1", "--runs", str(run)]) == 2


def test_timed_separates_the_first_call_and_counts_repeats():
    from scripts.machine import timed

    calls = []
    t = timed(lambda: calls.append(1), 5)
    assert len(calls) == 6 and t["repeats"] == 5  # one compile call apart, then 5 timed ones
    assert t["min_ms"] <= t["median_ms"] <= t["max_ms"] and t["first_call_s"] >= 0


def test_benchmark_speed_writes_every_figure(tmp_path):
    """The speed benchmark on the debug config: planner, prior, update and loop timings, with the
    config it timed and overrides accepted after the options."""
    from scripts import benchmark_speed

    out = tmp_path / "speed.json"
    argv = ["debug", "--repeats", "2", "--loop-steps", "8", "--skip-pets", "--out", str(out)]
    assert benchmark_speed.main([*argv, "planner.num_samples=16", "train.seed_steps=20"]) == 0
    r = json.loads(out.read_text())
    for k in ("act_plan_ms", "act_prior_ms", "update_ms"):
        assert r[k]["median_ms"] > 0 and r[k]["repeats"] >= 2
    assert r["config"]["planner"]["num_samples"] == 16 and "act_pets_equal_work_ms" not in r
    assert r["loop"]["steps_timed"] == 8 and len(r["loop"]["sps_after_seeding"]) >= 1
    assert r["loop"]["s_per_env_step_median"] > 0 and r["machine"]["cores"] >= 1
