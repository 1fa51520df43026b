"""The decision log: every decision to the ``decisions`` topic, off the request path.

Requests hand :class:`~features.decisions.Decision` records (or functions building them)
to :meth:`DecisionLog.submit`, which never blocks: a bounded buffer feeds one writer thread,
and a full buffer drops the record and counts it
(``omnioffer_serve_decision_log_total{outcome="dropped"}``). A record given as a function
is built (and encoded) by :meth:`DecisionLog.build_deferred`, which the API calls once a
response is sent, or by the writer if it gets there first. The writer sends to a
:class:`Sink`: :class:`FileSink` appends to the embedded event log
(``<event log dir>/decisions.jsonl``), :class:`KafkaSink` produces to Kafka keyed by the
decision id. Erasure (:meth:`DecisionLog.erase`) drains the queue first, then removes a
person's records: the file is rewritten without them; on Kafka each is tombstoned, and the
topic's compaction removes it (:meth:`KafkaSink.erase`). Erasures asked while one runs
share the next pass over the sink. With an :class:`~serving.fence.ErasureFence`, the writer
drops the decisions of a person another worker process is erasing.

>>> import tempfile
>>> from datetime import UTC, datetime
>>> from features.decisions import Choice, Decision, Identifiers
>>> d = Decision(decision_id="d-1", decided_at=datetime(2026, 3, 2, tzinfo=UTC),
...     surface="offers", ids=Identifiers(anonymous_id="a-1"), policy="p",
...     chosen=[Choice(offer_id="of-1", channel="web", propensity=1.0)])
>>> with tempfile.TemporaryDirectory() as folder:
...     log = DecisionLog(FileSink(folder))
...     log.submit(d), log.flush(), log.close()
...     [r.decision_id for r in read_decisions(folder)]
(True, True, None)
['d-1']
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

from features.decisions import (
    Decision,
    DecisionOwner,
    Erasure,
    decision_key,
    decode_decision,
    decode_owner,
    encode_decision,
)
from features.eventlog import erase_lines, topic_path
from features.kafka_log import scan_topic
from features.topics import DECISIONS
from serving.fence import ErasureFence

log = logging.getLogger(__name__)
# How long a decision record may take to reach the broker (the producer's retries
# included) before it counts as failed.
DELIVERY_TIMEOUT_S = 300

Record = tuple[str, bytes | None, bytes]  # topic, key, value


class _Deferred:
    """A decision record to build later, once, by whichever thread gets to it first."""

    __slots__ = ("build", "built", "claim", "decision", "value")

    def __init__(self, build: Callable[[], Decision]) -> None:
        self.build = build
        self.claim = threading.Lock()
        self.built = False
        self.decision: Decision | None = None  # None once built: it could not be
        self.value = b""

    def resolve(self, on_failure: Callable[[], None]) -> None:
        """Build and encode the record, once whatever happens; the caller holds ``claim``."""
        if self.built:
            return
        try:
            decision = self.build()
            self.value = encode_decision(decision)
            self.decision = decision
        except Exception:  # one record that cannot be built costs only itself
            log.exception("a decision record could not be built; it is lost")
            on_failure()
        finally:
            self.built = True
            self.build = _unset  # what it closed over (profile, 200 candidates) can go

    def release(self) -> None:
        """Drop the record once written (the holder may stay queued a while)."""
        self.decision, self.value = None, b""


def _unset() -> Decision:
    message = "already built"
    raise RuntimeError(message)


Item = tuple[str, bytes | None, "Decision | bytes | _Deferred"]
# topic, key, the decision to check against the erasure fence (None: not a decision), value
Built = tuple[str, bytes | None, Decision | None, bytes]


class Sink(Protocol):
    """Where records go.

    ``send`` is called from the writer thread; ``erase`` from a request's thread while the
    writer may be sending: a sink that cannot do both at once locks itself.
    """

    def send(self, records: list[Record]) -> None:
        """Write a batch of records (blocking is fine: this is the writer thread)."""
        ...

    def settle(self) -> None:
        """Return once the records sent so far are where an erasure's pass reads them."""
        ...

    def erase(self, erasures: Sequence[Erasure]) -> list[int]:
        """Remove the decisions each erasure matches, in one pass; return how many each."""
        ...

    def close(self) -> None:
        """Flush and release."""
        ...


class PartialSendError(RuntimeError):
    """A sink took the first ``sent`` records of a batch, then gave up on the rest."""

    def __init__(self, sent: int, waited_s: float) -> None:
        super().__init__(f"the producer queue stayed full {waited_s:g} s after {sent} records")
        self.sent = sent


class FileSink:
    """Append to the embedded event log: one JSONL file per topic in ``directory``."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, Any] = {}
        self._lock = threading.Lock()  # an erasure rewrites the file the writer appends to

    def _handle(self, topic: str) -> Any:
        """Return the topic's open file, opened again if the path is now another file.

        A log rotated (renamed) or deleted under a running writer would otherwise take
        every later record with it, counted as written (as ``WatchedFileHandler`` does).
        """
        path = topic_path(self.directory, topic)
        handle = self._files.get(topic)
        if handle is not None:
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
            held = os.fstat(handle.fileno())
            if now is None or (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
                handle.close()
                handle = None
        if handle is None:
            handle = self._files[topic] = path.open("ab")
        return handle

    def send(self, records: list[Record]) -> None:
        """Append each value as one line, then flush once."""
        handles: dict[str, Any] = {}
        with self._lock:
            for topic, _key, value in records:
                handle = handles.get(topic)
                if handle is None:  # checked once a batch: one stat per topic
                    handle = handles[topic] = self._handle(topic)
                handle.write(value + b"\n")
            for handle in handles.values():
                handle.flush()

    def settle(self) -> None:
        """Nothing to wait for: :meth:`send` has written the batch to the file."""

    def erase(self, erasures: Sequence[Erasure]) -> list[int]:
        """Blank the matching records of ``decisions.jsonl`` in place."""
        path = topic_path(self.directory, DECISIONS)
        counts = [0] * len(erasures)

        def drop(line: bytes) -> bool:
            hits = _which(line, erasures)
            for i in hits:
                counts[i] += 1
            return bool(hits)

        with self._lock:
            # Appended lines still in this writer's buffer reach the file first.
            handle = self._files.get(DECISIONS)
            if handle is not None:
                handle.flush()
            erase_lines(path, drop)
        return counts

    def close(self) -> None:
        """Close every open file."""
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()


def _which(raw: bytes, erasures: Sequence[Erasure]) -> list[int]:
    """Return the indices of the erasures that match the record ``raw``.

    The record is decoded at most twice whatever the number of erasures: its owner
    fields for those that need only them, in full for the others.
    """
    hits: list[int] = []
    owner: DecisionOwner | None = None
    decision: Decision | None = None
    try:
        for i, erasure in enumerate(erasures):
            if erasure.by_owner:
                if owner is None:
                    owner = decode_owner(raw)
                subject: Any = owner
            else:
                if decision is None:
                    decision = decode_decision(raw)
                subject = decision
            if erasure.match(subject):
                hits.append(i)
    except ValueError:
        return []  # a line that is not a decision is left alone
    return hits


class KafkaSink:
    """Produce to Kafka (confluent-kafka, idempotent); delivery failures are counted.

    Decisions are keyed by their id (:func:`features.decisions.decision_key`), which
    :meth:`erase` relies on. ``timeout`` bounds each wait of an erasure on the broker.
    """

    def __init__(
        self,
        bootstrap: str,
        on_failure: Callable[[int], None] | None = None,
        *,
        topic: str = DECISIONS,
        timeout: float = 30.0,
    ) -> None:
        from confluent_kafka import Producer

        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout = timeout
        self._producer: Producer | None = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "linger.ms": 5,
                "queue.buffering.max.messages": 100_000,
                # librdkafka's default, stated: the queued eraser waits longer than this
                # before it takes a job (``omnioffer eraser --grace``).
                "delivery.timeout.ms": DELIVERY_TIMEOUT_S * 1000,
            }
        )
        self._on_failure = on_failure
        # Records produced, and records the broker acknowledged or refused. Callbacks run
        # in whichever thread polls (the writer or an erasure), hence the lock.
        self._produced = 0
        self._settled = 0
        self._count_lock = threading.Lock()
        self.scans = 0  # passes over the topic made by erasures

    def _delivered(self, error: Any, _message: Any) -> None:
        with self._count_lock:
            self._settled += 1
        if error is not None:
            log.warning("decision not delivered: %s", error)
            if self._on_failure is not None:
                self._on_failure(1)

    def _open(self) -> Any:
        if self._producer is None:
            message = "the Kafka sink is closed"
            raise RuntimeError(message)
        return self._producer

    def send(self, records: list[Record]) -> None:
        """Produce each record; on a full local queue, serve callbacks and retry.

        Raises :class:`PartialSendError` (with how many went) if the queue stays full for
        ``timeout`` seconds.
        """
        producer = self._open()
        for sent, (topic, key, value) in enumerate(records):
            if topic == self.topic and key is None:
                message = "a record of the compacted decisions topic needs a key"
                raise ValueError(message)
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    producer.produce(topic, value, key, on_delivery=self._delivered)
                    break
                except BufferError:  # librdkafka's queue is full: let it deliver some
                    if time.monotonic() > deadline:
                        raise PartialSendError(sent, self.timeout) from None
                    producer.poll(0.1)
            with self._count_lock:
                self._produced += 1
        producer.poll(0)

    def _settle(self, producer: Any, done: Callable[[], bool], what: str) -> None:
        # Not producer.flush(): it waits for an empty queue, which the writer thread may
        # keep from happening under load; this waits only for the records in question.
        deadline = time.monotonic() + self.timeout
        while not done():
            if time.monotonic() > deadline:
                message = f"decision log: {what} not delivered within {self.timeout:g} s"
                raise TimeoutError(message)
            producer.poll(0.05)

    def settle(self) -> None:
        """Wait until the records produced so far are settled, at most ``timeout`` seconds.

        Behind an erasure fence a batch must be on the broker before an erasure can note
        the person: its pass reads the broker, not this producer's queue.
        """
        producer = self._open()
        target = self._produced
        try:
            self._settle(producer, lambda: self._settled >= target, "a batch")
        except TimeoutError as error:  # still queued, maybe delivered later: not lost
            log.warning("%s; an erasure in the meantime may miss it", error)

    def deliver(self, topic: str, key: bytes, value: bytes) -> None:
        """Produce one record once everything produced before is on the broker; wait for it.

        Raises ``TimeoutError`` if the broker does not answer within ``timeout`` seconds,
        ``RuntimeError`` if it refuses the record.
        """
        producer = self._open()
        before = self._produced
        self._settle(producer, lambda: self._settled >= before, "earlier records")
        outcome: list[Any] = []
        producer.produce(topic, value, key, on_delivery=lambda error, _m: outcome.append(error))
        self._settle(producer, lambda: bool(outcome), f"the record on {topic}")
        if outcome[0] is not None:
            message = f"decision log: the record on {topic} was refused: {outcome[0]}"
            raise RuntimeError(message)

    def erase(self, erasures: Sequence[Erasure]) -> list[int]:
        """Tombstone the decisions each erasure matches; return how many live ones each.

        Waits until what was produced so far is on the broker, reads the topic once from
        its start to its end (:func:`features.kafka_log.scan_topic`), then writes a
        tombstone (the record's key and partition, no value) for each matching record that
        has none yet, and waits for them. Compaction (``cleanup.policy=compact``, see
        ``features.topics.TOPIC_CONFIGS``) then removes the records from the broker;
        readers before that skip them (:func:`features.kafka_log.read_kafka_decisions`).
        The writer thread keeps producing meanwhile: a producer is safe to share between
        threads.

        Raises ``TimeoutError`` if the broker does not answer within ``timeout`` seconds.
        """
        producer = self._open()
        before = self._produced
        self._settle(producer, lambda: self._settled >= before, "earlier records")
        # Streamed, keeping only the matches: the topic may be far larger than memory.
        # A key's last record decides: a later tombstone means it is erased already.
        doomed: dict[bytes, tuple[int, list[int]]] = {}
        self.scans += 1
        for record in scan_topic(self.bootstrap, self.topic, self.timeout):
            if record.key is None:
                continue  # a compacted topic holds none; an older topic may
            hits = _which(record.value, erasures) if record.value is not None else []
            if hits:
                doomed[record.key] = (record.partition, hits)
            else:
                doomed.pop(record.key, None)
        self.tombstone({key: partition for key, (partition, _hits) in doomed.items()})
        counts = [0] * len(erasures)
        for _partition, hits in doomed.values():
            for i in hits:
                counts[i] += 1
        return counts

    def tombstone(self, doomed: dict[bytes, int]) -> None:
        """Write a tombstone for each key (in its partition) and wait until all are written.

        Raises ``TimeoutError`` if the broker does not answer within ``timeout`` seconds,
        ``RuntimeError`` if it refuses any.
        """
        producer = self._open()
        outcomes: list[Any] = []

        def settled(error: Any, _message: Any) -> None:
            outcomes.append(error)

        for key, partition in doomed.items():
            deadline = time.monotonic() + self.timeout
            while True:  # a pass may tombstone more records than the local queue holds
                try:
                    producer.produce(self.topic, None, key, partition=partition,
                                     on_delivery=settled)  # fmt: skip
                    break
                except BufferError:
                    if time.monotonic() > deadline:
                        message = f"decision log: the producer queue stayed full {self.timeout:g} s"
                        raise TimeoutError(message) from None
                    producer.poll(0.1)
        self._settle(producer, lambda: len(outcomes) >= len(doomed), "tombstones")
        refused = [error for error in outcomes if error is not None]
        if refused:
            message = f"decision log: {len(refused)} tombstones refused: {refused[0]}"
            raise RuntimeError(message)

    def close(self) -> None:
        """Deliver what is queued (up to 10 s) and drop the producer; idempotent."""
        if self._producer is not None:
            left = self._producer.flush(10.0)
            if left:  # counted, or a shutdown would lose them unseen
                log.error("decision log closed with %d records undelivered", left)
                if self._on_failure is not None:
                    self._on_failure(left)
            # Dropping the last reference ends librdkafka's threads and connections.
            self._producer = None


class _Ticket:
    """One erasure waiting for a pass over the sink, and what the pass gave it."""

    __slots__ = ("count", "done", "erasure", "error")

    def __init__(self, erasure: Erasure) -> None:
        self.erasure = erasure
        self.done = False
        self.count = 0
        self.error: BaseException | None = None

    def settle(self, count: int | None, error: BaseException | None) -> None:
        self.count, self.error, self.done = count or 0, error, True

    def outcome(self) -> int:
        if self.error is not None:
            raise self.error
        return self.count


class DecisionLog:
    """A bounded in-memory buffer and one writer thread in front of a :class:`Sink`.

    Publishing is an append to a deque (no lock, no wake-up: cheaper than ``queue.Queue``
    on the request path); the writer drains the buffer every ``interval_s`` seconds.
    Values may be built lazily: a callable returning the :class:`Decision` is called (and
    its record encoded) by :meth:`build_deferred` or, if nobody calls that first, by the
    writer; either way not while the request waits. A record of 200 candidates costs
    ~0.2 ms of CPU: built by the writer it holds the GIL while requests wait for it, which
    measured as the largest part of the decision endpoints' tail latency.
    ``on_outcome(outcome, n)`` is called with ``"written"`` / ``"dropped"`` / ``"failed"`` /
    ``"erased"`` (a decision of a person the ``fence`` says is being or was just erased).
    """

    def __init__(
        self,
        sink: Sink,
        *,
        max_queue: int = 10_000,
        batch: int = 512,
        interval_s: float = 0.02,
        on_outcome: Callable[[str, int], None] | None = None,
        fence: ErasureFence | None = None,
    ) -> None:
        if max_queue < 1:
            message = f"max_queue must be >= 1; got {max_queue!r}"
            raise ValueError(message)
        self.sink = sink
        self.fence = fence
        self._items: deque[Item] = deque()
        self._deferred: deque[_Deferred] = deque()  # built by build_deferred or the writer
        self._deferred_lock = threading.Lock()  # both threads take from _deferred
        self._max = max_queue
        self._batch = batch
        self._interval_s = interval_s
        self._on_outcome = on_outcome
        self._accepted = itertools.count(1)
        self._accepting = threading.Lock()  # requests, erasures and unlinks publish at once
        self._dropped = itertools.count(1)
        self._last_accepted = 0
        self._done = 0
        self.dropped = 0
        self._erasing = threading.Condition()
        self._erase_queue: list[_Ticket] = []
        self._erase_running = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Records waiting to be written."""
        return len(self._items)

    @property
    def capacity(self) -> int:
        """How many records the buffer holds at most."""
        return self._max

    def submit(self, decision: Decision | Callable[[], Decision]) -> bool:
        """Queue a decision (or a function building it) for the ``decisions`` topic."""
        return self.publish(DECISIONS, None, decision)

    def publish(
        self, topic: str, key: bytes | None, value: Decision | bytes | Callable[[], Decision]
    ) -> bool:
        """Queue one record; never blocks; ``False`` (and counted) when the buffer is full."""
        if len(self._items) >= self._max:
            self.dropped = next(self._dropped)
            self._count("dropped", 1)
            return False
        item: Decision | bytes | _Deferred = value
        if callable(value):
            item = _Deferred(value)
            self._deferred.append(item)
        with self._accepting:  # numbered in the order appended, so flush() waits for all
            self._last_accepted = next(self._accepted)
            self._items.append((topic, key, item))
        return True

    def build_deferred(self) -> int:
        """Build the records queued as functions that the writer has not; return how many.

        Called by the API once a response is sent: the request no longer waits, and the
        requests after it do not wait for the writer thread to hand back the GIL, as they
        do when it builds. Never blocks: a record the writer is building is left to it.

        >>> import tempfile, threading
        >>> from datetime import UTC, datetime
        >>> from features.decisions import Decision, Identifiers
        >>> built_in = []
        >>> def build() -> Decision:
        ...     built_in.append(threading.current_thread().name)
        ...     return Decision(decision_id="d-2", decided_at=datetime(2026, 3, 2, tzinfo=UTC),
        ...         surface="offers", ids=Identifiers(anonymous_id="a-2"), policy="p", chosen=[])
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     log = DecisionLog(FileSink(folder), interval_s=60)
        ...     log.submit(build), log.build_deferred(), log.close()
        ...     [r.decision_id for r in read_decisions(folder)], built_in
        (True, 1, None)
        (['d-2'], ['MainThread'])
        """
        done = 0
        while True:
            with self._deferred_lock:
                if not self._deferred:
                    return done
                record = self._deferred.popleft()
            if record.claim.acquire(blocking=False):
                try:
                    if not record.built:
                        record.resolve(self._count_failed)
                        done += 1
                finally:
                    record.claim.release()

    def _count_failed(self) -> None:
        self._count("failed", 1)

    def _count(self, outcome: str, n: int) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome, n)

    def _run(self) -> None:
        while True:
            if not self._items:
                if self._stop.is_set():
                    return
                self._stop.wait(self._interval_s)
                continue
            items = []
            while self._items and len(items) < self._batch:
                items.append(self._items.popleft())
            try:
                built = self._build(items)
                try:
                    self._write(built)
                except Exception:  # the erasure fence could not be read
                    log.exception("decision log: %d records lost", len(built))
                    self._count("failed", len(built))
                self._forget(items)
            except Exception:  # a bug here must not stop the writer (and every flush)
                log.exception("decision log: a pass failed")
            finally:
                self._done += len(items)

    def _forget(self, items: list[Item]) -> None:
        """Release the written records; unqueue those build_deferred has not reached.

        Otherwise nobody calling build_deferred (a test, a script, an idle API worker)
        would keep every record alive.
        """
        for _topic, _key, value in items:
            if isinstance(value, _Deferred):
                value.release()
        with self._deferred_lock:
            while self._deferred and self._deferred[0].built:
                self._deferred.popleft()

    def _build(self, items: list[Item]) -> list[Built]:
        built: list[Built] = []
        for topic, key, value in items:  # one record that cannot be built costs only itself
            if isinstance(value, bytes):
                built.append((topic, key, None, value))
            elif isinstance(value, _Deferred):
                with value.claim:  # waits only if build_deferred is building this one
                    value.resolve(self._count_failed)
                if value.decision is not None:
                    built.append((topic, key, value.decision, value.value))
            else:
                try:
                    built.append((topic, key, value, encode_decision(value)))
                except Exception:
                    log.exception("a decision record could not be encoded; it is lost")
                    self._count("failed", 1)
        return built

    def _write(self, built: list[Built]) -> None:
        checking = self.fence.checking() if self.fence is not None else nullcontext(_never)
        with checking as erased:  # from the check to the end of the write
            records = []
            for topic, key, decision, value in built:
                if decision is None:
                    records.append((topic, key, value))
                elif erased(decision):
                    self._count("erased", 1)
                else:
                    records.append((topic, key or decision_key(decision), value))
            try:
                if records:
                    self.sink.send(records)
                    if self.fence is not None:
                        # The fence holds only once the records are where an erasure reads.
                        self.sink.settle()
                    self._count("written", len(records))
            except PartialSendError as error:
                log.error("decision log: %s; %d records lost", error, len(records) - error.sent)
                self._count("written", error.sent)
                self._count("failed", len(records) - error.sent)
            except Exception:  # a failing sink must not kill the writer thread
                log.exception("decision log sink failed; %d records lost", len(records))
                self._count("failed", len(records))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record accepted so far is written; ``False`` on timeout."""
        target = self._last_accepted
        deadline = time.monotonic() + timeout
        while self._done < target:
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            time.sleep(0.002)
        return True

    def erase(self, erasure: Erasure | Callable[[Decision], bool]) -> int:
        """Drain the buffer, then remove the matching decisions from the sink; return how many.

        Erasures asked while another is running wait for it and then share one pass
        over the sink (on Kafka, one scan of the topic), each getting its own count.
        """
        ticket = _Ticket(erasure if isinstance(erasure, Erasure) else Erasure(erasure))
        with self._erasing:
            self._erase_queue.append(ticket)
            while self._erase_running and not ticket.done:
                self._erasing.wait()
            if ticket.done:
                return ticket.outcome()
            batch, self._erase_queue = self._erase_queue, []
            self._erase_running = True
        counts: list[int] | None = None
        error: BaseException | None = None
        try:
            # Every record accepted before this (the person's included) must be in the
            # sink first: erasing around records still queued would leave them behind.
            if not self.flush():
                message = "decision log: the buffer was not written within 10 s"
                raise TimeoutError(message)
            counts = self.sink.erase([t.erasure for t in batch])
        except BaseException as raised:
            error = raised
        finally:
            with self._erasing:
                for i, waiting in enumerate(batch):
                    waiting.settle(counts[i] if counts is not None else None, error)
                self._erase_running = False
                self._erasing.notify_all()
        return ticket.outcome()

    def deliver(self, topic: str, key: bytes, value: bytes) -> None:
        """Write one record now, after every record accepted before it (Kafka sink only).

        For what must not wait in the buffer, nor overtake it: a queued erasure is read
        after the person's decisions are on the broker.
        """
        deliver = getattr(self.sink, "deliver", None)
        if deliver is None:
            message = f"{type(self.sink).__name__} cannot deliver records one by one"
            raise TypeError(message)
        if not self.flush():
            message = "decision log: the buffer was not written within 10 s"
            raise TimeoutError(message)
        deliver(topic, key, value)

    def close(self) -> None:
        """Write what is buffered, stop the thread and close the sink; idempotent."""
        self._stop.set()
        self._thread.join(timeout=10.0)
        self.sink.close()


def _never(_decision: Decision) -> bool:
    return False


def read_decisions(directory: Path | str) -> Iterator[Decision]:
    """Yield the decisions in the embedded log ``directory`` (skipping unreadable lines)."""
    path = topic_path(directory, DECISIONS)
    if not path.exists():
        return
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                yield decode_decision(line.rstrip(b"\n"))
            except ValueError:
                continue
