"""Renderer speed: `python -m scripts.benchmark_render [--size 480] [--frames 200]`.

Frames/s of MuJoCo's renderer (envs/render.py, EGL) on HalfCheetah-v5 and Hopper-v5 states
from a random-action rollout, fast mode (no shadows/reflections/MSAA) and default quality,
interleaved A B A B. Raw: scripts/results/render_speed.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=480)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym

    from envs.render import StateRenderer
    from scripts.machine import machine_info, write_result

    out = {"size": args.size, "frames": args.frames, "gl": os.environ["MUJOCO_GL"], "tasks": {}}
    for env_id in ("HalfCheetah-v5", "Hopper-v5"):
        env = gym.make(env_id)
        env.reset(seed=0)
        states = []
        for _ in range(args.frames):
            env.step(env.action_space.sample())
            d = env.unwrapped.data
            states.append((d.qpos.copy(), d.qvel.copy()))
        model = env.unwrapped.model
        cam = getattr(env.unwrapped, "default_camera_config", None)
        renderers = {
            m: StateRenderer(model, size=args.size, camera_config=cam, fast=m == "fast")
            for m in ("fast", "default")
        }
        fps = {m: [] for m in renderers}
        for _ in range(args.repeats):
            for mode, r in renderers.items():
                r.render(*states[0])  # warm-up
                tic = time.perf_counter()
                for q, v in states:
                    frame = r.render(q, v)
                fps[mode].append(args.frames / (time.perf_counter() - tic))
        assert frame.shape == (args.size, args.size, 3)
        for r in renderers.values():
            r.close()
        env.close()
        out["tasks"][env_id] = {
            m: {"median_fps": float(np.median(v)), "all": v} for m, v in fps.items()
        }
        print(env_id, {m: round(float(np.median(v)), 1) for m, v in fps.items()}, "frames/s")
    out["machine"] = machine_info()
    out["command"] = "python -m scripts.benchmark_render " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    write_result(RESULTS / "render_speed.json", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
