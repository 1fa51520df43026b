"""Where the flows read from: the file event log or Kafka, as one message shape.

Both sources are Bytewax ``FixedPartitionedSource``s whose snapshot is the next offset to
read, so a restart with recovery resumes right after the last item processed (the
framework, not the broker, owns the position).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka import KafkaError as ClientError

from features.eventlog import is_erased, topic_path


@dataclass(slots=True)
class Message:
    """One message as the flows see it, whatever it was read from."""

    topic: str
    partition: int
    offset: int
    value: bytes
    produced_ms: int = 0


class _FilePartition(StatefulSourcePartition[Message, tuple[int, int]]):
    """Reads one topic file; the snapshot is ``(next offset, byte position)``."""

    def __init__(self, path: Path, topic: str, resume: tuple[int, int] | None, batch: int):
        self._topic = topic
        self._offset, position = resume or (0, 0)
        self._batch = batch
        self._handle: BinaryIO | None = None
        self._path = path
        self._position = position

    def next_batch(self) -> list[Message]:
        if self._handle is None:
            if not self._path.exists():
                raise StopIteration
            self._handle = self._path.open("rb")
            self._handle.seek(self._position)
        messages = []
        for _ in range(self._batch):
            line = self._handle.readline()
            if not line:
                if not messages:
                    raise StopIteration
                break
            self._position += len(line)
            if not is_erased(line):
                messages.append(Message(self._topic, 0, self._offset, line.rstrip(b"\n")))
            self._offset += 1
        return messages

    def snapshot(self) -> tuple[int, int]:
        return self._offset, self._position

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


class EventLogSource(FixedPartitionedSource[Message, tuple[int, int]]):
    """Read topics of the embedded file event log, one partition per topic file.

    Reading ends at the end of each file (a bounded run, like a batch replay).
    """

    def __init__(self, directory: Path | str, topics: Sequence[str], batch_size: int = 1000):
        self.directory = Path(directory)
        self.topics = list(topics)
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return list(self.topics)

    def build_part(
        self, step_id: str, for_part: str, resume_state: tuple[int, int] | None
    ) -> _FilePartition:
        path = topic_path(self.directory, for_part)
        return _FilePartition(path, for_part, resume_state, self.batch_size)


_TIME_FIELD = b'"event_time":"'
_UNKNOWN_TIME = float("-inf")


def line_time(line: bytes) -> float:
    """Return the epoch seconds of a log line's ``event_time``; -inf when it has none.

    A cheap look at the raw line (no JSON parse): lines without a readable time are
    malformed ones, which go first and end in the dead-letter anyway.
    """
    start = line.find(_TIME_FIELD)
    if start < 0:
        return _UNKNOWN_TIME
    start += len(_TIME_FIELD)
    end = line.find(b'"', start)
    try:
        return datetime.fromisoformat(line[start:end].decode()).timestamp()
    except (ValueError, UnicodeDecodeError):
        return _UNKNOWN_TIME


class _MergedPartition(StatefulSourcePartition[Message, dict[str, tuple[int, int]]]):
    """Reads every topic file in event-time order; the snapshot is each topic's next line.

    One line per topic is held in a heap; a topic's snapshot position is that of its held
    line (read but not emitted), so a resume reads it again. A batch ends at ``batch``
    lines or when it would span more than ``max_span_s`` of event time, whichever comes
    first: downstream, a batch's span is how far its events may overtake each other.
    """

    def __init__(
        self,
        directory: Path,
        topics: Sequence[str],
        resume: dict[str, tuple[int, int]] | None,
        batch: int,
        max_span_s: float,
    ) -> None:
        self._batch = batch
        self._max_span_s = max_span_s
        self._next: dict[str, tuple[int, int]] = dict(resume or {})
        self._handles: dict[str, BinaryIO] = {}
        self._heap: list[tuple[float, int, str, int, int, bytes]] = []
        for order, topic in enumerate(topics):
            path = topic_path(directory, topic)
            offset, position = self._next.setdefault(topic, (0, 0))
            if not path.exists():
                continue
            handle = self._handles[topic] = path.open("rb")
            handle.seek(position)
            self._push(topic, order, offset, position)

    def _push(self, topic: str, order: int, offset: int, position: int) -> None:
        line = self._handles[topic].readline()
        while line and is_erased(line):  # an erased message keeps its offset, nothing else
            offset, position = offset + 1, position + len(line)
            self._next[topic] = (offset, position)
            line = self._handles[topic].readline()
        if line:
            heapq.heappush(self._heap, (line_time(line), order, topic, offset, position, line))

    def next_batch(self) -> list[Message]:
        messages: list[Message] = []
        first = _UNKNOWN_TIME
        while self._heap and len(messages) < self._batch:
            ts = self._heap[0][0]
            if first == _UNKNOWN_TIME:
                first = ts
            elif messages and ts - first > self._max_span_s:
                break
            _ts, order, topic, offset, position, line = heapq.heappop(self._heap)
            messages.append(Message(topic, 0, offset, line.rstrip(b"\n")))
            after = position + len(line)
            self._next[topic] = (offset + 1, after)
            self._push(topic, order, offset + 1, after)
        if not messages:
            raise StopIteration
        return messages

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return dict(self._next)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()


class MergedEventLogSource(FixedPartitionedSource[Message, dict[str, tuple[int, int]]]):
    """Read all topics of the file event log as one stream in event-time order.

    For event-time consumers (journeys): reading each topic file on its own lets one
    topic run days ahead of another in event time, which no allowed lateness covers.
    Each topic file must be in event-time order up to the noise of late events (the
    simulator writes them so, and so does a log appended as events happen).
    """

    def __init__(
        self,
        directory: Path | str,
        topics: Sequence[str],
        batch_size: int = 1000,
        max_span_s: float = 3600.0,
    ):
        self.directory = Path(directory)
        self.topics = list(topics)
        self.batch_size = batch_size
        self.max_span_s = max_span_s

    def list_parts(self) -> list[str]:
        return ["merged"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: dict[str, tuple[int, int]] | None
    ) -> _MergedPartition:
        return _MergedPartition(
            self.directory, self.topics, resume_state, self.batch_size, self.max_span_s
        )


class _MergedKafkaPartition(StatefulSourcePartition[Message, dict[str, int]]):
    """Reads every partition of the topics with one consumer, emitting in event-time order.

    A message is emitted once every partition either has a message buffered or is known
    to be at its end (partition EOF), or has been silent for ``idle_s``; so a backlog is
    read in step across topics instead of one topic running days ahead. The snapshot is
    the next offset of each partition.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        resume: dict[str, int] | None,
        *,
        batch: int,
        tail: bool,
        fetch_wait_ms: int,
        idle_s: float,
        max_span_s: float = 3600.0,
    ) -> None:
        self._batch = batch
        self._max_span_s = max_span_s
        self._tail = tail
        self._idle_s = idle_s
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "omnioffer-merged-reader",  # offsets live in snapshots
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": fetch_wait_ms,
            }
        )
        metadata = self._consumer.list_topics(timeout=10)
        resume = resume or {}
        assignment = []
        for topic in topics:
            for partition in sorted(metadata.topics[topic].partitions):
                offset = resume.get(f"{topic}/{partition}", OFFSET_BEGINNING)
                assignment.append(TopicPartition(topic, partition, offset))
        self._consumer.assign(assignment)
        self._keys = [f"{tp.topic}/{tp.partition}" for tp in assignment]
        self._next = {f"{tp.topic}/{tp.partition}": tp.offset for tp in assignment}
        self._buffers: dict[str, list[tuple[float, int, Message]]] = {k: [] for k in self._keys}
        self._at_end = dict.fromkeys(self._keys, False)
        self._heard = dict.fromkeys(self._keys, time.monotonic())

    def _poll(self) -> None:
        now = time.monotonic()
        for msg in self._consumer.consume(num_messages=self._batch, timeout=0.05):
            key = f"{msg.topic()}/{msg.partition()}"
            self._heard[key] = now
            error = msg.error()
            if error is not None:
                if error.code() == ClientError._PARTITION_EOF:
                    self._at_end[key] = True
                continue
            self._at_end[key] = False
            value = msg.value() or b""
            stamp = msg.timestamp()
            produced = stamp[1] if stamp and stamp[0] else int(time.time() * 1000)
            message = Message(msg.topic(), msg.partition(), msg.offset(), value, produced)
            # Within a partition, keep the log's order: time first, offset to break ties.
            heapq.heappush(self._buffers[key], (line_time(value), msg.offset(), message))

    def _blocked(self, now: float) -> bool:
        """Whether some partition may still hold earlier events than those buffered."""
        return any(
            not self._buffers[k] and not self._at_end[k] and now - self._heard[k] < self._idle_s
            for k in self._keys
        )

    def next_batch(self) -> list[Message]:
        self._poll()
        out: list[Message] = []
        now = time.monotonic()
        first = _UNKNOWN_TIME
        while len(out) < self._batch and not self._blocked(now):
            ready = [(buf[0][0], k) for k, buf in self._buffers.items() if buf]
            if not ready:
                break
            ts, key = min(ready)
            if first == _UNKNOWN_TIME:
                first = ts
            elif ts - first > self._max_span_s:
                break  # a batch's span is how far its events may overtake each other
            _t, offset, message = heapq.heappop(self._buffers[key])
            self._next[key] = max(self._next.get(key, 0), offset + 1)
            out.append(message)
        done = all(self._at_end.values()) and not any(self._buffers.values())
        if not out and done and not self._tail:
            raise StopIteration
        return out

    def snapshot(self) -> dict[str, int]:
        # Resume at the earliest message not yet emitted in each partition.
        state = dict(self._next)
        for key, buf in self._buffers.items():
            if buf:
                state[key] = min(offset for _t, offset, _m in buf)
        return state

    def close(self) -> None:
        self._consumer.close()


class MergedKafkaSource(FixedPartitionedSource[Message, dict[str, int]]):
    """Read all partitions of the topics as one stream in event-time order (one consumer).

    For event-time consumers replaying a backlog (journeys): Bytewax's Kafka source reads
    each partition on its own, so one topic can run far ahead of another in event time.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        *,
        batch_size: int = 1000,
        tail: bool = True,
        fetch_wait_ms: int = 10,
        idle_s: float = 1.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.batch_size = batch_size
        self.tail = tail
        self.fetch_wait_ms = fetch_wait_ms
        self.idle_s = idle_s

    def list_parts(self) -> list[str]:
        return ["merged"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: dict[str, int] | None
    ) -> _MergedKafkaPartition:
        return _MergedKafkaPartition(
            self.bootstrap, self.topics, resume_state, batch=self.batch_size, tail=self.tail,
            fetch_wait_ms=self.fetch_wait_ms, idle_s=self.idle_s,
        )  # fmt: skip


def kafka_source(
    bootstrap: str,
    topics: Sequence[str],
    *,
    tail: bool = True,
    batch_size: int = 1000,
    fetch_wait_ms: int = 10,
) -> KafkaSource:
    """Return Bytewax's Kafka source over ``topics``; offsets live in the recovery snapshots.

    ``fetch_wait_ms`` bounds how long the broker may hold a fetch: some brokers (Tansu)
    hold it that long even when data arrives, which adds straight to freshness.
    """
    return KafkaSource(
        [bootstrap],
        list(topics),
        tail=tail,
        starting_offset=OFFSET_BEGINNING,
        add_config={"fetch.wait.max.ms": str(fetch_wait_ms)},
        batch_size=batch_size,
        raise_on_errors=False,
    )


def from_kafka(
    item: KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None],
) -> Message:
    """Convert a Kafka source item (message or error) to a :class:`Message`."""
    msg = item.msg if isinstance(item, KafkaError) else item
    value = msg.value if isinstance(item, KafkaSourceMessage) else b""
    produced = msg.timestamp[1] if msg.timestamp and msg.timestamp[0] else int(time.time() * 1000)
    return Message(msg.topic or "", msg.partition or 0, msg.offset or 0, value or b"", produced)
