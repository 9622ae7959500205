"""Train an agent: `python -m scripts.train [overlay ...] [key=value ...]`.

Overlays are names under configs/ or configs/tasks/ (e.g. `halfcheetah`, `debug`); overrides are
dotted keys (e.g. `train.steps=20000 seed=1`). The run folder gets config.yaml, metrics.jsonl,
checkpoints/ and, with log.tensorboard=true, tensorboard/ (event files); an existing run folder
is resumed. SIGTERM/SIGINT (e.g. cluster preemption) saves a checkpoint at the next safe point
and exits 0; rerunning the same command resumes.

Launched as several processes (SLURM tasks, TPU VM workers, or JAX_COORDINATOR_ADDRESS /
JAX_NUM_PROCESSES / JAX_PROCESS_ID), all of them train together on one run folder (a shared
filesystem); only process 0 writes config.yaml, metrics.jsonl, tensorboard/ and the console.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

USAGE = __doc__.strip().splitlines()[0]


def _run_dir(cfg) -> Path:
    import jax

    from scripts.runtime import claim_run_dir
    from worldmodel.distributed import allgather_json

    if cfg.run_dir:
        return Path(cfg.run_dir)
    parent = Path("runs") / cfg.env.id.replace("/", "_")
    # process 0 claims a fresh folder (never one a concurrent run holds); every process uses it
    name = claim_run_dir(parent, f"seed{cfg.seed}").name if jax.process_index() == 0 else None
    return parent / allgather_json(name)[0]


def _keep_previous_config(path: Path, cfg) -> None:
    """A resumed run folder whose config.yaml differs from this invocation's keeps the old one
    as config-<n>.yaml before it is replaced (so an incompatible resume loses nothing)."""
    from worldmodel.config import config_from_file
    from worldmodel.errors import UserError

    if not path.is_file():
        return
    try:
        same = config_from_file(path).to_dict() == cfg.to_dict()
    except (UserError, OSError):  # an unreadable old file is kept all the same
        same = False
    if not same:
        n = 1
        while (path.parent / f"config-{n}.yaml").exists():
            n += 1
        path.rename(path.parent / f"config-{n}.yaml")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    os.environ.setdefault("MUJOCO_GL", "egl")
    from agents.preemption import StopRequest
    from agents.trainer import train
    from scripts.runtime import prepare_run_dir, repair_jsonl
    from scripts.sinks import ConsoleSink, JsonlSink, TensorBoardSink
    from worldmodel.config import load_config, save_config
    from worldmodel.distributed import any_process, init_distributed, is_main_process
    from worldmodel.errors import UserError

    stop = StopRequest()
    restore_signals = stop.install()
    try:
        init_distributed()  # before any other JAX call; a no-op for a single process
        main = is_main_process()
        cfg = load_config(args)
        run_dir = _run_dir(cfg)
        prepare_run_dir(run_dir)  # a file in the way is a one-line error
        sinks = []
        if main:
            _keep_previous_config(run_dir / "config.yaml", cfg)
            save_config(cfg, run_dir / "config.yaml")
            repair_jsonl(run_dir / "metrics.jsonl")  # a kill -9 may have cut the last line
            jsonl = JsonlSink(run_dir / "metrics.jsonl")
            console = ConsoleSink(cfg.train.steps, enabled=cfg.log.progress, desc=cfg.env.id)
            sinks = [jsonl, console]
            if getattr(cfg.log, "tensorboard", False):  # read defensively: a newer config key
                sinks.append(TensorBoardSink(run_dir / "tensorboard"))
        start = time.perf_counter()

        def emit(kind: str, step: int, data: dict) -> None:
            for sink in sinks:
                sink(kind, step, data)
            if kind == "warning" and main:  # identical on every process: one copy
                print(f"warning: {data['message']}", file=sys.stderr)

        try:
            result = train(cfg, run_dir, emit=emit, should_stop=stop)
        finally:
            for sink in sinks:
                sink.close()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        restore_signals()
    stopped = any_process(stop())  # a signal to any process stopped them all
    if not main:
        return 0
    if stopped:
        by = stop.name or "a signal to another process"
        print(f"stopped by {by}: checkpoint saved in {run_dir}; rerun to resume")
        return 0
    minutes = (time.perf_counter() - start) / 60
    print(f"run folder: {run_dir}")
    if result:
        print(
            f"final evaluation ({len(result['returns'])} episodes, step {result['step']}): "
            f"return {result['mean']:.1f} ± {result['std']:.1f}  [{minutes:.1f} min]"
        )
    else:
        print(f"done in {minutes:.1f} min (no evaluation: eval.every=0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
