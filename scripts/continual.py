"""Continual-learning benchmark: `python -m scripts.continual RUN_DIR SCHEDULE.yaml [--modes ...] [key=value ...]`.

Starts from RUN_DIR's newest checkpoint (model, replay with its held-out episodes, calibration)
and runs the schedule of worlds (SCHEDULE.yaml: `phases: [{steps: N, shift: none | {kind,
severity}}]`, see configs/continual/) once per mode — adaptive, naive, frozen — each from the
same checkpoint. Dotted overrides change the run's config (e.g. continual.new_share=0.3
env.max_episode_steps=250). Writes scripts/results/continual_<env>_s<seed>.json (every episode,
alarm and calibration event per mode) and prints per phase: detection delay, abstain rate,
return. `--merge` keeps the other modes of an existing result of the same run, schedule and
overrides (modes run as separate processes, e.g. one per core, end in one file).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from scripts.machine import write_result

RESULTS = Path(__file__).resolve().parent / "results"


def _load(run_dir: Path, overrides: list[str]):
    """(agent, state, cfg, replay, calibrator) of the newest checkpoint, config overridden."""
    from agents.agent import make_agent
    from agents.calibration import Calibrator
    from agents.replay import Replay
    from envs import env_spec
    from scripts.bundle import load_run
    from worldmodel.config import load_config
    from worldmodel.uncertainty import Calibration

    agent, state, cfg, meta, replay_arrays = load_run(run_dir)
    cfg = load_config([str(Path(run_dir) / "config.yaml"), *overrides])  # the run's, overridden
    spec = env_spec(cfg.env.id)
    sections = {k: cfg.section(k) for k in ("model", "loss", "optim", "planner")}
    # the run's own gate (score, window), overridable on the command line
    abstain = {**cfg.section("abstain"), "enabled": True}
    agent = make_agent(spec["obs_dim"], spec["act_dim"], **sections, abstain=abstain)
    replay = Replay(cfg.train.replay_capacity, spec["obs_dim"], spec["act_dim"], cfg.env.num_envs)
    replay.load_state_dict(replay_arrays)
    calibrator = Calibrator(agent, agent.abstain_cfg, seed=cfg.seed, num_envs=1)
    calibrator.calib = Calibration.from_json(meta["calibration"])
    _calibrate_before_deployment(agent, state, cfg, replay, calibrator)
    return agent, state, cfg, replay, calibrator


def _calibrate_before_deployment(agent, state, cfg, replay, calibrator, batch: int = 10):
    """Calibrate the gate as configured now (the checkpoint's calibration may be for another
    score or window). The plain scores use the checkpoint's held-out episodes when it has some.
    The bias kinds, and a checkpoint with none, calibrate on fresh greedy episodes in the
    original world (seeds never used in training; `batch` at a time until the bias test has
    2 * BIAS_MIN_PER_DIM transitions per residual dim and the change detector
    `continual.deploy_episodes` reference episodes (at least `change.min_episodes`, which alone
    sets how many a new world needs before the detector re-arms), at most 10 batches), stored in replay as
    held out (never trained on), as a deployment would start: training-time held-out episodes
    were acted by earlier policies, and the bias test's reference must be the deployed one's
    (measured on a 6k Hopper agent: threshold 8.2 on the mixed stream)."""
    from agents.change import ChangeConfig
    from agents.continual import ContinualConfig, reference_episodes
    from envs import Step
    from scripts.benchmark_ood import collect
    from worldmodel.uncertainty import BIAS_KINDS

    rng = np.random.default_rng(cfg.seed)
    if replay.held > 0 and agent.abstain_cfg.score not in BIAS_KINDS:
        result = calibrator.recalibrate(state.params, replay, rng)
        print(f"calibrated before deployment on the checkpoint's held-out episodes: {result}")
        return
    need = calibrator.min_holdout()
    need_eps = max(
        ContinualConfig(**cfg.section("continual")).deploy_episodes,
        ChangeConfig(**cfg.section("change")).min_episodes,
    )
    since, held0, added = replay.added, replay.held, 0
    while (
        replay.held - held0 < need or reference_episodes(added, agent.abstain_cfg.score) < need_eps
    ) and added < 10 * batch:
        data = collect(agent, state, cfg.env.id, episodes=batch, seed=cfg.seed + 50_000 + added,
                       max_steps=cfg.env.max_episode_steps, plan=cfg.train.plan)  # fmt: skip
        last = np.r_[data["first"][1:], True]  # an episode's last transition
        term = np.asarray(data["terminated"], bool)
        zero = np.zeros(1, np.float32)
        for j in range(len(data["t"])):
            sl = slice(j, j + 1)
            replay.add(
                Step(data["obs"][sl], data["action"][sl], zero, data["next_obs"][sl],
                     term[sl], last[sl] & ~term[sl], last[sl], []),
                holdout=np.ones(1, bool),
            )  # fmt: skip
        added += batch
    result = calibrator.recalibrate(state.params, replay, rng, since=since)
    print(
        f"calibrated before deployment on {added} greedy episodes ({replay.held - held0} transitions): {result}"
    )


def _phase_summary(events: list, phases: list, total: int) -> list[dict]:
    bounds = [p["switch_step"] for p in phases] + [total]
    out = []
    for i, p in enumerate(phases):
        eps = [d for k, s, d in events if k == "episode" and bounds[i] < s <= bounds[i + 1]]
        rets = [d["return"] for d in eps]
        out.append({**p, "episodes": len(eps),
                    "return_first3": float(np.mean(rets[:3])) if rets else None,
                    "return_last3": float(np.mean(rets[-3:])) if rets else None,
                    "abstain_rate_first3": float(np.mean([d["abstain_rate"] for d in eps[:3]])) if eps else None,
                    "abstain_rate_last3": float(np.mean([d["abstain_rate"] for d in eps[-3:]])) if eps else None})  # fmt: skip
    return out


def _merged(path: Path, result: dict) -> dict:
    """`result` with the modes of the result already at `path` that it does not have, read now
    (a process running other modes may have written since this one started); `command` becomes
    the list of the commands that wrote it. A result of another run, schedule or overrides is
    an error, never overwritten."""
    import json

    from worldmodel.errors import UserError

    if not path.is_file():
        return result
    old = json.loads(path.read_text())
    same = ("run", "schedule", "overrides")
    if any(old.get(k) != result[k] for k in same):
        raise UserError(
            f"--merge: {path} holds another run, schedule or overrides "
            f"({old.get('command')!r}); use another --out"
        )
    commands = [old["command"]] if isinstance(old["command"], str) else old["command"]
    return {**result, "modes": {**old["modes"], **result["modes"]},
            "command": list(dict.fromkeys([*commands, result["command"]]))}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("schedule", type=Path)
    p.add_argument("overrides", nargs="*", help="dotted config overrides")
    p.add_argument("--modes", nargs="+", default=["adaptive", "naive", "frozen"])
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--merge", action="store_true",
                   help="keep the other modes of an existing result of the same run, schedule and overrides")  # fmt: skip
    args = p.parse_intermixed_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    import yaml

    from agents.continual import parse_schedule, run_continual
    from worldmodel.errors import UserError

    try:
        if not args.schedule.is_file():
            raise UserError(f"schedule file {args.schedule} not found (see configs/continual/)")
        raw = yaml.safe_load(args.schedule.read_text()) or {}
        schedule = parse_schedule(raw.get("phases") if isinstance(raw, dict) else None)
        total = sum(s for s, _ in schedule)
        result = {
            "run": str(args.run),
            "schedule": raw,
            "overrides": list(args.overrides),
            "modes": {},
            "command": "python -m scripts.continual "
            + " ".join(sys.argv[1:] if argv is None else argv),
        }
        for mode in args.modes:
            agent, state, cfg, replay, calibrator = _load(args.run, args.overrides)
            events: list = []
            tic = time.perf_counter()
            out = run_continual(agent, state, replay, calibrator, cfg, schedule, mode=mode,
                                emit=lambda k, s, d, ev=events: ev.append((k, s, d)))  # fmt: skip
            phases = _phase_summary(events, out["phases"], total)
            result["env"], result["seed"] = cfg.env.id, cfg.seed
            result["modes"][mode] = {"phases": phases, "events": [{"kind": k, "step": s, **d} for k, s, d in events],
                                     "seconds": time.perf_counter() - tic, "updates": out["updates"]}  # fmt: skip
            if "worlds" in out:  # library: the stored worlds, by the schedule world each began in
                result["modes"][mode]["worlds"] = out["worlds"]
            print(f"[{mode}] {time.perf_counter() - tic:.0f} s")
            for ph in phases:
                print(f"  {ph['world']:>45} switch@{ph['switch_step']:>6} alarms@{ph['alarms']} retracted@{ph.get('retracted')} "
                      f"return {ph['return_first3']} -> {ph['return_last3']}  abstain {ph['abstain_rate_first3']} -> {ph['abstain_rate_last3']}")  # fmt: skip
            if "original_return_before" in out["phases"][0]:
                ph0 = out["phases"][0]
                print(
                    f"  original world (prior policy): before {ph0['original_return_before']:.1f} after {ph0['original_return_after']:.1f}"
                )
            env_name = cfg.env.id.split("-")[0].replace("/", "_")
            name = args.out / f"continual_{env_name}_s{cfg.seed}.json"
            write_result(name, _merged(name, result) if args.merge else result, default=str)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
