"""The streaming feature pipeline as a Bytewax dataflow.

``read -> validate -> (deadletter | route) -> person_index -> fragments -> profiles -> store``

plus the offer redemptions of purchases, from ``validate`` straight to the store (budgets).

The logic of every keyed step lives in :mod:`features.pipeline` (shared with batch
recomputation); this module only wires it into Bytewax and adapts I/O. Run it with
``omnioffer flow features`` or, for several workers and processes::

    python -m bytewax.run "flows.features_flow:flow" -w 2
    python -m bytewax.run "flows.features_flow:flow" -i 0 -a "127.0.0.1:2101;127.0.0.1:2102"

configured by ``OMNIOFFER_*`` settings (source, store, addresses).
"""

from __future__ import annotations

import dataclasses
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.connectors.files import FileSink
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main
from confluent_kafka import KafkaError as ConfluentKafkaError

from features.contacts import redact_raw
from features.events import Event
from features.pipeline import (
    STORE,
    Delta,
    ForProfile,
    FragmentLogic,
    JourneyFeed,
    JourneyInput,
    PersonIndex,
    apply_profile_inputs,
    redemptions_of,
    route,
)
from features.profile import ProfileState
from features.store import OnlineStore
from features.topics import DEADLETTER, EVENT_TOPICS
from features.validation import Reason, Rejection, validate
from flows import metrics
from flows.sinks import StoreSink
from flows.sources import (
    EventLogSource,
    MergedEventLogSource,
    MergedKafkaSource,
    Message,
    from_kafka,
    kafka_source,
)


@dataclass(frozen=True)
class FlowConfig:
    """What the feature flow reads, where it writes, and how it validates."""

    open_store: Callable[[], OnlineStore]
    hash_key: bytes
    source: str = "files"
    event_log_dir: Path = Path(".omnioffer/events")
    kafka_bootstrap: str = "127.0.0.1:9092"
    tail: bool = False
    max_event_bytes: int = 64 * 1024
    batch_size: int = 1000
    fetch_wait_ms: int = 10
    topics: tuple[str, ...] = field(default=EVENT_TOPICS)
    # Copy state into snapshots; only a run known to have recovery off may turn it off.
    recovery: bool = True
    # Read all topics as one stream in event-time order (event-time consumers: journeys).
    merge_topics: bool = False


# --- validation, routing and dead-letter ------------------------------------------------------
Checked = tuple[Message, Event | Rejection]
_DEADLETTER = "\x00deadletter"
_CLOCK = "\x00clock"
_REDEEMED = "\x00redeemed"
_NOT_PERSON = frozenset((_DEADLETTER, _REDEEMED))
_NO_TIME = float("inf")


def deadletter_record(message: Message, rejection: Rejection) -> bytes:
    """Format a rejection for the dead-letter topic: reason, original bytes, position."""
    record = {
        "reason": {
            "code": rejection.reason.code,
            "field": rejection.reason.field,
            "message": rejection.reason.message,
        },
        "raw": rejection.raw.decode("utf-8", errors="backslashreplace"),
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
    }
    return orjson.dumps(record)


def consumer_rejection(error: ConfluentKafkaError, raw: bytes | None) -> Rejection:
    """Describe a Kafka consumer error for the dead-letter topic (code ``consumer_error``).

    >>> consumer_rejection(ConfluentKafkaError(ConfluentKafkaError._MSG_TIMED_OUT), None).reason
    Reason(code='consumer_error', field='$', message='Kafka consumer error _MSG_TIMED_OUT: ...')
    """
    message = f"Kafka consumer error {error.name()}: {error.str()}"
    return Rejection(Reason("consumer_error", "$", message), redact_raw(raw or b""))


def _ingester(
    config: FlowConfig, *, clock: bool = False
) -> Callable[[list[Any]], list[tuple[str, Any]]]:
    """Validate, then key each item for its next step (one Python call per batch).

    Takes file-log :class:`Message`s or Kafka source items as they come, so Kafka
    messages need no conversion step of their own.
    """
    key, limit = config.hash_key, config.max_event_bytes
    observe = metrics.observe_validation

    def ingest(batch: list[Any]) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        earliest, latest = _NO_TIME, -_NO_TIME
        for raw in batch:
            if type(raw) is KafkaSourceMessage:
                stamp = raw.timestamp
                value, produced_ms = raw.value or b"", stamp[1] if stamp and stamp[0] else 0
            elif type(raw) is Message:
                value, produced_ms = raw.value, raw.produced_ms
            else:  # a consumer error, not a message: dead-letter what the error says
                result = consumer_rejection(raw.err, raw.msg.value)
                observe(result)
                out.append((_DEADLETTER, deadletter_record(from_kafka(raw), result)))
                continue
            result = validate(value, key=key, max_bytes=limit)
            observe(result)
            if isinstance(result, Rejection):
                message = raw if type(raw) is Message else from_kafka(raw)
                out.append((_DEADLETTER, deadletter_record(message, result)))
                continue
            for target, item in route(result, produced_ms):
                out.append((target, (target, item)))
            for redemption in redemptions_of(result):
                out.append((_REDEEMED, redemption))
            if clock:
                ts = result.event_time.timestamp()
                earliest, latest = min(earliest, ts), max(latest, ts)
        if clock and earliest != _NO_TIME:
            out.append((_CLOCK, (int(earliest), int(latest))))
        return out

    return ingest


def _is_fragment_input(keyed: tuple[str, Any]) -> bool:
    value = keyed[1]
    return type(value) is tuple and not isinstance(value[1], Event)


# --- keyed steps ------------------------------------------------------------------------------
def _person_index(
    state: PersonIndex | None, value: tuple[str, Event]
) -> tuple[PersonIndex, list[tuple[str, Any]]]:
    key, event = value
    state = state or PersonIndex()
    return state, [(fragment, (fragment, item)) for fragment, item in state.on_event(key, event)]


class SnapshottingLogic(StatefulBatchLogic[Any, Any, Any]):
    """Snapshots by pickling (an immutable copy, cheaper than ``deepcopy``) under recovery.

    Without recovery Bytewax still asks for snapshots and drops them: hand over the live
    state instead of paying for a copy.
    """

    state: Any
    copy_snapshots: bool

    def __init__(self, resume: Any, copy_snapshots: bool) -> None:
        self.copy_snapshots = copy_snapshots
        self.state = pickle.loads(resume) if isinstance(resume, bytes) else resume

    def snapshot(self) -> Any:
        if self.copy_snapshots:
            return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)
        return self.state


class _Fragments(SnapshottingLogic):
    state: FragmentLogic | None

    def on_batch(self, values: list[tuple[str, Any]]) -> tuple[list[Any], bool]:
        if self.state is None:
            self.state = FragmentLogic(values[0][0])
        out: list[ForProfile] = []
        for _key, item in values:
            self.state.on_input(item, out)
        return [out], StatefulBatchLogic.RETAIN


class _Profiles(SnapshottingLogic):
    state: ProfileState | None

    def __init__(self, resume: Any, copy_snapshots: bool, journeys: bool = False) -> None:
        super().__init__(resume, copy_snapshots)
        self.journeys = journeys

    def on_batch(self, values: list[tuple[str, Any]]) -> tuple[list[Any], bool]:
        if self.state is None:
            self.state = ProfileState(values[0][0])
        items = [item for _key, item in values]
        if not self.journeys:
            return [apply_profile_inputs(self.state, items)], self.state.empty
        inputs: list[JourneyInput] = []
        out = apply_profile_inputs(self.state, items, journey_inputs=inputs)
        latest = max((i.contribution.ts for i in items if isinstance(i, Delta)), default=0)
        return [out, JourneyFeed(self.state.profile_id, latest, inputs)], self.state.empty


def _is_journey_feed(keyed: tuple[str, Any]) -> bool:
    return type(keyed[1]) is JourneyFeed


def _to_profiles(keyed: tuple[str, list[ForProfile]]) -> list[tuple[str, Any]]:
    return [(profile, (profile, item)) for profile, item in keyed[1] if profile != STORE]


def _to_store(keyed: tuple[str, list[ForProfile]]) -> list[tuple[str, list[Any]]]:
    records = [item for profile, item in keyed[1] if profile == STORE]
    return [(keyed[0], records)] if records else []


def build_flow(
    config: FlowConfig,
    *,
    deadletter_path: Path | None = None,
    journeys: Callable[[Any, Any], None] | None = None,
    name: str = "omnioffer_features",
) -> Dataflow:
    """Build the feature dataflow for ``config``.

    Dead letters go to the ``deadletter`` Kafka topic when reading from Kafka, else to
    ``deadletter_path`` (default: ``deadletter.jsonl`` beside the event log). With
    ``journeys``, the profiles step also emits a :class:`~features.pipeline.JourneyFeed`
    per profile batch, the ingest step the earliest and latest event time of each batch it
    read (a clock for every journey shard, however quiet), and ``journeys(feeds, clock)`` attaches
    the steps that consume them.
    """
    flow = Dataflow(name)
    if config.source == "kafka" and config.merge_topics:
        merged_kafka = MergedKafkaSource(
            config.kafka_bootstrap, config.topics, batch_size=config.batch_size,
            tail=config.tail, fetch_wait_ms=config.fetch_wait_ms,
        )  # fmt: skip
        raw = op.input("read", flow, merged_kafka)
    elif config.source == "kafka":
        source = kafka_source(
            config.kafka_bootstrap,
            config.topics,
            tail=config.tail,
            batch_size=config.batch_size,
            fetch_wait_ms=config.fetch_wait_ms,
        )
        raw = op.input("read", flow, source)
    elif config.merge_topics:
        merged = MergedEventLogSource(config.event_log_dir, config.topics, config.batch_size)
        raw = op.input("read", flow, merged)
    else:
        source = EventLogSource(config.event_log_dir, config.topics, config.batch_size)
        raw = op.input("read", flow, source)

    ingested = op.flat_map_batch("ingest", raw, _ingester(config, clock=journeys is not None))
    clock = None
    if journeys is not None:
        timed = op.branch("clock", ingested, lambda kv: kv[0] == _CLOCK)
        clock, ingested = op.map("clock_time", timed.trues, lambda kv: kv[1]), timed.falses
    common = op.branch("fragment_input", ingested, _is_fragment_input)
    rare = op.branch("person_or_deadletter", common.falses, lambda kv: kv[0] not in _NOT_PERSON)
    # Budget spend goes straight to the store: it names offers and orders, not people.
    dead = op.branch("deadletter_or_redemption", rare.falses, lambda kv: kv[0] == _DEADLETTER)
    _deadletter(config, dead.trues, deadletter_path)
    redemptions = op.map("redemption_items", dead.falses, lambda kv: (kv[0], [kv[1]]))

    fanned = op.flat_map(
        "fan_out", op.stateful_map("person_index", rare.trues, _person_index), lambda kv: kv[1]
    )
    fragment_inputs = op.merge("fragment_inputs", common.trues, fanned)
    copies = config.recovery
    fragment_out = op.stateful_batch(
        "fragments", fragment_inputs, lambda resume: _Fragments(resume, copies)
    )
    profile_inputs = op.flat_map("to_profiles", fragment_out, _to_profiles)
    with_feeds = journeys is not None
    profile_out = op.stateful_batch(
        "profiles", profile_inputs, lambda resume: _Profiles(resume, copies, with_feeds)
    )
    if journeys is not None:
        split = op.branch("journey_feeds", profile_out, _is_journey_feed)
        journeys(split.trues, clock)
        profile_out = split.falses
    # Not re-keyed: identity records are written by the worker of their identifier.
    records = op.flat_map("to_store", fragment_out, _to_store)
    store_items = op.merge("store_items", profile_out, records, redemptions)
    op.output("online_store", store_items, StoreSink(config.open_store))
    return flow


def _deadletter(config: FlowConfig, dead: Any, path: Path | None) -> None:
    if config.source == "kafka":
        to_kafka = op.map("deadletter_message", dead, lambda kv: KafkaSinkMessage(None, kv[1]))
        op.output("deadletter", to_kafka, KafkaSink([config.kafka_bootstrap], DEADLETTER))
        return
    path = path or config.event_log_dir / f"{DEADLETTER}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    as_text = op.map("deadletter_text", dead, lambda kv: ("deadletter", kv[1].decode()))
    op.output("deadletter", as_text, FileSink(path))


def run(
    config: FlowConfig,
    *,
    workers: int = 1,
    recovery_dir: Path | None = None,
    snapshot_interval_s: float = 10.0,
    backup_interval_s: float = 0.0,
    deadletter_path: Path | None = None,
    build: Callable[[FlowConfig], Dataflow] | None = None,
) -> None:
    """Run the feature flow (or the flow ``build`` makes) in this process until input ends.

    ``workers`` threads. With ``recovery_dir``, state and input offsets are snapshotted
    every ``snapshot_interval_s`` into Bytewax recovery partitions (created when missing),
    and a restart resumes from the last snapshot.
    """
    recovery = None
    if recovery_dir is not None:
        if not any(recovery_dir.glob("part-*.sqlite3")):
            recovery_dir.mkdir(parents=True, exist_ok=True)
            init_db_dir(recovery_dir, max(1, workers))
        recovery = RecoveryConfig(str(recovery_dir), timedelta(seconds=backup_interval_s))
    if recovery is None:
        config = dataclasses.replace(config, recovery=False)
    flow = build_flow(config, deadletter_path=deadletter_path) if build is None else build(config)
    cli_main(
        flow,
        workers_per_process=workers,
        epoch_interval=timedelta(seconds=snapshot_interval_s),
        recovery_config=recovery,
    )


def _from_settings() -> Dataflow:
    from omnioffer.settings import Settings

    settings = Settings()
    return build_flow(settings.flow_config())


def __getattr__(name: str) -> Any:
    # `python -m bytewax.run flows.features_flow:flow` builds the flow from OMNIOFFER_* settings.
    if name == "flow":
        return _from_settings()
    message = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(message)


def now_ms() -> int:
    """Wall-clock milliseconds (for lag metrics only; never for event-time logic)."""
    return int(time.time() * 1000)
