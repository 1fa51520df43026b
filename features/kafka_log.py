"""Reading Kafka topics whole: the batch side of the log (training, erasure, reports).

:func:`scan_topic` reads a topic from its start to its end as it stood when the scan began,
with a consumer of its own that commits nothing. :func:`load_kafka_events` and
:func:`read_kafka_decisions` are the Kafka twins of the file event log's
:func:`features.eventlog.load_events` and the decision log's reader.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import KafkaException

from features.decisions import Decision, decode_decision
from features.eventlog import valid_events
from features.events import Event
from features.topics import DECISIONS, EVENT_TOPICS

# What reading or writing Kafka raises when the broker fails: the waits bounded here, and
# librdkafka's own errors.
KAFKA_ERRORS: tuple[type[Exception], ...] = (TimeoutError, RuntimeError, KafkaException)

# How long the broker may hold a fetch that finds nothing new, for readers that stop at a
# partition's end: its end is known only when such a fetch returns (Kafka's default, 500
# ms, made every read of a topic with nothing new take half a second per partition).
READ_FETCH_WAIT_MS = 20


class OffsetOutOfRangeError(RuntimeError):
    """A consumer was placed past the end of a partition (the topic was created again?)."""

    def __init__(self, topic: str, partition: int, detail: str) -> None:
        super().__init__(f"reading {topic!r} partition {partition}: {detail}")
        self.partition = partition


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """One record read back from a Kafka topic; ``value`` is ``None`` for a tombstone."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def scan_topic(bootstrap: str, topic: str, timeout: float = 30.0) -> Iterator[TopicRecord]:
    """Yield every record of ``topic`` from its start to its end when the scan began.

    A consumer of its own (a fresh group, nothing committed) reads each partition until
    the broker reports its end; records are in offset order within a partition. A topic
    that does not exist yields nothing. Raises ``TimeoutError`` when no record and no end
    arrive for ``timeout`` seconds.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"omnioffer-scan-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": READ_FETCH_WAIT_MS,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return
        partitions = sorted(metadata.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        yield from read_to_end(consumer, topic, partitions, timeout)
    finally:
        consumer.close()


def read_to_end(
    consumer: Any, topic: str, partitions: Iterable[int], timeout: float
) -> Iterator[TopicRecord]:
    """Yield what an assigned consumer reads of ``topic`` until each partition ends.

    The consumer needs ``enable.partition.eof``. Raises ``TimeoutError`` when no record
    and no end arrive for ``timeout`` seconds, :class:`OffsetOutOfRangeError` when a
    partition's position is past its end (with ``auto.offset.reset=error``), and
    ``RuntimeError`` on any other error the consumer reports.
    """
    from confluent_kafka import KafkaError

    pending = set(partitions)
    quiet_since = time.monotonic()
    while pending:
        # consume() waits out its timeout unless the batch fills: a short one keeps a read
        # that finds little (an incremental catch-up) from costing half a second a call.
        messages = consumer.consume(500, 0.05)
        if messages:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > timeout:
            message = f"reading {topic!r}: no answer for {timeout:g} s"
            raise TimeoutError(message)
        for m in messages:
            error = m.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(m.partition())
                    continue
                if error.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                    raise OffsetOutOfRangeError(topic, m.partition(), str(error))
                message = f"reading {topic!r}: {error}"
                raise RuntimeError(message)
            yield TopicRecord(m.partition(), m.offset(), m.key(), m.value())


def read_kafka_decisions(
    bootstrap: str,
    topic: str = DECISIONS,
    timeout: float = 30.0,
    select: Callable[[Decision], bool] | None = None,
) -> list[Decision]:
    """Return the decisions on ``topic`` that no later tombstone erased, by decision time.

    Unreadable records are skipped. Records are decoded as they arrive, so only live
    decisions are held (a tombstone drops what its key held so far), and with ``select``
    only those it picks (a time window, say).
    """
    by_key: dict[bytes | None, list[Decision]] = {}
    for record in scan_topic(bootstrap, topic, timeout):
        if record.value is None:
            by_key.pop(record.key, None)
            continue
        try:
            decision = decode_decision(record.value)
        except ValueError:
            continue
        if select is None or select(decision):
            by_key.setdefault(record.key, []).append(decision)
    return sorted((d for held in by_key.values() for d in held), key=lambda d: d.decided_at)


def load_kafka_events(
    bootstrap: str,
    *,
    key: bytes,
    max_bytes: int = 64 * 1024,
    before: datetime | None = None,
    timeout: float = 30.0,
) -> list[Event]:
    """Return the valid events on the event topics, by topic, partition and offset.

    As :func:`features.eventlog.load_events` does for files: the same validation, the same
    contact hashing. The order is the same on every read (a scan mixes partitions as
    fetches arrive, so records are put back in order); with one partition per topic it is
    the order the records were written in, the files' order.
    """
    events: list[Event] = []
    for topic in EVENT_TOPICS:
        records = sorted(
            ((r.partition, r.offset, r.value) for r in scan_topic(bootstrap, topic, timeout)
             if r.value is not None),
            key=lambda r: (r[0], r[1]),
        )  # fmt: skip
        raws = (value for _partition, _offset, value in records)
        events.extend(valid_events(raws, key=key, max_bytes=max_bytes, before=before))
    return events
