"""Does the planner's choice pay off? Predicted vs realised return of candidate plans, from real
states: `python -m scripts.plan_check RUN_DIR [planner.* overrides] [--step N] [--episodes 2]
[--every 10] [--samples 8] [--tail 400] [--plan] [--json PATH]`.

Along greedy episodes (the policy prior acting, or `--plan` the planner), every `--every`-th
state is a probe. From it three kinds of H-step action sequence are scored by the model and then
executed in the real env from that very MuJoCo state (qpos, qvel restored):
`prior_mean` (the prior's mean actions rolled out in imagination), `prior_sample` (`--samples`
sampled prior rollouts) and `planner` (MPPI under the run's planner config and overrides; its
top-weighted elite). Predicted G = sum_t g^t alive_t r_t + g^H alive_H Q(z_H, pi(z_H)), averaged
over the K dynamics heads, split into its reward and terminal parts. Realised G = the real
rewards of the H open-loop actions, then the policy prior's greedy actions for `--tail` steps
(or to termination): the return the terminal Q stands for. `q_real` = the critic at the real
state reached after H steps (so terminal error = dynamics drift + value error, told apart).

Prints per kind: mean predicted / realised G and their gap (reward part, terminal part), and how
often the planner's plan is predicted better than the prior's mean yet realised worse.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shlex
import sys
from pathlib import Path

import numpy as np


def make_scorer(model, planner_cfg, discount: float):
    """score(params, z (L,), acts (C, H, A), key) -> dict of (K, C) arrays per dynamics head:
    'reward' sum_t g^t alive_t r_t and 'terminal' g^H alive_H Q(z_H, mean pi(z_H)), the planner's
    own value (agents.planner.make_value_fn) with each head in turn and no uncertainty term."""
    import jax
    import jax.numpy as jnp

    from agents.planner import make_value_fn

    cfg = dataclasses.replace(planner_cfg, ensemble="random", uncertainty_coef=0.0)
    value = make_value_fn(model, cfg, discount, parts=True, mean_terminal=True)

    @jax.jit
    def score(params, z, acts, key):
        zs = jnp.broadcast_to(z, (acts.shape[0], z.shape[-1]))
        one = lambda h: value(params, zs, acts, key=key, head=h)  # noqa: E731
        reward, terminal = jax.vmap(one)(jnp.arange(model.num_heads))
        return {"reward": reward, "terminal": terminal}

    return score


def make_candidates(model, planner_cfg, discount: float, samples: int):
    """cands(params, z (L,), key) -> (C, H, A): prior mean rollout, `samples` prior rollouts,
    the planner's top elite (in that order)."""
    import jax
    import jax.numpy as jnp

    from agents.planner import make_prior_rollout, make_value_fn, mppi

    H, A = planner_cfg.horizon, model.act_dim
    value_fn = make_value_fn(model, planner_cfg, discount)
    rollout = make_prior_rollout(model, planner_cfg)
    P = planner_cfg.num_pi_trajs

    @jax.jit
    def cands(params, z, key):
        k_mean, k_s, k_pi, k_it = jax.random.split(key, 4)
        mean_a = rollout(params, z, k_mean, 1, sample=False)
        sampled = rollout(params, z, k_s, samples)
        fixed = rollout(params, z, k_pi, P) if P else jnp.zeros((0, H, A))
        init = mean_a[0] if planner_cfg.center == "prior" else jnp.zeros((H, A))
        zN = jnp.broadcast_to(z, (planner_cfg.num_samples, z.shape[-1]))
        score_fn = lambda acts, k: value_fn(params, zN, acts, key=k)  # noqa: E731
        _, _, elite_a, weights, _ = mppi(score_fn, init, fixed, planner_cfg, key=k_it)
        return jnp.concatenate([mean_a, sampled, elite_a[jnp.argmax(weights)][None]])

    return cands


def realised(env, qpos, qvel, acts, prior_act, discount: float, tail: int) -> dict:
    """Execute acts (H, A) open loop from (qpos, qvel), then prior_act(obs) for `tail` steps.
    Returns {'G': discounted return, 'r_H': discounted reward of the H steps, 'obs_H' or None
    where the episode ended within H steps}."""
    env.reset(seed=0)  # fresh time limit and flags; the state is then overwritten
    env.unwrapped.set_state(qpos, qvel)
    G, disc, obs_H, ended = 0.0, 1.0, None, False
    for a in acts:
        obs, r, terminated, _, _ = env.step(np.asarray(a))
        G, disc = G + disc * r, disc * discount
        if terminated:
            ended = True
            break
    r_H = G
    if not ended:
        obs_H = obs
        for _ in range(tail):
            obs, r, terminated, _, _ = env.step(prior_act(obs))
            G, disc = G + disc * r, disc * discount
            if terminated:
                break
    return {"G": G, "r_H": r_H, "obs_H": obs_H}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*", help="planner.* overrides")
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tail", type=int, default=400)
    parser.add_argument("--plan", action="store_true", help="the planner acts (default: prior)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_intermixed_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")

    import jax

    from envs import make_single_env
    from scripts.bundle import load_bundle
    from scripts.machine import write_result
    from scripts.rollout import greedy_episode
    from worldmodel.errors import UserError

    try:
        if min(args.episodes, args.every, args.samples) < 1 or args.tail < 0:
            raise UserError("--episodes, --every and --samples must be >= 1, --tail >= 0")
        bundle = load_bundle(args.run_dir, step=args.step, overrides=args.overrides)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cfg, model, params = bundle.cfg, bundle.agent.model, bundle.state.params
    discount = float(cfg.loss.discount)
    score = make_scorer(model, bundle.agent.planner_cfg, discount)
    cands = make_candidates(model, bundle.agent.planner_cfg, discount, args.samples)
    pi_mean = jax.jit(lambda o: model.pi(params, model.encode(params, o), key=jax.random.key(0))[2])
    prior_act = lambda o: np.asarray(pi_mean(np.asarray(o, np.float32)))  # noqa: E731
    q_at = jax.jit(functools.partial(_q_at, model, cfg.planner.value))
    repeat, limit = cfg.env.action_repeat, cfg.env.max_episode_steps
    env = make_single_env(cfg.env.id, action_repeat=repeat, max_episode_steps=limit)
    probe = make_single_env(cfg.env.id, action_repeat=repeat)  # branches: only the tail limits
    if not hasattr(env.unwrapped, "set_state"):
        env.close(), probe.close()
        print(
            f"error: {cfg.env.id} is not a MuJoCo env: plan_check restores qpos/qvel",
            file=sys.stderr,
        )
        return 2
    kinds = ["prior_mean"] + ["prior_sample"] * args.samples + ["planner"]
    rows = []
    seed0 = cfg.seed + cfg.eval.seed_offset
    try:
        for i in range(args.episodes):
            ep = greedy_episode(bundle.agent, bundle.state, env, seed=seed0 + i, plan=args.plan)
            for t in range(0, ep["length"], args.every):
                z = model.encode(params, ep["obs"][t][None])[0]
                key = jax.random.key(1_000_003 * i + t)
                acts = cands(params, z, key)
                pred = jax.tree.map(np.asarray, score(params, z, acts, key))
                for c, kind in enumerate(kinds):
                    real = realised(probe, ep["qpos"][t], ep["qvel"][t], np.asarray(acts[c]),
                                    prior_act, discount, args.tail)  # fmt: skip
                    obs_H = real.pop("obs_H")
                    q_real = None if obs_H is None else float(q_at(params, obs_H))
                    rows.append({
                        "episode": i, "t": t, "kind": kind,
                        "pred_reward": float(pred["reward"][:, c].mean()),
                        "pred_terminal": float(pred["terminal"][:, c].mean()),
                        "pred_head_std": float((pred["reward"] + pred["terminal"])[:, c].std()),
                        "real_G": real["G"], "real_reward": real["r_H"], "q_real": q_real,
                    })  # fmt: skip
            print(f"episode {i}: {ep['length']} steps, return {ep['return']:.1f}", flush=True)
    finally:
        env.close(), probe.close()
    summary = summarise(rows, discount**cfg.planner.horizon)
    for kind, s in summary["kinds"].items():
        print(
            f"{kind:13s} predicted {s['pred']:8.1f}  realised {s['real']:8.1f}  gap {s['gap']:+7.1f}"
            f"  (reward part {s['gap_reward']:+6.1f}, terminal {s['gap_terminal']:+6.1f};"
            f" Q at real state {s['q_real_minus_pred']:+6.1f} vs imagined)"
        )
    print(
        f"planner vs prior mean: predicted better at {summary['planner_pred_better']:.2f} of "
        f"probes, realised better at {summary['planner_real_better']:.2f}, predicted better "
        f"yet realised worse at {summary['planner_fooled']:.2f} ({summary['probes']} probes)"
    )
    if args.json is not None:
        argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
        meta = {"command": "python -m scripts.plan_check " + shlex.join(argv),
                "run_dir": str(args.run_dir), "step": bundle.step, "overrides": args.overrides,
                "plan": args.plan, "tail": args.tail, "planner": cfg.section("planner")}  # fmt: skip
        write_result(args.json, meta | {"summary": summary, "rows": rows})
    return 0


def _q_at(model, value, params, obs):
    """The critic's value of the prior's mean action at the real observation obs (D,)."""
    import jax
    import jax.numpy as jnp

    z = model.encode(params, jnp.asarray(obs, jnp.float32)[None])
    _, _, a = model.pi(params, z, key=jax.random.key(0))
    q = model.q_values(params["q"], z, a)
    return (q.min(axis=0) if value == "min" else q.mean(axis=0))[0]


def summarise(rows: list[dict], disc_H: float) -> dict:
    """Per kind means of predicted/realised G and their parts; planner vs prior-mean pairing."""
    kinds = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        rs = [r for r in rows if r["kind"] == kind]
        pred = np.array([r["pred_reward"] + r["pred_terminal"] for r in rs])
        real = np.array([r["real_G"] for r in rs])
        gap_r = np.array([r["pred_reward"] - r["real_reward"] for r in rs])
        with_q = [r for r in rs if r["q_real"] is not None]
        q_gap = [disc_H * r["q_real"] - r["pred_terminal"] for r in with_q]
        kinds[kind] = {
            "n": len(rs), "pred": float(pred.mean()), "real": float(real.mean()),
            "gap": float((pred - real).mean()), "gap_reward": float(gap_r.mean()),
            "gap_terminal": float((pred - real - gap_r).mean()),
            "q_real_minus_pred": float(np.mean(q_gap)) if q_gap else float("nan"),
        }  # fmt: skip
    by_probe = {}
    for r in rows:
        if r["kind"] in ("planner", "prior_mean"):
            by_probe.setdefault((r["episode"], r["t"]), {})[r["kind"]] = r
    pairs = [p for p in by_probe.values() if len(p) == 2]
    pb = np.array([_pred(p["planner"]) > _pred(p["prior_mean"]) for p in pairs])
    rb = np.array([p["planner"]["real_G"] > p["prior_mean"]["real_G"] for p in pairs])
    return {
        "kinds": kinds, "probes": len(pairs),
        "planner_pred_better": float(pb.mean()), "planner_real_better": float(rb.mean()),
        "planner_fooled": float((pb & ~rb).mean()),
    }  # fmt: skip


def _pred(r: dict) -> float:
    return r["pred_reward"] + r["pred_terminal"]


if __name__ == "__main__":
    sys.exit(main())
