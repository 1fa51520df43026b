"""The triggered-journeys flow: the feature flow's profiles, then journeys in event time.

``read -> validate -> person_index -> fragments -> profiles -> store``, and from the
profiles step ``journey feeds -> journeys (keyed by profile shard) -> messages.outbound``
plus every journey record on ``triggers``.

Why shards of profiles and not one key per profile: Bytewax's ``notify_at`` fires on the
system clock, and event-time waits must fire from a watermark derived from the events. Each
shard holds many profiles' timers and one clock, which moves with every feed it gets and
with the ingest step's clock (the earliest event time of each batch read, sent to every
shard), so a profile that has gone quiet — the cart that was abandoned — still gets its
reminder. Timers fire once the watermark (the latest time seen minus ``lateness_s``)
passes them, and facts are applied in event-time order (:mod:`features.journey_state`): a
replay of the same events emits the same records. A fact may arrive up to ``lateness_s``
behind, so the input is read as one stream in event-time order, files and Kafka alike
(:class:`flows.sources.MergedEventLogSource`, :class:`flows.sources.MergedKafkaSource`), in
batches that span at most an hour: read partition by partition, a backlog would let one
topic run days ahead of another.

Sending checks the log it writes to, and is idempotent (:func:`send_if_allowed`): the
send step (:class:`OutboundSender`) reads the person's contact log, skips a decision
already there (a replay after a crash and a restart from the last snapshot), checks the
rules that read the log (what the API sent since the step decided counts), and writes the
contact only if the log is still as read
(:meth:`features.store.OnlineStore.add_contact_if_unchanged`); only then the message. The
contact comes first on purpose: a crash between the two writes loses that message rather
than sending it twice. A send refused there reaches ``triggers`` as ``suppressed``.

Run it with ``omnioffer flow journeys`` (it also writes the profiles, so it replaces
``omnioffer flow features``), or ``python -m bytewax.run flows.journey_flow:flow``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.connectors.files import FileSink
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic

from features.catalog import Catalog
from features.datafile import Reloadable
from features.eventlog import topic_path
from features.journey_state import (
    HISTORY_S,
    JourneyContext,
    JourneyState,
    advance,
    message_of,
    observe,
    tick,
    watermark,
)
from features.journeys import JourneyBook, JourneyRecord, Outbound, Suppressed, encode_record
from features.pipeline import JourneyFeed
from features.policy import (
    CONTACT_LOG_BUSY,
    ContactPolicy,
    Policies,
    PolicyError,
    check_log,
    load_policies,
    widen_quiet_hours,
)
from features.scoring import HeuristicScorer, Scorer
from features.store import ContactRecord, OnlineStore
from features.topics import MESSAGES_OUTBOUND, TRIGGERS
from flows import features_flow, metrics
from flows.features_flow import FlowConfig, SnapshottingLogic, build_flow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JourneySetup:
    """The journeys' definitions and dependencies, and how the flow runs them.

    ``lateness_s``: how late (in event time, behind the latest event seen by a shard) a
    fact may arrive and still count; steps fire that much after they are due.
    ``shared_contacts``: read the store's contact log (API-driven messages) for caps.
    """

    book: JourneyBook
    catalog: Catalog
    policies_path: Path
    promoted_pointer: Path | None = None
    shards: int = 16
    lateness_s: int = 3600
    epsilon: float = 0.0
    shared_contacts: bool = True
    output_dir: Path | None = None  # files mode: where messages.outbound / triggers go
    quiet_margin_min: int = 60


def shard_of(profile_id: str, shards: int) -> str:
    """Return the journey shard key of a profile (stable across processes and runs).

    >>> shard_of("customer_id:cu-000001", 16)
    'journeys-14'
    """
    return f"journeys-{zlib.crc32(profile_id.encode()) % shards}"


class PromotedScorer:
    """The promoted model's scorer, reloaded when the pointer changes; else the heuristic.

    The pointer is checked at most every ``check_s`` seconds of wall-clock time (model
    reloads are operations, not event-time logic). A model that fails to load leaves the
    previous scorer in place.
    """

    def __init__(self, pointer: Path | None, check_s: float = 5.0) -> None:
        self.pointer = pointer
        self.check_s = check_s
        self._scorer: Scorer = HeuristicScorer()
        self._seen: tuple[float, str] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> Scorer:
        if self.pointer is None:
            return self._scorer
        now = time.monotonic()
        if now - self._checked < self.check_s:
            return self._scorer
        with self._lock:
            self._checked = now
            try:
                stat = self.pointer.stat()
                target = self.pointer.read_text().strip()
            except OSError:
                return self._scorer
            if self._seen == (stat.st_mtime, target) or not target:
                return self._scorer
            self._seen = (stat.st_mtime, target)
            try:
                from models.registry import load_scorer

                self._scorer = load_scorer(target)
            except Exception as error:  # a bad model must not stop journeys
                metrics.JOURNEY_MODEL_ERRORS.inc()
                log.warning("keeping scorer %s: %s", self._scorer.version, error)
        return self._scorer


@dataclass
class _Runtime:
    """Per process: the journey context (policies, scorer, the store's contact log)."""

    setup: JourneySetup
    open_store: Callable[[], OnlineStore]
    _context: JourneyContext | None = None
    _store: OnlineStore | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def context(self) -> JourneyContext:
        with self._lock:
            if self._context is None:
                setup = self.setup
                # Reloaded when the file changes, as serving does; a bad edit keeps the last.
                policies = Reloadable(
                    [setup.policies_path],
                    lambda: _send_ready(
                        load_policies(setup.policies_path), setup.quiet_margin_min
                    ),
                    errors=(PolicyError,),
                    what="policies",
                    on_reload=lambda result: metrics.JOURNEY_POLICY_RELOADS.labels(result).inc(),
                )
                history = None
                if setup.shared_contacts:
                    self._store = self.open_store()
                    history = self._store.contacts_of
                self._context = JourneyContext(
                    book=setup.book,
                    channels=setup.catalog.channels,
                    policies=policies.get,
                    scorer=PromotedScorer(setup.promoted_pointer),
                    history=history,
                    epsilon=setup.epsilon,
                    quiet_margin_min=setup.quiet_margin_min,
                )
            return self._context


def _send_ready(policies: Policies, quiet_margin_min: int) -> Policies:
    """Return ``policies`` once their quiet hours are known to take the margin (else raise)."""
    widen_quiet_hours(policies, quiet_margin_min)
    return policies


class _Journeys(SnapshottingLogic):
    state: JourneyState | None

    def __init__(self, resume: Any, copy_snapshots: bool, runtime: _Runtime) -> None:
        super().__init__(resume, copy_snapshots)
        self.runtime = runtime
        if self.state is None:
            self.state = JourneyState()

    def on_batch(self, values: list[JourneyFeed | tuple[int, int]]) -> tuple[list[Any], bool]:
        state = self.state
        assert state is not None
        for feed in values:
            if type(feed) is tuple:  # the clock: (earliest, latest) of a batch read
                tick(state, feed[0])
                state.horizon = max(state.horizon, feed[1])
                continue
            for fact, features in feed.inputs:
                observe(state, feed.profile_id, fact, features)
            tick(state, feed.max_ts)
        until = watermark(state, self.runtime.setup.lateness_s)
        return [advance(state, self.runtime.context(), until)], StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Any], bool]:
        # All input is in: everything up to the latest event read anywhere is final.
        state = self.state
        assert state is not None
        until = max(state.seen, state.horizon)
        return [advance(state, self.runtime.context(), until)], StatefulBatchLogic.RETAIN


def _count(record: JourneyRecord) -> None:
    metrics.observe_journey(record)


# Reads and checks before giving up on a contact log that keeps changing under a send.
CONTACT_ATTEMPTS = 3
ALREADY_SENT = "already_sent"


def send_if_allowed(
    store: OnlineStore, message: Outbound, policy: ContactPolicy, attempts: int = CONTACT_ATTEMPTS
) -> str | None:
    """Write ``message``'s contact if the log still allows it; return ``None``, or why not.

    The journey step decided with the log as it read it; the API (or another process) may
    have sent to the same person since. So: read the log, check the rules that read it
    (duplicates, caps: :func:`features.policy.check_log`), and write only if the log
    still holds what was read (:meth:`~features.store.OnlineStore.add_contact_if_unchanged`);
    read and check again when it does not. A decision already in the log was sent before
    this run (a replay after a crash): ``"already_sent"``.
    """
    contact = contact_of(message)
    since = message.send_at - timedelta(seconds=HISTORY_S)
    for _ in range(attempts):
        log = store.contacts_of(message.profile_id, since)
        if any(c.decision_id == message.decision_id for c in log):
            return ALREADY_SENT
        if rule := check_log(log, message.channel, message_of(message), message.send_at, policy):
            return rule
        if store.add_contact_if_unchanged(contact, since, len(log)):
            return None
    return CONTACT_LOG_BUSY


class OutboundSender:
    """Send what the journeys decided, and say in ``triggers`` what was really sent.

    A batch step (``flat_map_batch``) between the journeys and the ``triggers`` output: a
    ``sent`` record's message is written (contact first, :func:`send_if_allowed`, then
    ``messages.outbound``) and the record goes on; a send the contact log refuses goes on
    as a ``suppressed`` record with the rule instead, so ``triggers`` never says ``sent``
    for a message that was not. Other records pass through. The store and the writer are
    opened once per process, on first use (both are safe to share between workers).
    """

    def __init__(
        self,
        open_store: Callable[[], OnlineStore],
        open_writer: Callable[[], Callable[[Keyed], None]],
        policies: Callable[[], Policies],
    ) -> None:
        self._open_store = open_store
        self._open_writer = open_writer
        self._policies = policies
        self._opened: tuple[OnlineStore, Callable[[Keyed], None]] | None = None
        self._lock = threading.Lock()

    def _io(self) -> tuple[OnlineStore, Callable[[Keyed], None]]:
        with self._lock:
            if self._opened is None:
                self._opened = (self._open_store(), self._open_writer())
            return self._opened

    def __call__(self, records: list[JourneyRecord]) -> list[JourneyRecord]:
        if not any(type(r) is Outbound for r in records):
            return records
        store, write = self._io()
        policy = self._policies().contact
        out: list[JourneyRecord] = []
        fresh: Keyed = []
        for record in records:
            if type(record) is not Outbound:
                out.append(record)
                continue
            rule = send_if_allowed(store, record, policy)
            if rule is None:
                fresh.append((record.profile_id.encode(), encode_record(record)))
            elif rule == ALREADY_SENT:  # sent before a restart: its record is replayed
                metrics.JOURNEY_DUPLICATES_SKIPPED.inc()
            else:
                log.warning("journey message %s not sent: %s (the contact log changed since "
                            "it was decided)", record.decision_id, rule)  # fmt: skip
                metrics.JOURNEY_SENDS_REFUSED.labels(rule).inc()
                out.append(refused(record, rule))
                continue
            out.append(record)
        if fresh:
            write(fresh)
        return out


def refused(message: Outbound, rule: str) -> Suppressed:
    """Return the ``suppressed`` record of a message its send refused, by ``rule``."""
    return Suppressed(
        journey=message.journey, profile_id=message.profile_id, entry_id=message.entry_id,
        at=message.at, control=message.control, step=message.step,
        step_index=message.step_index, decision_id=message.decision_id, rule=rule,
    )  # fmt: skip


def contact_of(message: Outbound) -> ContactRecord:
    """Return the contact-log record of an outbound message."""
    return ContactRecord(
        profile_id=message.profile_id,
        decision_id=message.decision_id,
        channel=message.channel,
        sent_at=message.send_at,
        kind=message.kind,
        campaign=message.campaign,
        offer_id=message.offer_id,
    )


Keyed = list[tuple[bytes, bytes]]  # (key, value): a message keyed by its profile


def _file_writer(path: Path) -> Callable[[], Callable[[Keyed], None]]:
    """Append each batch with one ``write`` on an ``O_APPEND`` file (keys are not kept).

    Workers then never interleave inside a line.
    """

    def open_writer() -> Callable[[Keyed], None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

        def write(lines: Keyed) -> None:
            os.write(fd, b"".join(value + b"\n" for _key, value in lines))

        return write

    return open_writer


def _kafka_writer(bootstrap: str, topic: str) -> Callable[[], Callable[[Keyed], None]]:
    def open_writer() -> Callable[[Keyed], None]:
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})

        def write(lines: Keyed) -> None:
            # Keyed by profile: one person's messages stay in order on one partition.
            for key, value in lines:
                producer.produce(topic, value, key)
            producer.flush()

        return write

    return open_writer


def build_journey_flow(
    config: FlowConfig, setup: JourneySetup, *, deadletter_path: Path | None = None
) -> Dataflow:
    """Build the feature flow with the journeys attached (see the module docstring).

    The input is read as one stream in event-time order (files or Kafka), so no topic
    runs ahead of the others.
    """
    config = dataclasses.replace(config, merge_topics=True)
    runtime = _Runtime(setup, config.open_store)
    copies = config.recovery
    out_dir = setup.output_dir or config.event_log_dir

    shard_keys = [f"journeys-{i}" for i in range(setup.shards)]

    def policies() -> Policies:
        return runtime.context().send_policies()

    def attach(feeds: Any, clock: Any) -> None:
        keyed = op.map("journey_shard", feeds, lambda kv: (shard_of(kv[0], setup.shards), kv[1]))
        ticks = op.flat_map("clock_to_shards", clock, lambda ts: [(k, ts) for k in shard_keys])
        keyed = op.merge("journey_inputs", keyed, ticks)
        batches = op.stateful_batch(
            "journeys", keyed, lambda resume: _Journeys(resume, copies, runtime)
        )
        decided = op.flat_map("journey_records", batches, lambda kv: kv[1])
        if config.source == "kafka":
            writer = _kafka_writer(config.kafka_bootstrap, MESSAGES_OUTBOUND)
        else:
            writer = _file_writer(topic_path(out_dir, MESSAGES_OUTBOUND))
        sender = OutboundSender(config.open_store, writer, policies)
        records = op.flat_map_batch("send_outbound", decided, sender)
        op.inspect("journey_metrics", records, lambda _step, record: _count(record))
        if config.source == "kafka":
            as_kafka = op.map(
                "trigger_message",
                records,
                lambda r: KafkaSinkMessage(r.profile_id.encode(), encode_record(r)),
            )
            op.output("triggers", as_kafka, KafkaSink([config.kafka_bootstrap], TRIGGERS))
            return
        path = topic_path(out_dir, TRIGGERS)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        as_text = op.map("trigger_text", records, lambda r: ("triggers", encode_record(r).decode()))
        op.output("triggers", as_text, FileSink(path))

    return build_flow(
        config, deadletter_path=deadletter_path, journeys=attach, name="omnioffer_journeys"
    )


def run(
    config: FlowConfig,
    setup: JourneySetup,
    *,
    workers: int = 1,
    recovery_dir: Path | None = None,
    snapshot_interval_s: float = 10.0,
    deadletter_path: Path | None = None,
) -> None:
    """Run the journey flow in this process until its input ends.

    Recovery works as in :func:`flows.features_flow.run`.
    """
    features_flow.run(
        config,
        workers=workers,
        recovery_dir=recovery_dir,
        snapshot_interval_s=snapshot_interval_s,
        build=lambda c: build_journey_flow(c, setup, deadletter_path=deadletter_path),
    )


def _from_settings() -> Dataflow:
    from omnioffer.settings import Settings

    settings = Settings()
    return build_journey_flow(settings.flow_config(), settings.journey_setup())


def __getattr__(name: str) -> Any:
    # `python -m bytewax.run flows.journey_flow:flow` builds the flow from OMNIOFFER_* settings.
    if name == "flow":
        return _from_settings()
    message = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(message)
