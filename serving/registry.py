"""Hot swap of the scoring model: a holder read by requests, a watcher of the promoted pointer.

The model registry (issue 5) promotes a model by rewriting a small *pointer file* (its
content names the promoted model, e.g. a version or a folder). :class:`ModelWatcher` polls
that file's modification time and content; when they change it calls the ``loader`` given
to it with the content, in its own thread, and swaps the result into the
:class:`ScorerHolder` with one reference assignment. A request reads ``holder.current`` once,
so it scores with one model from start to end, and no request waits for a load. A loader
that fails leaves the model being served in place (the heuristic if none was ever loaded).

>>> from features.scoring import HeuristicScorer
>>> holder = ScorerHolder(HeuristicScorer())
>>> holder.current.version
'heuristic-v1'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from features.scoring import Scorer
from serving.periodic import Periodic

if TYPE_CHECKING:
    from omnioffer.settings import Settings

log = logging.getLogger(__name__)

Loader = Callable[[str], Scorer]


class ScorerHolder:
    """The scorer in use; reads and swaps are single reference operations (atomic)."""

    def __init__(self, fallback: Scorer, on_swap: Callable[[Scorer], None] | None = None) -> None:
        self.fallback = fallback
        self.current: Scorer = fallback
        self._on_swap = on_swap

    def swap(self, scorer: Scorer) -> None:
        """Serve ``scorer`` from the next request on."""
        self.current = scorer
        if self._on_swap is not None:
            self._on_swap(scorer)


@dataclass
class WatchState:
    """What the watcher saw last: the pointer's stamp and content, the last error."""

    stamp: tuple[int, int, int] | None = None
    target: str | None = None
    error: str | None = None
    swaps: int = 0
    failures: int = 0


class ModelWatcher:
    """Poll ``pointer`` every ``interval_s`` seconds; load and swap when it changes.

    A load that fails keeps the model in force and is tried again every ``retry_s``
    seconds until it succeeds or the pointer changes. ``on_event`` is called with
    ``"swap"`` or ``"load_failure"`` (for metrics).
    """

    def __init__(
        self,
        holder: ScorerHolder,
        pointer: Path | str,
        loader: Loader,
        *,
        interval_s: float = 2.0,
        retry_s: float = 30.0,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.holder = holder
        self.retry_s = retry_s
        self._retry_at: float | None = None  # a failed load is tried again from then
        self.pointer = Path(pointer)
        self.loader = loader
        self.state = WatchState()
        self._on_event = on_event
        self._poller = Periodic(self.poll_once, interval_s=interval_s, name="model-watcher")

    def poll_once(self) -> bool:
        """Check the pointer once; return whether a new model was swapped in."""
        try:
            info = self.pointer.stat()
            # The pointer is replaced, not rewritten: a new inode, even when two promotions
            # fall in one tick of a coarse clock and name versions of the same length.
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
            retry = self._retry_at is not None and time.monotonic() >= self._retry_at
            if stamp == self.state.stamp and not retry:
                return False
            target = self.pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return False  # nothing promoted yet
        except OSError as error:
            self._failed(f"cannot read {self.pointer}: {error}")
            return False
        self.state.stamp = stamp
        if not target or target == self.state.target:
            self._retry_at = None
            if target:
                self.state.error = None  # pointed back at the model in force
            return False
        try:
            scorer = self.loader(target)
            version = scorer.version
        except Exception as error:  # any loader bug must leave serving running
            self._failed(f"loading {target!r} failed: {type(error).__name__}: {error}")
            # A transient failure (a file still being copied, a full disk) must not leave
            # serving on the old model until the next promotion.
            self._retry_at = time.monotonic() + self.retry_s
            return False
        self._retry_at = None
        self.holder.swap(scorer)
        self.state.target, self.state.error = target, None
        self.state.swaps += 1
        log.info("serving model %s (from %s)", version, target)
        if self._on_event is not None:
            self._on_event("swap")
        return True

    def _failed(self, reason: str) -> None:
        self.state.error = reason
        self.state.failures += 1
        log.warning("model not swapped: %s", reason)
        if self._on_event is not None:
            self._on_event("load_failure")

    @property
    def interval_s(self) -> float:
        """Seconds between two polls."""
        return self._poller.interval_s

    def start(self) -> None:
        """Poll once now, then in a daemon thread until :meth:`stop`."""
        self._poller.start()

    def stop(self) -> None:
        """Stop polling; idempotent."""
        self._poller.stop()


def default_loader(settings: Settings | None = None) -> Loader | None:
    """Return the model registry's scorer loader, bound to ``settings`` (serving's own).

    ``None`` when ``models`` cannot be imported (a serving-only install), so serving runs
    with the heuristic.
    """
    try:
        from models import registry
    except ImportError:
        return None
    return lambda target: registry.load_scorer(target, settings=settings)
