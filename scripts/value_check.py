"""Is the critic right? Compare Q(s_t, a_t) with the discounted return that followed, along greedy
episodes: `python -m scripts.value_check RUN_DIR [--episodes 3] [--step N] [--no-plan] [--json PATH]`.

The diagnosis that found why InvertedPendulum learned slowly (BENCHMARKS.md): the critic matched
the Monte-Carlo return of the policy it had (so it was not wrong), but the policy leaned the pole
and drove the cart into the rail end; the values rose too slowly for the planner to prefer
anything else. Where an episode is cut by the time limit the Monte-Carlo return misses the tail
(it is a lower bound), so compare the early steps of truncated episodes with care.
Prints, per episode: length, how it ended, Q vs return at the start/middle/end, their mean gap and
correlation; `--json` writes every step's (obs, action, q, return) too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def returns_to_go(rewards: np.ndarray, discount: float) -> np.ndarray:
    """G_t = sum_{k>=t} discount^(k-t) r_k for rewards (T,) -> (T,)."""
    out = np.zeros(len(rewards))
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = float(rewards[t]) + discount * acc
        out[t] = acc
    return out


def critic_values(model, params, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Mean over critics of Q(encode(obs_t), a_t): obs (T, D), actions (T, A) -> (T,)."""
    z = model.encode(params, np.asarray(obs, np.float32))
    return np.asarray(model.q_values(params["q"], z, np.asarray(actions, np.float32)).mean(axis=0))


def compare(q: np.ndarray, g: np.ndarray) -> dict:
    """Summary of critic values q (T,) against returns g (T,)."""
    T = len(q)
    picks = {"start": 0, "middle": T // 2, "end": T - 1}
    corr = float(np.corrcoef(q, g)[0, 1]) if T > 2 and q.std() > 0 and g.std() > 0 else None
    return {
        "length": T,
        **{f"q_{k}": float(q[i]) for k, i in picks.items()},
        **{f"return_{k}": float(g[i]) for k, i in picks.items()},
        "mean_gap": float(np.mean(q - g)),
        "correlation": corr,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "overrides", nargs="*", help="planner.*/abstain.* overrides, e.g. planner.value=min"
    )
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default newest)")
    parser.add_argument("--no-plan", action="store_true", help="act with the policy prior only")
    parser.add_argument("--json", type=Path, default=None, help="write per-step values here")
    args = parser.parse_intermixed_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")

    from envs import make_single_env
    from scripts.bundle import load_bundle
    from scripts.machine import write_result
    from scripts.rollout import greedy_episode
    from worldmodel.errors import UserError

    try:
        if args.episodes < 1:
            raise UserError(f"--episodes must be >= 1, got {args.episodes}")
        bundle = load_bundle(args.run_dir, step=args.step, overrides=args.overrides)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cfg = bundle.cfg
    discount = float(cfg.loss.discount)
    env = make_single_env(
        cfg.env.id, action_repeat=cfg.env.action_repeat, max_episode_steps=cfg.env.max_episode_steps
    )
    seed0 = cfg.seed + cfg.eval.seed_offset
    records = []
    try:
        for i in range(args.episodes):
            ep = greedy_episode(
                bundle.agent, bundle.state, env, seed=seed0 + i, plan=not args.no_plan
            )
            q = critic_values(bundle.agent.model, bundle.state.params, ep["obs"][:-1], ep["action"])
            g = returns_to_go(np.asarray(ep["reward"]), discount)
            summary = compare(q, g)
            raw = ep["length"] * cfg.env.action_repeat
            ended = (
                "cut by the time limit" if raw >= (_limit(env) or np.inf) else "ended (terminal)"
            )
            print(
                f"episode {i} (seed {seed0 + i}): {summary['length']} steps, {ended}; "
                f"Q vs return  start {summary['q_start']:.1f}/{summary['return_start']:.1f}  "
                f"middle {summary['q_middle']:.1f}/{summary['return_middle']:.1f}  "
                f"end {summary['q_end']:.1f}/{summary['return_end']:.1f}  "
                f"mean gap {summary['mean_gap']:+.2f}  correlation {_fmt(summary['correlation'])}"
            )
            records.append(
                summary | {"seed": seed0 + i, "q": q.tolist(), "return": g.tolist(),
                           "obs": ep["obs"].tolist(), "action": ep["action"].tolist()}
            )  # fmt: skip
    finally:
        env.close()
    if args.json is not None:
        meta = {"run_dir": str(args.run_dir), "step": bundle.step, "discount": discount}
        write_result(args.json, meta | {"plan": not args.no_plan, "episodes": records})
    return 0


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _limit(env) -> int | None:
    spec = getattr(env, "spec", None)
    return None if spec is None else spec.max_episode_steps


if __name__ == "__main__":
    sys.exit(main())
