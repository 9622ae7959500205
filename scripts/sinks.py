"""Metric sinks owned by the scripts: JSONL file and a console progress bar (tqdm)."""

from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path


class JsonlSink:
    """Appends one JSON object per event: {"kind", "env_step", "time", **data}; flushed each line."""

    def __init__(self, path: Path):
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - closed in close()

    def __call__(self, kind: str, env_step: int, data: dict) -> None:
        record = {"kind": kind, "env_step": int(env_step), "time": time.time(), **data}
        self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._file.close()


class ConsoleSink:
    """tqdm bar over env steps with steps/s, recent training return and the latest eval."""

    def __init__(self, total: int, *, enabled: bool, desc: str):
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            desc=desc,
            unit="step",
            disable=not enabled,
            mininterval=0.5,
            dynamic_ncols=True,
            file=sys.stderr,
        )
        self._enabled = enabled
        self._returns: collections.deque = collections.deque(maxlen=10)
        self._post: dict = {}

    def __call__(self, kind: str, env_step: int, data: dict) -> None:
        if kind == "episode":
            self._returns.append(data["return"])
            self._post["return"] = f"{sum(self._returns) / len(self._returns):.1f}"
        elif kind == "train":
            self._post["sps"] = f"{data['sps']:.1f}"
        elif kind == "eval":
            self._post["eval"] = f"{data['mean']:.1f}"
            if not self._enabled:
                print(
                    f"[{env_step}] eval return {data['mean']:.1f} ± {data['std']:.1f}",
                    file=sys.stderr,
                )
        elif kind == "resume":
            self._bar.write(f"resumed at env step {env_step}")
        self._bar.n = env_step
        self._bar.set_postfix(self._post, refresh=False)
        self._bar.update(0)

    def close(self) -> None:
        self._bar.close()
