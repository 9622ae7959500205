"""Crash test: `kill -9` a debug training run at seeded random moments, restart it each time.

`python -m scripts.kill_test [--kills 20] [--seed 0] [--steps 2000]` runs an uninterrupted
reference, then the same command killed and restarted on one run folder; it checks that every
resume point's replay holds exactly the reference's transitions up to that checkpoint, that the
counters agree, and that the final checkpoint (state and replay sha256) and the 'train' records
equal the reference's bit for bit. Writes scripts/results/kill_test.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "results" / "kill_test.json"


def _command(run_dir: Path, steps: int, every: int) -> list[str]:
    return [
        sys.executable, "-m", "scripts.train", "debug", f"run_dir={run_dir}",
        f"train.steps={steps}", f"checkpoint.every={every}", "eval.every=0", "log.every=50",
    ]  # fmt: skip


def _env(cache: Path) -> dict:
    env = dict(os.environ)  # a shared compile cache makes restarts cheap (same executables)
    env.update(
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    return env


def _train_records(run_dir: Path) -> dict[int, dict]:
    """Last 'train' record per env step (a restart re-emits the steps after its checkpoint),
    without the wall-clock fields."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "train":
            for k in ("time", "sps"):
                record.pop(k)
            out[record["env_step"]] = record
    return out


def _checkpoints(run_dir: Path) -> dict[int, dict]:
    """{step: {'meta', 'manifest', 'replay' arrays}} of the committed checkpoints."""
    from worldmodel.checkpoint import Checkpointer

    out = {}
    with Checkpointer(run_dir / "checkpoints") as ckpt:
        for step in ckpt.all_steps():
            manifest = ckpt.manifest(step)
            path = run_dir / "checkpoints" / "replay" / f"{step}.npz"
            with np.load(path, allow_pickle=False) as npz:
                replay = {k: npz[k] for k in npz.files}
            out[step] = {"manifest": manifest, "replay": replay}
    return out


def _replay_prefix_ok(replay: dict, reference: dict, step: int) -> bool:
    """The checkpoint's replay holds the reference's first `step` transitions (one env)."""
    n = int(replay["size"])
    same = n == step and all(
        np.array_equal(replay[k][:, :n], reference[k][:, :n])
        for k in ("obs", "action", "reward", "next_obs", "terminated", "episode")
    )
    return bool(same)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--max-delay", type=float, default=25.0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="kill-test-"))
    env = _env(work / "jax-cache")
    rng = np.random.default_rng(args.seed)
    try:
        t0 = time.perf_counter()
        ref_dir, run_dir = work / "reference", work / "killed"
        subprocess.run(_command(ref_dir, args.steps, args.every), env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        ref_time = time.perf_counter() - t0
        ref = _checkpoints(ref_dir)[args.steps]
        kills, resumed_ok = [], []
        for i in range(args.kills):
            delay = float(rng.uniform(0.5, args.max_delay))
            proc = subprocess.Popen(_command(run_dir, args.steps, args.every), env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
            try:
                proc.wait(timeout=delay)
                finished = True
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                finished = False
            stderr = proc.stderr.read().decode()
            proc.stderr.close()
            ckpts = _checkpoints(run_dir) if (run_dir / "checkpoints").is_dir() else {}
            leftovers = [p.name for p in (run_dir / "checkpoints").glob("*tmp*")] if ckpts else []
            for step, c in ckpts.items():  # what the next start resumes from
                resumed_ok.append(_replay_prefix_ok(c["replay"], ref["replay"], step))
            kills.append({
                "delay_s": round(delay, 2), "killed": not finished, "rc": proc.returncode,
                "checkpoints": sorted(ckpts), "orbax_tmp_leftovers": leftovers,
                "warnings": [ln for ln in stderr.splitlines() if ln.startswith("warning")],
            })  # fmt: skip
            print(f"[{i + 1}/{args.kills}] delay {delay:5.1f}s killed={not finished} "
                  f"checkpoints={sorted(ckpts)}", flush=True)  # fmt: skip
        final = subprocess.run(_command(run_dir, args.steps, args.every), env=env,
                               capture_output=True, text=True)  # fmt: skip
        got = _checkpoints(run_dir)[args.steps]
        ref_records, got_records = _train_records(ref_dir), _train_records(run_dir)
        meta_keys = ("env_steps", "updates", "decisions")
        ref_meta = _meta(ref_dir, args.steps)
        got_meta = _meta(run_dir, args.steps)
        result = {
            "command": " ".join(_command(Path("<run>"), args.steps, args.every)[1:]),
            "seed": args.seed, "kills_requested": args.kills,
            "kills_landed": sum(k["killed"] for k in kills),
            "final_rc": final.returncode,
            "reference_seconds": round(ref_time, 1),
            "resume_points_checked": len(resumed_ok),
            "replay_prefix_ok": all(resumed_ok),
            "counters_equal": all(ref_meta[k] == got_meta[k] for k in meta_keys),
            "counters": {k: got_meta[k] for k in meta_keys},
            "state_sha256_equal": got["manifest"]["digest"] == ref["manifest"]["digest"],
            "replay_sha256_equal": got["manifest"]["replay"] == ref["manifest"]["replay"],
            "train_records": len(ref_records),
            "train_records_equal": ref_records == got_records,
            "kills": kills,
        }  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    checks = ("replay_prefix_ok", "counters_equal", "state_sha256_equal", "replay_sha256_equal",
              "train_records_equal")  # fmt: skip
    result["passed"] = result["final_rc"] == 0 and all(result[k] for k in checks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{result['kills_landed']}/{args.kills} kills landed; "
          f"{result['resume_points_checked']} resume points checked; "
          + ", ".join(f"{k}={result[k]}" for k in checks)
          + f"; passed={result['passed']} -> {args.out}")  # fmt: skip
    return 0 if result["passed"] else 1


def _meta(run_dir: Path, step: int) -> dict:
    from worldmodel.checkpoint import Checkpointer

    with Checkpointer(run_dir / "checkpoints") as ckpt:
        return ckpt.meta(step)


if __name__ == "__main__":
    sys.exit(main())
