"""Queued erasure of people's decisions on Kafka, by an index of whose records are where.

Erasing a person from the Kafka ``decisions`` topic means tombstoning the keys of their
records; the topic is keyed by decision id, so finding those keys is a read of the whole
topic (a day at 500 requests/s takes about an hour). With
``OMNIOFFER_DECISION_ERASURE=queued`` the API does not wait for that: ``DELETE
/v1/customers/{id}`` puts an :class:`ErasureJob` naming the person's identifiers on the
``decisions.erasures`` topic (after their decisions so far are on the broker) and erases
the rest at once. :class:`DecisionEraser` (``omnioffer eraser``) reads the jobs after its
committed offsets, brings its index of the topic up to the topic's end
(:class:`serving.decision_index.OwnerIndex`: only the records added since its last pass
are read), tombstones every record the jobs' people own, and only then commits: a pass
that fails, or an eraser that stops, leaves the jobs to the next one. One eraser runs at
a time (it reads every partition of the jobs topic itself, and owns the index file).

>>> job = ErasureJob("er-1", datetime(2026, 3, 2, tzinfo=UTC), ["customer_id:cu-1"])
>>> decode_job(encode_job(job)) == job
True
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from features.events import AwareTime
from features.kafka_log import KAFKA_ERRORS, READ_FETCH_WAIT_MS, read_to_end, scan_topic
from features.topics import DECISION_ERASURES, DECISION_ERASURES_DONE, DECISIONS
from serving.decision_index import CatchUp, OwnerIndex, catch_up
from serving.decision_log import KafkaSink

log = logging.getLogger(__name__)

GROUP = "omnioffer-decision-eraser"

# What a failed pass raises: the broker, or the index file (locked, full, damaged).
PASS_ERRORS = (*KAFKA_ERRORS, sqlite3.Error)


class ErasureJob(msgspec.Struct, frozen=True, array_like=False):
    """Erase the decisions of the person with these identifiers (profile and fragment ids)."""

    erasure_id: str
    requested_at: AwareTime
    targets: list[str]


class ErasureDone(msgspec.Struct, frozen=True):
    """What a pass did with one job: the live decisions of the person it tombstoned."""

    erasure_id: str
    requested_at: AwareTime
    done_at: AwareTime
    decisions: int


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ErasureJob)
_done_decoder = msgspec.json.Decoder(ErasureDone)


def encode_job(job: ErasureJob) -> bytes:
    """Return a job as the bytes of its record."""
    return _encoder.encode(job)


def decode_job(raw: bytes) -> ErasureJob:
    """Return the job of a record; ``msgspec.ValidationError`` if it is not one."""
    return _decoder.decode(raw)


@dataclass(frozen=True, slots=True)
class Erased:
    """One job done: how many live decisions of the person were tombstoned."""

    job: ErasureJob
    decisions: int


class DecisionEraser:
    """Do the queued erasures: read new jobs, index new decisions, tombstone, commit.

    ``index_path`` is the SQLite file of the index (created, then read on from where it
    stopped; a new file means one full read of the topic). ``timeout`` bounds each wait on
    the broker (a long read takes longer: the bound is on silence, not on the pass).
    ``last_catch_up`` says what the last pass read into the index.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        index_path: Path | str,
        topic: str = DECISIONS,
        jobs_topic: str = DECISION_ERASURES,
        done_topic: str = DECISION_ERASURES_DONE,
        group: str = GROUP,
        timeout: float = 30.0,
        grace_s: float = 0.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.grace_s = grace_s
        self.index_path = Path(index_path)
        self.last_catch_up = CatchUp(0, 0, 0)
        self.topic = topic
        self.jobs_topic = jobs_topic
        self.done_topic = done_topic
        self.group = group
        self.timeout = timeout

    def _consumer(self) -> tuple[object, list[object]]:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": self.group,
            "enable.auto.commit": False, "enable.partition.eof": True,
            "fetch.wait.max.ms": READ_FETCH_WAIT_MS,
            "auto.offset.reset": "earliest",
        })  # fmt: skip
        topics = consumer.list_topics(timeout=self.timeout).topics
        metadata = topics.get(self.jobs_topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return consumer, []
        if self.done_topic not in topics:
            consumer.close()
            # Left to auto-creation it would expire with the broker's default retention.
            message = (f"topic {self.done_topic!r} does not exist: create the topics with "
                       "`omnioffer topics` (it keeps each erasure's result 30 days)")  # fmt: skip
            raise RuntimeError(message)
        wanted = [TopicPartition(self.jobs_topic, p) for p in sorted(metadata.partitions)]
        # assign(), not subscribe(): no group membership to wait for; the offsets committed
        # under the group say where the last pass ended.
        start = consumer.committed(wanted, timeout=self.timeout)
        for tp in start:
            if tp.offset < 0:
                tp.offset = OFFSET_BEGINNING
        consumer.assign(start)
        return consumer, start

    def _pending(self, consumer: object, partitions: list[object]
                 ) -> tuple[list[ErasureJob], dict[int, int]]:  # fmt: skip
        """Return the jobs old enough to do, and per partition where to commit after them.

        A job younger than ``grace_s`` waits for the next pass, and so does every job
        after it in its partition: another serving worker may still be delivering one of
        the person's decisions (its buffer, the producer's retries), which a pass now
        would miss.
        """
        jobs: list[ErasureJob] = []
        ends: dict[int, int] = {}
        waiting: set[int] = set()
        cutoff = datetime.now(UTC) - timedelta(seconds=self.grace_s)
        numbers = [tp.partition for tp in partitions]  # type: ignore[attr-defined]
        for record in read_to_end(consumer, self.jobs_topic, numbers, self.timeout):
            if record.partition in waiting:
                continue
            try:
                job = decode_job(record.value)  # type: ignore[arg-type]
            except (msgspec.DecodeError, TypeError) as problem:  # not a job: skip it
                log.error("skipping a record of %s at %d/%d that is not a job: %s",
                          self.jobs_topic, record.partition, record.offset, problem)  # fmt: skip
            else:
                if job.requested_at > cutoff:
                    waiting.add(record.partition)
                    continue
                jobs.append(job)
            ends[record.partition] = record.offset + 1
        return jobs, ends

    def _recorded(self) -> set[bytes]:
        """Return the ids of the jobs whose result is on the results topic already."""
        return {r.key for r in scan_topic(self.bootstrap, self.done_topic, self.timeout)
                if r.key is not None and r.value is not None}  # fmt: skip

    def run_once(self) -> list[Erased]:
        """Erase every job queued since the last pass; return what each removed.

        Raises one of :data:`PASS_ERRORS` when the broker fails; nothing is committed
        then, so the next pass does these jobs again (erasing is idempotent).
        """
        from confluent_kafka import TopicPartition

        consumer, partitions = self._consumer()
        index = None
        try:
            index = OwnerIndex(self.index_path, self.topic)
            jobs, ends = self._pending(consumer, partitions) if partitions else ([], {})
            # After the jobs: each job was written once its person's decisions were on
            # the broker, so the index now holds them. Every pass reads on, jobs or not,
            # so a job's pass has only the last interval's records to read.
            self.last_catch_up = catch_up(index, self.bootstrap, self.topic,
                                          timeout=self.timeout)  # fmt: skip
            found = [index.owned(job.targets) for job in jobs]
            counts = [index.count_once(job.erasure_id, len(owned))
                      for job, owned in zip(jobs, found, strict=True)]  # fmt: skip
            if jobs:
                self._erase(index, jobs, found, counts)
            if ends:  # records that were not jobs are passed over too
                offsets = [TopicPartition(self.jobs_topic, p, end) for p, end in ends.items()]
                consumer.commit(offsets=offsets, asynchronous=False)  # type: ignore[attr-defined]
            index.done_with(job.erasure_id for job in jobs)
            return [Erased(job, n) for job, n in zip(jobs, counts, strict=True)]
        finally:
            if index is not None:
                index.close()
            consumer.close()  # type: ignore[attr-defined]

    def _erase(self, index: OwnerIndex, jobs: list[ErasureJob],
               found: list[dict[bytes, tuple[int, int]]], counts: list[int]) -> None:  # fmt: skip
        doomed = {key: partition for owned in found for key, (partition, _) in owned.items()}
        sink = KafkaSink(self.bootstrap, topic=self.topic, timeout=self.timeout)
        try:
            sink.tombstone(doomed)
            # Results before forgetting and before the commit: a pass cut short after the
            # tombstones does the jobs again from an index that still has their records
            # (tombstoning twice is harmless), and the first result recorded is kept.
            recorded = self._recorded()
            now = datetime.now(UTC)
            for job, count in zip(jobs, counts, strict=True):
                key = job.erasure_id.encode()
                if key not in recorded:
                    done = ErasureDone(job.erasure_id, job.requested_at, now, count)
                    sink.deliver(self.done_topic, key, _encoder.encode(done))
            index.forget(doomed)
        finally:
            sink.close()

    def run(self, *, every_s: float, stop: Callable[[], bool],
            on_pass: Callable[[list[Erased], float], None] | None = None) -> None:  # fmt: skip
        """Make a pass every ``every_s`` seconds until ``stop()``; a failed pass is retried."""
        while not stop():
            started = time.monotonic()
            try:
                done = self.run_once()
            except PASS_ERRORS as error:
                log.error("erasure pass failed, the jobs stay queued: %s", error)
            else:
                if on_pass is not None:
                    on_pass(done, time.monotonic() - started)
            while not stop() and time.monotonic() - started < every_s:
                time.sleep(min(0.5, every_s))


def erasure_status(
    bootstrap: str,
    erasure_id: str,
    *,
    timeout: float = 30.0,
    jobs_topic: str = DECISION_ERASURES,
    done_topic: str = DECISION_ERASURES_DONE,
) -> dict[str, object] | None:
    """Return a queued erasure's state (``done`` with its count, or ``queued``), or ``None``.

    Reads the results topic, then the jobs topic, whole (both hold 30 days of erasures:
    small records, read in about a second per ten thousand).
    """
    key = erasure_id.encode()
    done = None
    for record in scan_topic(bootstrap, done_topic, timeout):
        if record.key == key and record.value is not None:
            try:
                done = _done_decoder.decode(record.value)
            except msgspec.DecodeError as problem:
                log.error("skipping a record of %s that is not a result: %s", done_topic,
                          problem)  # fmt: skip
    if done is not None:
        return {"erasure_id": erasure_id, "status": "done", "decisions": done.decisions,
                "requested_at": done.requested_at.isoformat(),
                "done_at": done.done_at.isoformat()}  # fmt: skip
    for record in scan_topic(bootstrap, jobs_topic, timeout):
        if record.key == key and record.value is not None:
            try:
                job = decode_job(record.value)
            except msgspec.DecodeError as problem:
                log.error("skipping a record of %s that is not a job: %s", jobs_topic, problem)
                continue
            return {"erasure_id": erasure_id, "status": "queued",
                    "requested_at": job.requested_at.isoformat()}  # fmt: skip
    return None


def new_job(erasure_id: str, targets: set[str], now: datetime | None = None) -> ErasureJob:
    """Return the job erasing the person with ``targets``."""
    return ErasureJob(erasure_id, now or datetime.now(UTC), sorted(targets))
