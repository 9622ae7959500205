"""Change-detector benchmark on real score streams: false alarms in an unchanged world, delays.

`python -m scripts.benchmark_change RUN_DIR [key=value ...] [--test-episodes 40] [--out F]`
`python -m scripts.benchmark_change --from-json F [--out F2]`: the same analysis on the score
streams F stored (no agent, no env; e.g. a new detector variant on the same data).

Deploys RUN_DIR's agent as `scripts.continual` does (gate calibrated on fresh greedy episodes;
the detector's reference is their conformal part, `continual.deploy_episodes` episodes or more), then
collects *further* greedy episodes the detector never saw: in the original world (false
alarms) and in each shifted world of the continual schedule (delays). The model is frozen, so
every alarm in the original world is false. Two thresholds over the same scores:
  iid      h for i.i.d. p-values (the first detector),
  episodes h on resampled reference episodes (`continual_v4`),
  capped   the same, each episode's rise capped (`change.episode_cap`),
  edged    capped, and an episode's first and (before a fall) last `change.edge` untested,
  default  edged, and each crossing confirmed by a second (`change.confirm`; the default since
           2026-12-02, before it "default" meant edged).
False alarms: one stream of every original-world test episode in collection order, the detector
restarted after each alarm; reported per 1000 decisions beside the configured probability of
an alarm within 1000 decisions, for several configured rates. Delays: `--delay-streams` streams
of 3 original-world episodes followed by shifted ones; the delay counts decisions from the
switch to the alarm (an alarm before the switch is counted as false, the stream as missed).
Reference size (`--ref-sizes`): the test episodes are exchangeable with the reference ones (both
fresh, greedy, scored out of sample), so `--splits` random subsets of each size serve as the
reference and the rest as the stream; this is how `change.min_episodes` was chosen.
Writes scripts/results/change_<env>_s<seed>.json with every score stream.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SHIFTS = {"mass 2": ("mass", 2.0), "actuator_gain 0.5": ("actuator_gain", 0.5)}
VARIANTS = ("iid", "episodes", "capped", "edged", "default")


def _episodes(agent, state, cfg, calib, *, n, seed, shift=None) -> list[tuple]:
    """[(the gate's decision scores (T_i,), whether it terminated)] of n fresh greedy episodes."""
    from agents.abstain import decision_scores
    from agents.calibration import score_transitions
    from agents.change import split_episodes
    from scripts.benchmark_ood import collect

    data = collect(agent, state, cfg.env.id, episodes=n, seed=seed,
                   max_steps=cfg.env.max_episode_steps, plan=cfg.train.plan, shift=shift)  # fmt: skip
    s = score_transitions(agent, state.params, calib, data["obs"], data["action"], data["next_obs"])
    ac = agent.abstain_cfg
    d = decision_scores(s, data["first"], kind=ac.score, window=ac.window, calib=calib)
    return list(zip(*split_episodes(d, data["first"], data["terminated"]), strict=True))


def _detector(variant: str, rate: float, reference: list, seed: int):
    from agents.change import ChangeConfig, ChangeDetector

    default = ChangeConfig()
    cap = default.episode_cap if variant in ("capped", "edged", "default") else 1.0
    edge = default.edge if variant in ("edged", "default") else 0
    confirm = default.confirm if variant == "default" else 0
    cfg = ChangeConfig(false_alarm=rate, horizon=1000, min_episodes=0, episode_cap=cap, edge=edge,
                       confirm=confirm)  # fmt: skip
    scores, term = [e for e, _ in reference], [t for _, t in reference]
    episodes = None if variant == "iid" else scores
    return ChangeDetector(cfg, np.concatenate(scores), episodes=episodes, terminated=term,
                          seed=seed)  # fmt: skip


def _run(det, stream: list, *, stop: bool = False, retracted: list | None = None,
         confirmed: list | None = None) -> list[int]:  # fmt: skip
    """Alarm (detection) indices over [(scores, terminated)] episodes, restarting the statistic
    after each alarm (`stop`: return at the first); where each was confirmed goes to
    `confirmed`, unconfirmed suspicions to `retracted`."""
    alarms, t, t0, seen = [], 0, 0, 0  # t0: the stream index of the detector's decision 0
    retracted = [] if retracted is None else retracted
    for scores, term in stream:
        for i, s in enumerate(scores):
            last = i == len(scores) - 1
            hit = det.update(float(s), first=i == 0, last=last, terminated=term and last)
            retracted += [t0 + r for r in det.retracted[seen:]]
            seen = len(det.retracted)
            if hit:
                alarms.append(t0 + det.alarm_step)
                if confirmed is not None:
                    confirmed.append(t)
                if stop:
                    return alarms
                det.restart()
                t0, seen = t + 1, 0
            t += 1
    return alarms


def _delays(det, before: list, shifted: list, streams: int) -> dict:
    """Detection delays of `streams` streams: 3 episodes of `before`, then the shifted ones."""
    delays, acted, early = [], [], 0
    for i in range(streams):
        pre = [before[(3 * i + j) % len(before)] for j in range(3)]
        post = [shifted[(i + j) % len(shifted)] for j in range(len(shifted))]
        switch = sum(len(e) for e, _ in pre)
        det.restart()
        confirmed: list = []
        alarms = _run(det, pre + post, stop=True, confirmed=confirmed)
        if alarms and alarms[0] < switch:
            early += 1
        else:
            delays.append(alarms[0] - switch if alarms else None)
            acted.append(confirmed[0] - switch if alarms else None)
    found = [d for d in delays if d is not None]
    return {"delays": delays, "confirmed_after": acted, "false_before_switch": early,
            "detected": len(found), "streams": streams,
            "median": float(np.median(found)) if found else None,
            "median_confirmed": float(np.median([a for a in acted if a is not None])) if found else None}  # fmt: skip


def _collect(args) -> tuple[dict, list, list, dict]:
    """Deploy the run's agent: (result header, reference, test, shifted) episodes."""
    from agents.continual import detector_reference
    from envs.shifts import parse_shift
    from scripts.continual import _load

    agent, state, cfg, replay, calibrator = _load(args.run, args.overrides)
    calib = calibrator.calib
    _, ref_scores, ref_term = detector_reference(agent, state.params, calib, replay,
                                                 size=cfg.abstain.calib_size, since=calibrator.since)  # fmt: skip
    ref = list(zip(ref_scores, ref_term, strict=True))
    test = _episodes(agent, state, cfg, calib, n=args.test_episodes, seed=cfg.seed + 90_000)
    shifted = {
        name: _episodes(
            agent,
            state,
            cfg,
            calib,
            n=args.shift_episodes,
            seed=cfg.seed + 95_000 + j,
            shift=parse_shift({"kind": k, "severity": sev}),
        )  # fmt: skip
        for j, (name, (k, sev)) in enumerate(SHIFTS.items())
    }
    thr = float(calib.threshold)
    head = {"run": str(args.run), "env": cfg.env.id, "seed": cfg.seed,
            "gate": {"score": agent.abstain_cfg.score, "window": agent.abstain_cfg.window,
                     "threshold": thr, "n": int(calib.n)}}  # fmt: skip
    return head, ref, test, shifted


def _stored(path: Path) -> tuple[dict, list, list, dict]:
    """The same from a result JSON's stored score streams."""
    import json

    from worldmodel.errors import UserError

    if not path.is_file():
        raise UserError(f"--from-json: {path} not found (a scripts.benchmark_change result)")
    r = json.loads(path.read_text())
    if "scores" not in r:
        raise UserError(f"--from-json: {path} has no stored score streams ('scores')")

    def eps(v):
        return [(np.asarray(e, np.float64), bool(t)) for e, t in v]

    sc = r["scores"]
    head = {k: r[k] for k in ("run", "env", "seed", "gate")} | {"from_json": str(path)}
    return (
        head,
        eps(sc["reference"]),
        eps(sc["test"]),
        {k: eps(v) for k, v in sc["shifted"].items()},
    )


def analyse(head: dict, ref: list, test: list, shifted: dict, args) -> dict:
    """False alarms, delays and the reference-size study over the episodes."""
    seed = head["seed"]
    n_test = sum(len(e) for e, _ in test)
    thr = head["gate"]["threshold"]
    result = head | {
        "reference": {"episodes": len(ref), "decisions": int(sum(len(e) for e, _ in ref)),
                      "terminated": int(sum(t for _, t in ref))},
        "test": {"episodes": len(test), "decisions": n_test,
                 "terminated": int(sum(t for _, t in test)),
                 "abstain_rate": float(np.mean(np.concatenate([e for e, _ in test]) > thr))},
        "false_alarms": {}, "delays": {}, "reference_size": {},
    }  # fmt: skip
    print(f"reference: {len(ref)} episodes; test: {len(test)} episodes, {n_test} decisions, "
          f"abstain rate {result['test']['abstain_rate']:.3f}")  # fmt: skip
    for variant in VARIANTS:
        for rate in args.rates:
            det = _detector(variant, rate, ref, seed)
            retracted: list = []
            alarms = _run(det, test, retracted=retracted)
            key = f"{variant} {rate:g}"
            result["false_alarms"][key] = {"h": det.h, "alarms": alarms, "retracted": retracted,
                                           "per_1000": 1000 * len(alarms) / n_test}  # fmt: skip
            print(f"{key:>15}: h {det.h:7.2f}, false alarms {len(alarms)} in {n_test} decisions "
                  f"({1000 * len(alarms) / n_test:.3f} per 1000; configured P(alarm in 1000) {rate}); "
                  f"retracted {len(retracted)}")  # fmt: skip
        rate = min(args.rates)
        det = _detector(variant, rate, ref, seed)
        for name, eps in shifted.items():
            r = result["delays"][f"{variant} {rate:g} {name}"] = _delays(
                det, test, eps, args.delay_streams
            )
            print(f"{variant:>9} {rate:g} {name:>18}: detected {r['detected']}/{r['streams']}, "
                  f"median delay {r['median']} (confirmed after {r['median_confirmed']}), "
                  f"false before the switch {r['false_before_switch']}")  # fmt: skip
    rng = np.random.default_rng(seed)
    rate = min(args.rates)
    for size in args.ref_sizes:
        if size >= len(test) - 3:
            continue
        alarms = decisions = 0
        found = {k: [] for k in shifted}
        for split in range(args.splits):
            perm = rng.permutation(len(test))
            sub, rest = [test[i] for i in perm[:size]], [test[i] for i in perm[size:]]
            det = _detector(args.ref_variant, rate, sub, split)
            alarms += len(_run(det, rest))
            decisions += sum(len(e) for e, _ in rest)
            for name, eps in shifted.items():
                found[name].append(_delays(det, rest, eps, 1)["delays"])
        out = {"variant": args.ref_variant, "false_alarms": alarms, "decisions": decisions,
               "per_1000": 1000 * alarms / decisions,
               "delays": {k: [d for ds in v for d in ds] for k, v in found.items()}}  # fmt: skip
        result["reference_size"][str(size)] = out
        med = {k: (np.median([d for d in v if d is not None]) if any(d is not None for d in v) else None)
               for k, v in out["delays"].items()}  # fmt: skip
        print(f"reference of {size:3d} test episodes ({args.splits} splits): {alarms} false alarms "
              f"in {decisions} decisions ({out['per_1000']:.3f} per 1000), median delays {med}")  # fmt: skip
    result["scores"] = {
        "reference": [[np.asarray(e).tolist(), t] for e, t in ref],
        "test": [[np.asarray(e).tolist(), t] for e, t in test],
        "shifted": {k: [[np.asarray(e).tolist(), t] for e, t in v] for k, v in shifted.items()},
    }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, nargs="?")
    p.add_argument("overrides", nargs="*", help="dotted config overrides")
    p.add_argument("--from-json", type=Path, default=None,
                   help="analyse the score streams a previous result stored (no RUN_DIR)")  # fmt: skip
    p.add_argument("--test-episodes", type=int, default=40)
    p.add_argument("--shift-episodes", type=int, default=10)
    p.add_argument("--delay-streams", type=int, default=10)
    p.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.05, 0.2])
    p.add_argument("--ref-sizes", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--splits", type=int, default=8)
    p.add_argument("--ref-variant", choices=VARIANTS[1:], default="default")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_intermixed_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from scripts.machine import machine_info, write_result
    from worldmodel.errors import UserError

    try:
        if (args.run is None) == (args.from_json is None):
            raise UserError("give either RUN_DIR or --from-json RESULT.json")
        data = _stored(args.from_json) if args.from_json else _collect(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = analyse(*data, args)
    result["machine"] = machine_info()
    result["command"] = "python -m scripts.benchmark_change " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    env_name = result["env"].split("-")[0]
    out = args.out or RESULTS / f"change_{env_name}_s{result['seed']}.json"
    write_result(out, result, default=str)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
