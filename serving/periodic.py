"""A daemon thread that calls one function now and then every few seconds, until stopped.

Serving's background work (watching the promoted model, refreshing offer budget spend)
runs this way so that no request ever waits for it.

>>> calls = []
>>> poller = Periodic(lambda: calls.append(1), interval_s=60, name="example")
>>> poller.start(); poller.stop()
>>> calls
[1]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Call ``work`` once in :meth:`start`, then every ``interval_s`` s in a daemon thread."""

    def __init__(self, work: Callable[[], object], *, interval_s: float, name: str) -> None:
        if interval_s <= 0:
            message = f"interval_s must be positive; got {interval_s!r}"
            raise ValueError(message)
        self.work = work
        self.interval_s = interval_s
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run once now, then in the thread until :meth:`stop` (a second start: no-op)."""
        if self._thread is not None:
            return
        self._run_once()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run_once(self) -> None:
        try:
            self.work()
        except Exception:  # a bug in one run must not stop the next ones (nor startup)
            log.exception("%s failed; it runs again in %g s", self.name, self.interval_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._run_once()

    def stop(self) -> None:
        """Stop the thread; idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
