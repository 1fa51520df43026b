"""Erasures in progress, seen by every decision-log writer of one host before it writes.

An erasure done in the request reads the decision log once. Without a fence, a decision
of the person that another worker process still held in its buffer, or that any worker
made while the erasure ran (the profile is removed last), reached the log after that
read and stayed. So an erasure notes its targets here first (:meth:`ErasureFence.begin`)
and closes the note when everything is erased (:meth:`ErasureFence.end`); each writer,
holding the fence's shared lock from its check to the end of its write, drops the
decisions of a noted person decided before the note closed. The note is taken under the
exclusive lock, so a batch is either in the log before the erasure reads it or checked
against the note.

A note holds keyed hashes of the person's identifiers (the key, random, sits beside it),
not the identifiers. It covers the person while its erasure runs, however long (a
note whose process has died covers ``keep_s`` from its start), and is dropped ``keep_s``
(10 minutes) after it closed: writers pass over it then, and the next note or the next
writer that finds the lock free drops it from the file, which is removed when no note is
left. The file is in the host's event-log directory,
so it reaches the worker processes of one host, not other hosts.

>>> import tempfile
>>> from datetime import UTC, datetime
>>> from features.decisions import Decision, Identifiers
>>> at = datetime(2026, 3, 2, 9, tzinfo=UTC)
>>> d = Decision(decision_id="d-1", decided_at=at, surface="offers",
...     ids=Identifiers(card_id="k-1"), policy="p", chosen=[])
>>> with tempfile.TemporaryDirectory() as folder:
...     fence = ErasureFence(folder, clock=lambda: at)
...     note = fence.begin({"card_id:k-1"})
...     with fence.checking() as erased:
...         erased(d)
True
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from features.decisions import Decision, owner_ids

log = logging.getLogger(__name__)

FENCE_FILE = "decisions.erasing.json"
KEEP_S = 600.0
LOCK_WAIT_S = 30.0  # a writer may hold the shared lock through one sink write


class FenceBusyError(TimeoutError):
    """The fence's exclusive lock could not be had in time (writers kept it shared)."""


@dataclass(frozen=True, slots=True)
class _Note:
    note_id: str
    digests: frozenset[str]
    since: datetime
    until: datetime | None  # None while the erasure runs
    pid: int  # the erasing process: an open note of a dead one stops covering

    def open_and_alive(self) -> bool:
        return self.until is None and _alive(self.pid)

    def end_of_cover(self, keep: timedelta) -> datetime | None:
        """Return the last decision time the note covers; ``None``: no end yet."""
        if self.until is not None:
            return self.until
        return None if _alive(self.pid) else self.since + keep


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


class ErasureFence:
    """Notes of erasures under way or just done, shared through ``directory``."""

    def __init__(self, directory: Path | str, *, clock: Callable[[], datetime] | None = None,
                 keep_s: float = KEEP_S, lock_wait_s: float = LOCK_WAIT_S) -> None:  # fmt: skip
        self.path = Path(directory) / FENCE_FILE
        self.clock = clock or (lambda: datetime.now(UTC))  # the decisions' clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.path.with_suffix(".lock")
        self._keep = timedelta(seconds=keep_s)
        self._lock_wait_s = lock_wait_s
        self._key: bytes | None = None

    def begin(self, targets: Iterable[str]) -> str:
        """Note an erasure of ``targets`` starting now; return the note's id.

        Raises :class:`FenceBusyError` when writers keep the lock for ``lock_wait_s``.
        """
        now = self.clock()
        note = _Note(uuid.uuid4().hex, frozenset(map(self._digest, targets)), now, None,
                     os.getpid())  # fmt: skip
        with self._locked(fcntl.LOCK_EX | fcntl.LOCK_NB, self._lock_wait_s):
            self._write([*self._live(self._read(), now), note])
        return note.note_id

    def end(self, note_id: str) -> None:
        """Close the note: decisions made from now on are the person's new records."""
        now = self.clock()
        with self._locked(fcntl.LOCK_EX | fcntl.LOCK_NB, self._lock_wait_s):
            notes = [
                _Note(n.note_id, n.digests, n.since, now, n.pid) if n.note_id == note_id else n
                for n in self._read()
            ]
            self._write(self._live(notes, now))

    @contextmanager
    def checking(self) -> Iterator[Callable[[Decision], bool]]:
        """Hold the shared lock; yield ``erased(decision)``. Write the batch inside.

        Notes past their time are then dropped from the file if the lock is free.
        """
        now = self.clock()
        with self._locked(fcntl.LOCK_SH, self._lock_wait_s):
            notes = self._read()
            live = self._live(notes, now)
            covers = [(n.digests, n.end_of_cover(self._keep)) for n in live]

            def erased(decision: Decision) -> bool:
                if not covers:
                    return False
                owners = {self._digest(owner) for owner in owner_ids(decision)}
                return any(
                    not digests.isdisjoint(owners) and (end is None or decision.decided_at <= end)
                    for digests, end in covers
                )

            yield erased
        if len(live) < len(notes):
            self._prune(now)

    def _prune(self, now: datetime) -> None:
        try:
            with self._locked(fcntl.LOCK_EX | fcntl.LOCK_NB, 0.0):
                self._write(self._live(self._read(), now))
        except FenceBusyError:
            pass  # an erasure or a writer has it: the next one prunes
        except OSError:  # the batch is written: a failed clean-up must not count against it
            log.warning("could not drop expired notes from %s", self.path, exc_info=True)

    def _live(self, notes: list[_Note], now: datetime) -> list[_Note]:
        # Closed notes last keep_s; open ones while their erasure runs, or keep_s if its
        # process died.
        return [n for n in notes if n.open_and_alive() or (n.until or n.since) >= now - self._keep]

    def _digest(self, target: str) -> str:
        if self._key is None:
            self._key = self._load_key()
        return hashlib.blake2b(target.encode(), key=self._key, digest_size=16).hexdigest()

    def _load_key(self) -> bytes:
        path = self.path.with_suffix(".key")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            for _ in range(100):  # another process is writing it
                key = path.read_bytes()
                if len(key) == 32:
                    return key
                time.sleep(0.01)
            message = f"{path}: not a 32-byte key; remove it (no erasure is running then)"
            raise ValueError(message) from None
        key = os.urandom(32)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        return key

    @contextmanager
    def _locked(self, mode: int, wait_s: float) -> Iterator[None]:
        # A new open file each time: flock locks belong to it, so threads of one process
        # exclude each other too.
        with self._lock_path.open("a") as lock:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(lock, mode)
                    break
                except BlockingIOError:
                    # Linux grants new shared locks while an exclusive one waits: poll.
                    if time.monotonic() > deadline:
                        message = f"{self._lock_path}: busy for {wait_s:g} s"
                        raise FenceBusyError(message) from None
                    time.sleep(0.001)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> list[_Note]:
        try:
            raw: list[dict[str, Any]] = orjson.loads(self.path.read_bytes())
            return [
                _Note(
                    n["note_id"], frozenset(n["digests"]), datetime.fromisoformat(n["since"]),
                    datetime.fromisoformat(n["until"]) if n["until"] else None, int(n["pid"]),
                )
                for n in raw
            ]  # fmt: skip
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError):
            # Written whole and synced, so only a hand edit breaks it: the next note
            # replaces it. Dropping every decision of the host instead is no answer.
            log.exception("erasure fence %s is unreadable; taken as empty", self.path)
            return []

    def _write(self, notes: list[_Note]) -> None:
        if not notes:
            self.path.unlink(missing_ok=True)
            return
        body = [
            {"note_id": n.note_id, "digests": sorted(n.digests), "since": n.since.isoformat(),
             "until": n.until.isoformat() if n.until else None, "pid": n.pid}
            for n in notes
        ]  # fmt: skip
        # Replaced whole, so a writer never reads half a file.
        partial = self.path.with_suffix(f".{os.getpid()}.tmp")
        try:
            with partial.open("wb") as handle:
                handle.write(orjson.dumps(body))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, self.path)
        finally:
            partial.unlink(missing_ok=True)
