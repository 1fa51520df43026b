"""Where the flows read from: the file event log or Kafka, as one message shape.

Both sources are Bytewax ``FixedPartitionedSource``s whose snapshot is the next offset to
read, so a restart with recovery resumes right after the last item processed (the
framework, not the broker, owns the position).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING

from features.eventlog import topic_path


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
                break
            self._position += len(line)
            messages.append(Message(self._topic, 0, self._offset, line.rstrip(b"\n")))
            self._offset += 1
        if not messages:
            raise StopIteration
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

