"""Cost of the logging sinks against the training loop: `python -m scripts.benchmark_sinks RUN_DIR`.

Replays RUN_DIR's metrics.jsonl through each sink (console progress bar, JSONL, TensorBoard)
and times it: per-event cost, and per env step = total sink time / env steps of the run, as a
fraction of the run's own measured seconds per env step (its 'train' records' sps). The loop
calls the sinks only per finished episode and per log interval, never per env step.
Raw: scripts/results/sinks_overhead.json.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from scripts.machine import write_result

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    from scripts.sinks import ConsoleSink, JsonlSink, TensorBoardSink

    events = [
        json.loads(x) for x in (args.run / "metrics.jsonl").read_text().splitlines() if x.strip()
    ]
    events = [
        e for e in events if e["kind"] in ("train", "episode", "eval", "checkpoint", "calibration")
    ]
    steps = max(e["env_step"] for e in events)
    sps = [e["sps"] for e in events if e["kind"] == "train"]
    sec_per_step = 1.0 / float(np.median(sps))
    out = {"run": str(args.run), "events": len(events), "env_steps": steps,
           "loop_seconds_per_step": sec_per_step, "sinks": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        makers = {
            "console (tqdm bar, enabled)": lambda: ConsoleSink(
                steps, enabled=True, desc="x", file=io.StringIO()
            ),
            "jsonl": lambda: JsonlSink(Path(tmp) / f"m{time.perf_counter_ns()}.jsonl"),
            "tensorboard": lambda: TensorBoardSink(Path(tmp) / f"tb{time.perf_counter_ns()}"),
        }
        for name, make in makers.items():
            times = []
            for _ in range(args.repeats):
                sink = make()
                tic = time.perf_counter()
                for e in events:
                    data = {k: v for k, v in e.items() if k not in ("kind", "env_step", "time")}
                    sink(e["kind"], e["env_step"], data)
                times.append(time.perf_counter() - tic)
                sink.close()
            total = float(np.median(times))
            frac = total / steps / sec_per_step
            out["sinks"][name] = {
                "seconds_total": total,
                "per_event_us": 1e6 * total / len(events),
                "fraction_of_loop": frac,
            }
            print(
                f"{name:28s} {1e6 * total / len(events):8.1f} us/event  {100 * frac:.4f}% of the loop"
            )
    out["command"] = "python -m scripts.benchmark_sinks " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    write_result(RESULTS / "sinks_overhead.json", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
