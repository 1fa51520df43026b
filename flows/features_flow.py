"""The streaming feature pipeline as a Bytewax dataflow.

``read -> validate -> (deadletter | route) -> person_index -> fragments -> profiles -> store``

The logic of every keyed step lives in :mod:`features.pipeline` (shared with batch
recomputation); this module only wires it into Bytewax and adapts I/O. Run it with
``omnioffer flow features`` or, for several workers and processes::

    python -m bytewax.run "flows.features_flow:flow" -w 2
    python -m bytewax.run "flows.features_flow:flow" -i 0 -a "127.0.0.1:2101;127.0.0.1:2102"

configured by ``OMNIOFFER_*`` settings (source, store, addresses).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.connectors.files import FileSink
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic

from features.events import Event
from features.pipeline import (
    Delta,
    FragmentLogic,
    Observe,
    PersonIndex,
    ProfileInput,
    ProfileOut,
    apply_profile_inputs,
    needs_person_index,
    route,
)
from features.profile import ProfileState
from features.store import OnlineStore
from features.topics import DEADLETTER, EVENT_TOPICS
from features.validation import Rejection, validate
from flows import metrics
from flows.sinks import StoreSink
from flows.sources import EventLogSource, Message, from_kafka, kafka_source


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
    topics: tuple[str, ...] = field(default=EVENT_TOPICS)


# --- validation and dead-letter -------------------------------------------------------------
Checked = tuple[Message, Event | Rejection]


def _validator(config: FlowConfig) -> Callable[[Message], Checked]:
    key, limit = config.hash_key, config.max_event_bytes

    def check(message: Message) -> Checked:
        result = validate(message.value, key=key, max_bytes=limit)
        metrics.observe_validation(message, result)
        return message, result

    return check


def deadletter_record(checked: Checked) -> tuple[str, bytes]:
    """Format a rejection for the dead-letter topic: reason, original bytes, position."""
    message, rejection = checked
    assert isinstance(rejection, Rejection)  # noqa: S101 - guaranteed by the branch
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
    return f"{message.topic}:{message.partition}", orjson.dumps(record)


# --- keyed steps ------------------------------------------------------------------------------
def _route(checked: Checked) -> list[tuple[str, Any]]:
    message, event = checked
    routed = route(event)  # type: ignore[arg-type]
    if message.produced_ms:
        return [
            (key, Observe(item.contribution, message.produced_ms))
            if isinstance(item, Observe)
            else (key, item)
            for key, item in routed
        ]
    return routed


def _person_index(state: PersonIndex | None, value: tuple[str, Event]) -> tuple[PersonIndex, Any]:
    key, event = value
    state = state or PersonIndex()
    return state, [(fragment, (fragment, item)) for fragment, item in state.on_event(key, event)]


class _Pickled(StatefulBatchLogic[Any, Any, bytes]):
    """Snapshot by pickling: an immutable copy that is cheaper than ``deepcopy``."""

    state: Any

    def snapshot(self) -> bytes:
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)


class _Fragments(_Pickled):
    def __init__(self, resume: bytes | None) -> None:
        self.state: FragmentLogic | None = pickle.loads(resume) if resume else None

    def on_batch(self, values: list[tuple[str, Any]]) -> tuple[list[Any], bool]:
        if self.state is None:
            self.state = FragmentLogic(values[0][0])
        out: list[Any] = []
        for _key, item in values:
            out.extend(self.state.on_input(item))
        return out, StatefulBatchLogic.RETAIN


class _Profiles(_Pickled):
    def __init__(self, resume: bytes | None) -> None:
        self.state: ProfileState | None = pickle.loads(resume) if resume else None

    def on_batch(self, values: list[tuple[str, ProfileInput]]) -> tuple[list[Any], bool]:
        if self.state is None:
            self.state = ProfileState(values[0][0])
        written = apply_profile_inputs(self.state, [item for _key, item in values])
        produced = max((v.produced_ms for _k, v in values if isinstance(v, Delta)), default=0)
        if produced:
            written = ProfileOut(written.profile_id, written.value, written.erased, produced)
        discard = written.value is None
        return [written], discard


def _with_key(keyed: tuple[str, Any]) -> tuple[str, tuple[str, Any]]:
    key, item = keyed
    return key, (key, item)


def build_flow(config: FlowConfig, *, deadletter_path: Path | None = None) -> Dataflow:
    """Build the feature dataflow for ``config``.

    Dead letters go to the ``deadletter`` Kafka topic when reading from Kafka, else to
    ``deadletter_path`` (default: ``deadletter.jsonl`` beside the event log).
    """
    flow = Dataflow("omnioffer_features")
    if config.source == "kafka":
        source = kafka_source(
            config.kafka_bootstrap, config.topics, tail=config.tail, batch_size=config.batch_size
        )
        raw = op.map("from_kafka", op.input("read", flow, source), from_kafka)
    else:
        source = EventLogSource(config.event_log_dir, config.topics, config.batch_size)
        raw = op.input("read", flow, source)

    checked = op.map("validate", raw, _validator(config))
    valid = op.branch("split_valid", checked, lambda c: not isinstance(c[1], Rejection))
    dead = op.map("deadletter_record", valid.falses, deadletter_record)
    if config.source == "kafka":
        to_kafka = op.map("deadletter_message", dead, lambda kv: KafkaSinkMessage(*kv))
        op.output("deadletter", to_kafka, KafkaSink([config.kafka_bootstrap], DEADLETTER))
    else:
        path = deadletter_path or config.event_log_dir / f"{DEADLETTER}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        as_text = op.map("deadletter_text", dead, lambda kv: ("deadletter", kv[1].decode()))
        op.output("deadletter", as_text, FileSink(path))

    routed = op.flat_map("route", valid.trues, _route)
    by_path = op.branch("needs_person_index", routed, lambda kv: needs_person_index(*kv))
    indexed = op.stateful_map(
        "person_index", op.map("person_key", by_path.trues, _with_key), _person_index
    )
    fanned = op.flat_map("fan_out", indexed, lambda kv: kv[1])
    fragment_inputs = op.merge(
        "fragment_inputs", fanned, op.map("fragment_key", by_path.falses, _with_key)
    )
    fragment_out = op.key_rm(
        "fragment_out", op.stateful_batch("fragments", fragment_inputs, _Fragments)
    )
    to_profile = op.branch("profile_or_store", fragment_out, lambda x: isinstance(x, tuple))
    profile_out = op.key_rm(
        "profile_out",
        op.stateful_batch("profiles", op.map("profile_key", to_profile.trues, _with_key), _Profiles),
    )
    store_items = op.merge("store_items", profile_out, to_profile.falses)
    op.output("online_store", store_items, StoreSink(config.open_store))
    return flow


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
