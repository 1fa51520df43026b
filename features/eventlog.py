"""The embedded event log: one append-only JSONL file per topic, standing in for Kafka.

A line is one message value; its offset is its line number (from 0). Producers and
consumers use the same topic names as on Kafka, so switching is a setting. An erased
message becomes a blank line of the same length (:func:`erase_lines`): offsets and byte
positions stay where readers left them, as Kafka's compaction keeps offsets, and readers
skip blank lines.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     with EventLogWriter(d) as log:
...         log.append("events.consent", b'{"a": 1}')
...         log.append("events.consent", b'{"a": 2}')
...     list(read_topic(d, "events.consent", start=1))
[(1, b'{"a": 2}')]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from features.closing import Closing
from features.topics import EVENT_TOPICS
from features.validation import Rejection, validate

if TYPE_CHECKING:
    from datetime import datetime

    from features.events import Event


def topic_path(directory: Path | str, topic: str) -> Path:
    """Return the file that holds ``topic`` in an event-log directory."""
    return Path(directory) / f"{topic}.jsonl"


class EventLogWriter(Closing):
    """Append message values to per-topic files; values may not contain a newline."""

    def __init__(self, directory: Path | str, *, truncate: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._mode = "wb" if truncate else "ab"
        self._files: dict[str, BinaryIO] = {}
        self.counts: dict[str, int] = {}

    def append(self, topic: str, value: bytes) -> None:
        """Append one message value to ``topic``."""
        if b"\n" in value:
            message = f"event-log values must be single-line; got a newline in {value[:80]!r}"
            raise ValueError(message)
        handle = self._files.get(topic)
        if handle is None:
            handle = self._files[topic] = topic_path(self.directory, topic).open(self._mode)
        handle.write(value + b"\n")
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def flush(self) -> None:
        """Flush every open topic file."""
        for handle in self._files.values():
            handle.flush()

    def close(self) -> None:
        """Flush and close every topic file."""
        for handle in self._files.values():
            handle.close()
        self._files.clear()


def read_topic(directory: Path | str, topic: str, *, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, value)`` for each message of ``topic`` from offset ``start`` on.

    Erased messages (blank lines) are skipped; they keep their offsets.
    """
    path = topic_path(directory, topic)
    if not path.exists():
        return
    with path.open("rb") as handle:
        for offset, line in enumerate(handle):
            if offset >= start and not is_erased(line):
                yield offset, line.rstrip(b"\n")


def is_erased(line: bytes) -> bool:
    r"""Whether a log line is blank: erased (or never written), not a message.

    >>> is_erased(b"   \n"), is_erased(b'{"a": 1}')
    (True, False)
    """
    return not line.strip()


def load_events(
    directory: Path | str,
    *,
    key: bytes,
    max_bytes: int = 64 * 1024,
    before: datetime | None = None,
) -> list[Event]:
    """Return the valid events of a file event log (topic by topic, in log order).

    With ``before``, only events whose event time is strictly before it.
    """
    events: list[Event] = []
    for topic in EVENT_TOPICS:
        raws = (raw for _offset, raw in read_topic(directory, topic))
        events.extend(valid_events(raws, key=key, max_bytes=max_bytes, before=before))
    return events


def valid_events(
    raws: Iterable[bytes], *, key: bytes, max_bytes: int, before: datetime | None = None
) -> Iterator[Event]:
    """Yield the events among raw records that pass validation (and are before ``before``)."""
    for raw in raws:
        result = validate(raw, key=key, max_bytes=max_bytes)
        if isinstance(result, Rejection):
            continue
        if before is None or result.event_time < before:
            yield result


def erase_lines(path: Path | str, drop: Callable[[bytes], bool]) -> int:
    r"""Blank the lines ``drop`` picks, in place; return how many.

    How erasure reaches the embedded logs (the decision log, training examples, journey
    logs). Each erased line is overwritten with spaces up to its newline, so the file
    keeps its length, line numbers and byte positions: processes appending to it (other
    serving workers, a running flow) and readers part-way through it go on unaffected.
    A line still being written (no newline yet) is left for a later erasure.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     log = Path(d) / "t.jsonl"
    ...     _ = log.write_bytes(b'{"who": "a"}\n{"who": "b"}\n')
    ...     erase_lines(log, lambda line: b'"a"' in line), log.read_bytes()
    (1, b'            \n{"who": "b"}\n')
    """
    path = Path(path)
    if not path.exists():
        return 0
    spans: list[tuple[int, int]] = []
    with path.open("r+b") as handle:
        position = 0
        for line in handle:
            if line.endswith(b"\n") and not is_erased(line) and drop(line.rstrip(b"\n")):
                spans.append((position, len(line) - 1))
            position += len(line)
        if spans:
            fd = handle.fileno()
            for start, length in spans:
                os.pwrite(fd, b" " * length, start)
            os.fsync(fd)
    return len(spans)
