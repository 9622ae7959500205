"""Graceful stop on SIGTERM/SIGINT (cluster preemption, Ctrl-C): a flag the training loop polls.

Host only. The handler just records the signal; the trainer checks the flag once per loop
iteration (a safe point: no update or checkpoint write in flight), saves and returns.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable


class StopRequest:
    """Callable flag: `stop()` is True once a stop signal arrived (`stop.signal` names it).

    `restore = stop.install()` installs the handlers (main thread only; a no-op elsewhere);
    a second signal of the same kind gets the previous handler, so a second Ctrl-C still
    interrupts at once. `restore()` puts the previous handlers back.
    """

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""

    def request(self, signum: int) -> None:
        """Ask for a stop as if `signum` had arrived."""
        self.signal = signum

    def install(
        self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)
    ) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {s: signal.getsignal(s) for s in signals}

        def handler(signum, frame):
            self.request(signum)
            signal.signal(signum, previous[signum])

        for s in previous:
            signal.signal(s, handler)

        def restore() -> None:
            for s, h in previous.items():
                signal.signal(s, h)

        return restore
