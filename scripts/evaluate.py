"""Evaluate a trained run: `python -m scripts.evaluate RUN_DIR [planner.KEY=V ...] [--episodes N]
[--seed S] [--no-plan] [--video PATH.mp4] [--summary PATH.json]`.

Dotted `planner.*` / `abstain.*` overrides change how the trained agent acts (e.g.
`planner.value=min`, `planner.horizon=5`); the model's keys are fixed by its parameters.

Loads RUN_DIR/config.yaml and the newest checkpoint (or --step), or an exported bundle (see
scripts.export), runs N greedy episodes on seeds never used in training (default: the ones
training's evaluations used), prints mean ± std return and writes RUN_DIR/eval-<step>.json.
--video records env 0's episode (MuJoCo tasks), rendered by envs/render.py: it is replayed alone
with env 0's seed and keys, the same episode up to float rounding (a batch of N envs rounds the
forward pass differently from 1), which can drift in long chaotic episodes: the summary gives both
returns.
--summary writes {returns, mean, std, lengths, step, seeds, command, ...} to PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path


def _record_video(bundle, args, seed: int) -> dict:
    """Replay env 0's episode with rendering into args.video; returns its return and length."""
    from envs import make_single_env
    from envs.render import make_renderer, render_env
    from scripts.bundle import calibration_of
    from scripts.rollout import VideoWriter, decision_fps, greedy_episode

    cfg = bundle.cfg
    env = make_single_env(
        cfg.env.id,
        action_repeat=cfg.env.action_repeat,
        max_episode_steps=cfg.env.max_episode_steps,
    )
    try:
        fps = decision_fps(env, cfg.env.action_repeat)
        with (
            make_renderer(env, size=args.video_size) as renderer,
            VideoWriter(args.video, fps=fps) as writer,
        ):
            episode = greedy_episode(
                bundle.agent,
                bundle.state,
                env,
                seed=seed,
                plan=not args.no_plan,
                on_step=lambda e: writer.append(render_env(e, renderer)),
                calib=calibration_of(bundle),
            )
    finally:
        env.close()
    return {"path": str(args.video), "return": episode["return"], "length": episode["length"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "overrides", nargs="*", help="planner.*/abstain.* overrides, e.g. planner.value=min"
    )
    parser.add_argument("--episodes", type=int, default=None, help="default: eval.episodes")
    parser.add_argument("--seed", type=int, default=None, help="default: seed + eval.seed_offset")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default newest)")
    parser.add_argument("--no-plan", action="store_true", help="act with the policy prior only")
    parser.add_argument("--video", type=Path, default=None, help="mp4/gif of env 0's episode")
    parser.add_argument("--video-size", type=int, default=480, help="video frame size (pixels)")
    parser.add_argument("--summary", type=Path, default=None, help="write a summary JSON here")
    args = parser.parse_intermixed_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")

    from scripts.bundle import evaluate_bundle, load_bundle
    from worldmodel.errors import UserError

    try:
        bundle = load_bundle(args.run_dir, step=args.step, overrides=args.overrides)
        cfg = bundle.cfg
        episodes = args.episodes or cfg.eval.episodes
        seed = cfg.seed + cfg.eval.seed_offset if args.seed is None else args.seed
        if args.video is not None and args.video.suffix.lower() not in (".mp4", ".gif"):
            raise UserError(f"--video {args.video} must end in .mp4 or .gif")
        if args.video_size < 16 or args.video_size % 16:
            raise UserError(
                f"--video-size must be a positive multiple of 16, got {args.video_size}"
            )
        # The video first: a task that cannot be rendered fails before the long evaluation.
        video = _record_video(bundle, args, seed) if args.video is not None else None
        result = evaluate_bundle(bundle, episodes=episodes, seed=seed, plan=not args.no_plan)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    step = bundle.step
    result = {
        "env_id": cfg.env.id,
        "checkpoint_step": step,
        "seed": seed,
        "plan": not args.no_plan,
        "overrides": args.overrides,
        **result,
    }
    out = args.run_dir / f"eval-{step}.json"
    out.write_text(json.dumps(result, indent=2))
    print(
        f"{cfg.env.id} @ {step} steps: return {result['mean']:.1f} ± "
        f"{result['std']:.1f} over {episodes} episodes (seeds {seed}..{seed + episodes - 1})"
    )
    if video is not None:
        video["env0_return"] = result["returns"][0]
        print(f"video of env 0 (return {video['return']:.1f}): {args.video}")
    if args.summary is not None:
        command = "python -m scripts.evaluate " + shlex.join(
            sys.argv[1:] if argv is None else [str(a) for a in argv]
        )
        summary = {
            "env_id": cfg.env.id,
            "step": step,
            "returns": result["returns"],
            "mean": result["mean"],
            "std": result["std"],
            "lengths": result["lengths"],
            "seeds": list(range(seed, seed + episodes)),
            "plan": not args.no_plan,
            "overrides": args.overrides,
            "command": command,
            "video": video,
        }
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary, indent=2))
        print(f"summary: {args.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
