"""Per-phase figures of a continual-learning result against from-scratch references.

`python -m scripts.summarize_continual RESULT.json [--scratch "mass 2"=RUN_DIR ...] [--scratch-from OLD_summary.json]`

For each mode and phase: detection delay (alarm step - switch step; an alarm before the first
switch is a false alarm), abstain rate in the first and last 3 episodes, return in the first
and last 3 episodes, the mean return and the reward per env step over all the phase's
episodes (Hopper: an agent that falls sooner can gain per step and lose per episode), and —
where a from-scratch run of that world is given (a `scripts.train` run with the world's
`shift.*` and the same episode length) — the env steps after the switch until the 3-episode
moving average of the return reaches 90% of the scratch run's final return (mean of its last 3
training episodes), and that as a fraction of the scratch run's steps.
Forgetting: the original world's greedy prior-policy return after the schedule vs before.
Writes RESULT with suffix _summary.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from scripts.machine import write_result


def _scratch_reference(run_dir: Path) -> tuple[float, int]:
    eps = [
        json.loads(x)
        for x in (run_dir / "metrics.jsonl").read_text().splitlines()
        if '"episode"' in x
    ]
    eps = [e for e in eps if e["kind"] == "episode"]
    return float(np.mean([e["return"] for e in eps[-3:]])), int(eps[-1]["env_step"])


def _per_step(episodes: list[dict]) -> float | None:
    """Reward per env step over whole episodes (sum of returns / sum of lengths): a phase's
    showing that short failed episodes do not outweigh (a mean of returns counts each alike)."""
    steps = sum(e.get("length", 0) for e in episodes)
    return float(sum(e["return"] for e in episodes) / steps) if steps else None


def summarize(result: dict, scratch: dict[str, Path], known: dict | None = None) -> dict:
    """`known`: a previous summary's "scratch" block, reused for worlds not in `scratch`."""
    refs = {w: (v["return"], v["steps"]) for w, v in (known or {}).items()}
    runs = {w: v["run"] for w, v in (known or {}).items()}
    refs |= {w: _scratch_reference(p) for w, p in scratch.items()}
    runs |= {w: str(p) for w, p in scratch.items()}
    out = {
        "env": result.get("env"),
        "modes": {},
        "scratch": {w: {"return": r, "steps": s, "run": runs[w]} for w, (r, s) in refs.items()},
    }
    for mode, r in result["modes"].items():
        phases = r["phases"]
        eps = [e for e in r["events"] if e["kind"] == "episode"]
        alarms = [e for e in r["events"] if e["kind"] == "alarm"]
        bounds = [p["switch_step"] for p in phases] + [float("inf")]
        rows = []
        for i, p in enumerate(phases):
            lo, hi = bounds[i], bounds[i + 1]
            ph_eps = [e for e in eps if lo < e["step"] <= hi]
            # an alarm's detection step (its first crossing; confirmed at the event's step)
            ph_alarms = [a.get("detected", a["step"]) for a in alarms if lo <= a["step"] < hi]
            row = {"world": p["world"], "switch_step": p["switch_step"],
                   "alarms": ph_alarms, "delay": (ph_alarms[0] - lo) if ph_alarms and i > 0 else None,
                   "false_alarms": len(ph_alarms) if i == 0 else 0,
                   "retracted": p.get("retracted", []),
                   "abstain_first3": float(np.mean([e["abstain_rate"] for e in ph_eps[:3]])) if ph_eps else None,
                   "abstain_last3": float(np.mean([e["abstain_rate"] for e in ph_eps[-3:]])) if ph_eps else None,
                   "return_first3": float(np.mean([e["return"] for e in ph_eps[:3]])) if ph_eps else None,
                   "return_last3": float(np.mean([e["return"] for e in ph_eps[-3:]])) if ph_eps else None,
                   "episodes": len(ph_eps), "return_mean": float(np.mean([e["return"] for e in ph_eps])) if ph_eps else None,
                   "reward_per_step": _per_step(ph_eps)}  # fmt: skip
            if p["world"] in refs and ph_eps:
                ref, ref_steps = refs[p["world"]]
                rets = np.array([e["return"] for e in ph_eps])
                avg = (
                    np.convolve(rets, np.ones(3) / 3, mode="valid") if len(rets) >= 3 else rets[-1:]
                )
                hit = (
                    np.flatnonzero(avg >= 0.9 * ref)
                    if ref > 0
                    else np.flatnonzero(avg >= ref / 0.9)
                )
                steps = (
                    None
                    if not len(hit)
                    else ph_eps[min(int(hit[0]) + (2 if len(rets) >= 3 else 0), len(ph_eps) - 1)][
                        "step"
                    ]
                    - lo
                )
                row |= {"scratch_return": ref, "steps_to_90pct": steps,
                        "fraction_of_scratch_steps": None if steps is None else steps / ref_steps}  # fmt: skip
            rows.append(row)
        before, after = (
            phases[0].get("original_return_before"),
            phases[0].get("original_return_after"),
        )
        out["modes"][mode] = {"phases": rows, "original_before": before, "original_after": after,
                              "forgetting": None if before is None else (before - after) / max(abs(before), 1e-9)}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("result", type=Path)
    p.add_argument(
        "--scratch", nargs="*", default=[], help='WORLD=RUN_DIR, WORLD as in the result ("mass 2")'
    )
    p.add_argument(
        "--scratch-from",
        type=Path,
        help="a previous *_summary.json whose from-scratch references to reuse (the runs may be gone)",
    )
    args = p.parse_args(argv)
    bad = [s for s in args.scratch if "=" not in s]
    if bad:
        p.error(
            f'--scratch {bad[0]!r}: expected WORLD=RUN_DIR, e.g. "mass 2"=runs/scratch/HC-mass2'
        )
    scratch = dict(s.split("=", 1) for s in args.scratch)
    known = None
    if args.scratch_from is not None:
        try:
            known = json.loads(args.scratch_from.read_text())["scratch"]
        except (OSError, ValueError, KeyError) as e:
            p.error(
                f"--scratch-from {args.scratch_from}: not a summary with a 'scratch' block ({e})"
            )
    summary = summarize(
        json.loads(args.result.read_text()), {k: Path(v) for k, v in scratch.items()}, known
    )
    summary["command"] = "python -m scripts.summarize_continual " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    for mode, m in summary["modes"].items():
        print(
            f"[{mode}] original world return before {m['original_before']:.1f} after {m['original_after']:.1f}"
        )
        for r in m["phases"]:
            extra = (
                f" 90%-of-scratch after {r.get('steps_to_90pct')} steps ({r.get('fraction_of_scratch_steps')})"
                if "scratch_return" in r
                else ""
            )
            print(
                f"  {r['world']:>20}: alarms {r['alarms']} delay {r['delay']} abstain {r['abstain_first3']}->{r['abstain_last3']} return {r['return_first3']}->{r['return_last3']} per step {r['reward_per_step']}{extra}"
            )
    write_result(args.result.with_name(args.result.stem + "_summary.json"), summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
