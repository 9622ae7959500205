"""Metric sinks owned by the scripts: JSONL file, a console progress bar (tqdm) and TensorBoard.

Each sink is called as `sink(kind, env_step, data)` with the trainer's records and closed once.
"""

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
    """tqdm bar over env steps with steps/s, recent training return, the latest eval, the
    abstain rate (when 'train' records carry `abstain_rate`) and tqdm's ETA. With the bar
    disabled, each eval prints one line with the ETA."""

    def __init__(self, total: int, *, enabled: bool, desc: str, file=None):
        from tqdm import tqdm

        self._total = total
        self._file = file or sys.stderr
        self._bar = tqdm(
            total=total,
            desc=desc,
            unit="step",
            disable=not enabled,
            mininterval=0.5,
            dynamic_ncols=True,
            file=self._file,
        )
        self._enabled = enabled
        self._returns: collections.deque = collections.deque(maxlen=10)
        self._post: dict = {}
        self._start = (time.perf_counter(), 0)  # (time, env step) the ETA counts from

    def _eta(self, env_step: int) -> str:
        t0, s0 = self._start
        done, left = env_step - s0, self._total - env_step
        if done <= 0 or left <= 0:
            return "--:--"
        seconds = int((time.perf_counter() - t0) * left / done)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def __call__(self, kind: str, env_step: int, data: dict) -> None:
        if kind == "episode":
            self._returns.append(data["return"])
            self._post["return"] = f"{sum(self._returns) / len(self._returns):.1f}"
        elif kind == "train":
            self._post["sps"] = f"{data['sps']:.1f}"
            if "abstain_rate" in data:
                self._post["abstain"] = f"{data['abstain_rate']:.1%}"
        elif kind == "eval":
            self._post["eval"] = f"{data['mean']:.1f}"
            prior = data.get("prior")
            if prior is not None:
                self._post["eval_prior"] = f"{prior['mean']:.1f}"
            if not self._enabled:
                alone = f", prior alone {prior['mean']:.1f}" if prior is not None else ""
                print(
                    f"[{env_step}] eval return {data['mean']:.1f} ± {data['std']:.1f}{alone} "
                    f"(ETA {self._eta(env_step)})",
                    file=self._file,
                )
        elif kind == "resume":
            # Rate and ETA count from here, not from 0 (the resumed steps took no time).
            self._bar.reset(total=self._total)
            self._bar.initial = self._bar.n = self._bar.last_print_n = env_step
            self._start = (time.perf_counter(), env_step)
            self._bar.write(f"resumed at env step {env_step}")
        self._bar.n = env_step
        self._bar.set_postfix(self._post, refresh=False)
        self._bar.update(0)

    def close(self) -> None:
        self._bar.close()


class TensorBoardSink:
    """tensorboardX event files in `log_dir`: every numeric 'train' metric as train/<name>,
    'eval' as eval/return_mean and eval/return_std (+ eval/abstain_rate and
    eval/prior_return_mean, the policy prior alone, when present),
    'episode' as episode/return and episode/length; x = env steps."""

    def __init__(self, log_dir: Path):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as err:
            from worldmodel.errors import UserError

            raise UserError("log.tensorboard needs tensorboardX: pip install tensorboardX") from err
        self._writer = SummaryWriter(logdir=str(log_dir), flush_secs=30)

    def _scalar(self, tag: str, value, env_step: int) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            self._writer.add_scalar(tag, float(value), int(env_step))

    def __call__(self, kind: str, env_step: int, data: dict) -> None:
        if kind == "train":
            for name, value in data.items():
                self._scalar(f"train/{name}", value, env_step)
        elif kind == "eval":
            self._scalar("eval/return_mean", data.get("mean"), env_step)
            self._scalar("eval/return_std", data.get("std"), env_step)
            self._scalar("eval/abstain_rate", data.get("abstain_rate"), env_step)
            self._scalar("eval/prior_return_mean", (data.get("prior") or {}).get("mean"), env_step)
        elif kind == "episode":
            self._scalar("episode/return", data.get("return"), env_step)
            self._scalar("episode/length", data.get("length"), env_step)

    def close(self) -> None:
        self._writer.close()
