"""Evaluate a trained run: `python -m scripts.evaluate RUN_DIR [--episodes N] [--seed S] [--no-plan]`.

Loads RUN_DIR/config.yaml and the newest checkpoint (or --step), runs N greedy episodes on seeds
never used in training (default: the ones training's evaluations used), prints mean ± std return
and writes RUN_DIR/eval-<step>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--episodes", type=int, default=None, help="default: eval.episodes")
    parser.add_argument("--seed", type=int, default=None, help="default: seed + eval.seed_offset")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default newest)")
    parser.add_argument("--no-plan", action="store_true", help="act with the policy prior only")
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")

    from agents.agent import make_agent
    from agents.evaluation import evaluate
    from envs import env_spec
    from worldmodel.checkpoint import Checkpointer
    from worldmodel.config import config_from_file
    from worldmodel.errors import UserError
    from worldmodel.rng import key_for

    try:
        config_path = args.run_dir / "config.yaml"
        if not config_path.is_file():
            raise UserError(f"{config_path} not found: pass a run folder made by scripts.train")
        cfg = config_from_file(config_path)
        spec = env_spec(cfg.env.id)
        agent = make_agent(
            spec["obs_dim"],
            spec["act_dim"],
            model=cfg.section("model"),
            loss=cfg.section("loss"),
            optim=cfg.section("optim"),
            planner=cfg.section("planner"),
        )
        ckpt = Checkpointer(args.run_dir / "checkpoints")
        state, _, meta = ckpt.restore(agent.init(key=key_for(cfg.seed, "init", 0)), args.step)
        episodes = args.episodes or cfg.eval.episodes
        seed = cfg.seed + cfg.eval.seed_offset if args.seed is None else args.seed
        result = evaluate(
            agent,
            state,
            env_id=cfg.env.id,
            episodes=episodes,
            seed=seed,
            plan=not args.no_plan,
            action_repeat=cfg.env.action_repeat,
            max_episode_steps=cfg.env.max_episode_steps,
        )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = {
        "env_id": cfg.env.id,
        "checkpoint_step": meta["env_steps"],
        "seed": seed,
        "plan": not args.no_plan,
        **result,
    }
    out = args.run_dir / f"eval-{meta['env_steps']}.json"
    out.write_text(json.dumps(result, indent=2))
    print(
        f"{cfg.env.id} @ {meta['env_steps']} steps: return {result['mean']:.1f} ± "
        f"{result['std']:.1f} over {episodes} episodes (seeds {seed}..{seed + episodes - 1})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
