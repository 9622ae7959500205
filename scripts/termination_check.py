"""Does the model know where episodes end? The termination head and critics on a run's own replay:
`python -m scripts.termination_check RUN_DIR [--step N] [--refit] [--json PATH]`.

Splits the checkpoint's stored transitions into terminal ones the model trained on, terminal ones
held out for calibration (never trained on: abstain.holdout) and the rest, and prints for each
the mean predicted P(terminated) of the step (on the encoded next latent, and on the dynamics
heads' imagined ones, which the planner sees) and the mean critic value
Q(s_t, a_t), then the same for the k = 1..5 steps before a terminal transition. A head that is
right on trained terminals and wrong on held-out ones has memorised them: that is what the
(z_t, a_t) head did on Hopper (BENCHMARKS.md). `--refit` also fits, 5-fold by episode over all
stored transitions, a fresh one-hidden-layer classifier (positives weighted 10x) on each of
(z_t, a_t), the encoded next latent and the normalised next observation, and prints its held-out
recall at 0.5: how much termination the inputs carry, whatever the head learned. With
model.termination_from=bounds it also prints the mean |error| of the rule's obs dims read off the
heads' imagined next latents against the real next observation.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def _flat(replay: dict, key: str) -> np.ndarray:
    size = int(replay["size"])
    x = np.asarray(replay[key])[:, :size]
    return x.reshape(-1, *x.shape[2:])


def model_view(agent, params, replay: dict) -> dict:
    """Per stored transition: p_term (N,) on the encoded next latent, p_imagined (N,) the mean
    over dynamics heads of p_term on each head's predicted next latent (what the planner sees),
    q (N,) (critics' mean), terminal (N,), held (N,), episode (N,) ids (negative: held out)."""
    wm = agent.model
    obs, act, nxt = (_flat(replay, k).astype(np.float32) for k in ("obs", "action", "next_obs"))
    z, z_next = wm.encode(params, obs), wm.encode(params, nxt)
    z_heads = wm.next_all(params, z, act)  # (K, N, L)
    p_heads = wm.termination(params, z[None], act[None], z_heads)  # (K, N)
    view = {
        "p_term": np.asarray(wm.termination(params, z, act, z_next)),
        "p_imagined": np.asarray(p_heads.mean(axis=0)),
        "q": np.asarray(wm.q_values(params["q"], z, act).mean(axis=0)),
        "terminal": _flat(replay, "terminated").astype(bool),
        "held": _flat(replay, "episode") < -1,
        "episode": _flat(replay, "episode"),
    }
    if wm.termination_from == "bounds":  # how well the heads' latents give the rule's obs dims
        real = wm.rule_dims(nxt)  # (N, n)
        read = np.asarray(wm.bounded_obs(params, z_heads))  # (K, N, n)
        view["read_err"] = np.abs(read - real[None]).mean(axis=(0, 2))
    return view


def summarize(view: dict) -> dict:
    """Mean p_term and Q per group, and over the 1..5 steps before each terminal transition."""
    term, held = view["terminal"], view["held"]
    groups = {"terminal, trained": term & ~held, "terminal, held out": term & held}
    groups["not terminal"] = ~term
    cols = [c for c in ("p_term", "p_imagined", "q", "read_err") if c in view]
    out = {}
    for name, m in groups.items():
        n = int(m.sum())
        out[name] = {"n": n} | {k: float(view[k][m].mean()) if n else None for k in cols}
    ends, episode = np.flatnonzero(term), view["episode"]
    for k in range(1, 6):
        j = ends - k
        keep = j >= 0
        j, e = j[keep], ends[keep]
        j = j[episode[j] == episode[e]]  # the same episode (not a shorter one, not a ring wrap)
        out[f"{k} before a terminal"] = {"n": len(j)} | {
            c: float(view[c][j].mean()) if len(j) else None for c in cols
        }
    return out


def refit(agent, params, replay: dict, *, folds: int = 5, steps: int = 2000) -> dict:
    """Held-out recall at 0.5 and false-positive rate of fresh classifiers on three inputs."""
    import jax
    import jax.numpy as jnp
    import optax

    wm = agent.model
    obs, act, nxt = (_flat(replay, k).astype(np.float32) for k in ("obs", "action", "next_obs"))
    term, episode = _flat(replay, "terminated").astype(bool), np.abs(_flat(replay, "episode"))
    z, z_next = np.asarray(wm.encode(params, obs)), np.asarray(wm.encode(params, nxt))
    inputs = {
        "(z_t, a_t)": np.concatenate([z, act], axis=1),
        "z_t+1 (encoded)": z_next,
        "next observation": (nxt - nxt.mean(0)) / (nxt.std(0) + 1e-6),
    }

    def fit(x, y):
        k1, k2 = jax.random.split(jax.random.key(0))
        p = {
            "w1": jax.random.normal(k1, (x.shape[1], 128)) / np.sqrt(x.shape[1]),
            "b1": jnp.zeros(128),
            "w2": jax.random.normal(k2, (128, 1)) / np.sqrt(128),
            "b2": jnp.zeros(1),
        }
        fwd = lambda p, x: (jax.nn.silu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"])[:, 0]  # noqa: E731
        X, Y = jnp.asarray(x), jnp.asarray(y, jnp.float32)
        w = jnp.where(Y > 0, 10.0, 1.0)
        loss = lambda p: jnp.mean(w * optax.sigmoid_binary_cross_entropy(fwd(p, X), Y))  # noqa: E731
        opt = optax.adam(1e-3)

        @jax.jit
        def step(p, s):
            u, s = opt.update(jax.grad(loss)(p), s)
            return optax.apply_updates(p, u), s

        s = opt.init(p)
        for _ in range(steps):
            p, s = step(p, s)
        return lambda x: np.asarray(jax.nn.sigmoid(fwd(p, jnp.asarray(x))))

    out = {}
    for name, x in inputs.items():
        pos, neg = [], []
        for k in range(folds):
            test = episode % folds == k
            pred = fit(x[~test], term[~test])(x[test])
            pos.append(pred[term[test]])
            neg.append(pred[~term[test]])
        pos, neg = np.concatenate(pos), np.concatenate(neg)
        out[name] = {
            "terminal_n": len(pos),
            "recall_at_0.5": float(np.mean(pos > 0.5)) if len(pos) else None,
            "false_positive_rate": float(np.mean(neg > 0.5)),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default newest)")
    parser.add_argument("--refit", action="store_true", help="also refit fresh classifiers")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from scripts.bundle import load_run
    from scripts.machine import machine_info, write_result
    from worldmodel.errors import UserError

    try:
        agent, state, cfg, meta, replay = load_run(args.run_dir, step=args.step)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if "terminated" not in replay or int(replay["size"]) == 0:
        print(f"error: {args.run_dir} has no stored transitions in its checkpoint", file=sys.stderr)
        return 2
    result = {"run_dir": str(args.run_dir), "step": int(meta["env_steps"]), "env_id": cfg.env.id}
    result["model"] = summarize(model_view(agent, state.params, replay))
    for name, row in result["model"].items():
        if row["n"] == 0:
            print(f"{name:22s} n=     0")
            continue
        print(
            f"{name:22s} n={row['n']:6d}  P(terminated) {row['p_term']:.3f} "
            f"(imagined {row['p_imagined']:.3f})  Q {row['q']:7.1f}"
            + (f"  rule dims |error| {row['read_err']:.3f}" if "read_err" in row else "")
        )
    if args.refit:
        result["refit"] = refit(agent, state.params, replay)
        for name, row in result["refit"].items():
            recall = "-" if row["recall_at_0.5"] is None else f"{row['recall_at_0.5']:.2f}"
            print(
                f"refit on {name:18s} held-out recall {recall}  "
                f"false positives {row['false_positive_rate']:.4f}  (n={row['terminal_n']})"
            )
    if args.json is not None:
        cmd = "python -m scripts.termination_check " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        write_result(args.json, {**result, "command": cmd, "machine": machine_info()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
