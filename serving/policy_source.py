"""The policies file, reloaded without a restart when it changes (or on demand).

Requests call :meth:`PolicySource.get`; at most once per ``check_interval_s`` that looks at the
file's modification time and size, and reloads when they changed. A file that fails
validation is not taken: the last good policies stay in force and the error is kept for
``/readyz`` and ``POST /admin/reload``. The first load must succeed (serving refuses to
start on an invalid file, with the error naming the file, the entry and the field).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from features.policy import Policies, PolicyError, check_offer_ids, load_policies
from features.scoring import Candidate
from serving.offers import EligibilityCache, OfferPlan, plan_offers

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedPolicies:
    """One loaded version of the file, with what serving precomputes from it."""

    policies: Policies
    plans: list[OfferPlan]
    stamp: tuple[int, int]
    loaded_at: float
    eligibility: EligibilityCache


class PolicySource:
    """Hold the current policies; swap in a new version when the file changes and is valid."""

    def __init__(
        self,
        path: Path | str,
        candidates: Sequence[Candidate],
        *,
        check_interval_s: float = 1.0,
        on_reload: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._candidates = list(candidates)
        self._offer_ids = {c.action_id for c in self._candidates}
        self.check_interval_s = check_interval_s
        self._on_reload = on_reload
        self._next_check = 0.0
        self._lock = threading.Lock()  # one reload at a time; readers never wait for it
        self.error: str | None = None
        self._rejected: tuple[int, int] | None = None  # a bad file is reported once
        self.current = self._load(self._stamp())

    def _stamp(self) -> tuple[int, int]:
        try:
            info = self.path.stat()
        except OSError as error:
            message = f"{self.path}: cannot read the policies file: {error.strerror or error}"
            raise PolicyError(message) from None
        return info.st_mtime_ns, info.st_size

    def _load(self, stamp: tuple[int, int]) -> LoadedPolicies:
        policies = load_policies(self.path)
        check_offer_ids(policies, self._offer_ids, str(self.path))
        plans = plan_offers(self._candidates, policies)
        return LoadedPolicies(policies, plans, stamp, time.time(), EligibilityCache(plans))

    def get(self) -> LoadedPolicies:
        """Return the policies in force, reloading first if the file changed (rate-limited)."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.check_interval_s
            self.reload()
        return self.current

    def reload(self, *, force: bool = False) -> str:
        """Reload if the file changed (always with ``force``); return what happened.

        One of ``"unchanged"``, ``"reloaded"``, ``"rejected"`` (the error is in ``error``).
        """
        if not self._lock.acquire(blocking=force):
            return "unchanged"  # another thread is reloading right now
        try:
            return self._reload(force)
        finally:
            self._lock.release()

    def _reload(self, force: bool) -> str:
        stamp: tuple[int, int] | None = None
        try:
            stamp = self._stamp()
            if stamp in (self.current.stamp, self._rejected) and not force:
                return "unchanged"
            loaded = self._load(stamp)
        except PolicyError as error:
            self._rejected = stamp
            if self.error != str(error):
                log.error("policies not reloaded, keeping the last good ones: %s", error)
            self.error = str(error)
            self._event("rejected")
            return "rejected"
        self.current, self.error, self._rejected = loaded, None, None
        log.info("policies reloaded from %s", self.path)
        self._event("reloaded")
        return "reloaded"

    def _event(self, result: str) -> None:
        if self._on_reload is not None:
            self._on_reload(result)
