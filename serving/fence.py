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

The notes name the erased identifiers (as the decision records did) and are kept
``keep_s`` (10 minutes) after the erasure ends, no longer: long enough for every buffered
decision to be written. They live in a file of the host's event-log directory, so they
reach the worker processes of one host, not other hosts.

>>> import tempfile
>>> from datetime import UTC, datetime
>>> from features.decisions import Decision, Identifiers
>>> at = datetime(2026, 3, 2, 9, tzinfo=UTC)
>>> d = Decision(decision_id="d-1", decided_at=at, surface="offers",
...     ids=Identifiers(card_id="k-1"), policy="p", chosen=[])
>>> with tempfile.TemporaryDirectory() as folder:
...     fence = ErasureFence(folder)
...     note = fence.begin({"card_id:k-1"}, at)
...     with fence.checking() as erased:
...         erased(d)
(True,)
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from features.decisions import Decision, owner_ids

FENCE_FILE = "decisions.erasing.json"
KEEP_S = 600.0


@dataclass(frozen=True, slots=True)
class _Note:
    note_id: str
    targets: frozenset[str]
    since: datetime
    until: datetime | None  # None while the erasure runs

    def covers(self, decision: Decision, keep: timedelta) -> bool:
        # Decided after the erasure: a new record, not a trace. A note never closed (its
        # process died mid-erasure) stops covering after ``keep``.
        until = self.until if self.until is not None else self.since + keep
        if decision.decided_at > until:
            return False
        return not self.targets.isdisjoint(owner_ids(decision))


class ErasureFence:
    """Notes of erasures under way or just done, shared through ``directory``."""

    def __init__(self, directory: Path | str, keep_s: float = KEEP_S) -> None:
        self.path = Path(directory) / FENCE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.path.with_suffix(".lock")
        self._keep = timedelta(seconds=keep_s)
        self._seen: tuple[int, int, int] | None = None  # the file's (inode, size, mtime)
        self._notes: list[_Note] = []

    def begin(self, targets: Iterable[str], now: datetime) -> str:
        """Note an erasure of ``targets`` starting ``now``; return the note's id."""
        note = _Note(uuid.uuid4().hex, frozenset(targets), now, None)
        with self._locked(fcntl.LOCK_EX):
            self._write([*self._live(self._read(), now), note])
        return note.note_id

    def end(self, note_id: str, now: datetime) -> None:
        """Close the note: decisions made after ``now`` are the person's new records."""
        with self._locked(fcntl.LOCK_EX):
            notes = [
                _Note(n.note_id, n.targets, n.since, now) if n.note_id == note_id else n
                for n in self._read()
            ]
            self._write(self._live(notes, now))

    @contextmanager
    def checking(self) -> Iterator[Callable[[Decision], bool]]:
        """Hold the shared lock; yield ``erased(decision)``. Write the batch inside."""
        with self._locked(fcntl.LOCK_SH):
            notes = self._current()
            keep = self._keep
            yield lambda decision: any(note.covers(decision, keep) for note in notes)

    @contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        with self._lock_path.open("a") as lock:
            fcntl.flock(lock, mode)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _current(self) -> list[_Note]:
        """Return the notes, read again only when the file changed (one stat a batch)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self._notes = None, []
            return self._notes
        seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if seen != self._seen:
            self._notes, self._seen = self._read(), seen
        return self._notes

    def _live(self, notes: list[_Note], now: datetime) -> list[_Note]:
        # A note left open by a process that died mid-erasure goes too, after keep_s.
        return [n for n in notes if (n.until or n.since) >= now - self._keep]

    def _read(self) -> list[_Note]:
        try:
            raw: list[dict[str, Any]] = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []
        return [
            _Note(
                n["note_id"],
                frozenset(n["targets"]),
                datetime.fromisoformat(n["since"]),
                datetime.fromisoformat(n["until"]) if n["until"] else None,
            )
            for n in raw
        ]

    def _write(self, notes: list[_Note]) -> None:
        body = [
            {"note_id": n.note_id, "targets": sorted(n.targets), "since": n.since.isoformat(),
             "until": n.until.isoformat() if n.until else None}
            for n in notes
        ]  # fmt: skip
        # Replaced whole, so a writer never reads half a file.
        partial = self.path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(orjson.dumps(body))
        os.replace(partial, self.path)
