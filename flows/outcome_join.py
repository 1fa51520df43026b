"""The outcome join as a Bytewax dataflow: decisions + outcomes -> labelled training examples.

``read (decisions, events.engagement, events.purchases) -> parse -> shard -> join -> sink``

Decisions and engagement outcomes are keyed by a stable hash of their ``decision_id`` into
``shards`` join states; purchase redemptions (rare) go to every shard, because the decision
they answer is found by identifier and offer, not by id. Every input batch also sends each
shard its source's newest event time, so every shard's watermark advances from the events
themselves (:class:`features.attribution.OutcomeJoin`), never from the wall clock: a replay
of the same input gives the same examples. Only a tailing run (``--tail``) looks at the
clock: a topic that has delivered nothing for ``idle_s`` seconds (no purchases yet, a quiet
night) stops holding the watermark back until it delivers again. Invalid messages are
skipped here (the feature flow dead-letters them). Run it with ``omnioffer flow outcomes``,
or with ``omnioffer``'s settings::

    python -m bytewax.run "flows.outcome_join:flow"
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bytewax.operators as op
import msgspec
from bytewax.connectors.files import FileSink
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.testing import run_main

from features.attribution import (
    AttributionWindows,
    LabelledExample,
    OutcomeJoin,
    encode_example,
    outcomes_of,
)
from features.decisions import decode_decision
from features.topics import DECISIONS, ENGAGEMENT, PURCHASES
from features.validation import Rejection, validate
from flows.sources import EventLogSource, Message, from_kafka, kafka_source

if TYPE_CHECKING:
    from omnioffer.settings import Settings

JOIN_TOPICS = (DECISIONS, ENGAGEMENT, PURCHASES)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutcomeJoinConfig:
    """What the outcome join reads and how it attributes."""

    hash_key: bytes
    windows: AttributionWindows = field(default_factory=AttributionWindows)
    source: str = "files"
    event_log_dir: Path = Path(".omnioffer/events")
    kafka_bootstrap: str = "127.0.0.1:9092"
    tail: bool = False
    max_event_bytes: int = 64 * 1024
    batch_size: int = 1000
    shards: int = 8
    topics: tuple[str, ...] = JOIN_TOPICS
    idle_s: float = 300.0  # with ``tail``: a topic silent this long stops holding the join


# Items between steps: (kind, payload); kinds are "decision", "outcome" and "progress".
Item = tuple[str, Any]


def shard_of(decision_id: str, shards: int) -> str:
    """Return the shard key of a decision id (stable across processes, unlike ``hash``)."""
    return str(zlib.crc32(decision_id.encode()) % shards)


def parse_batch(config: OutcomeJoinConfig, batch: list[Message]) -> list[tuple[str, Item]]:
    """Turn a batch of messages into keyed join inputs plus one progress item per shard.

    A message that cannot be parsed is skipped (the feature flow dead-letters it); only
    valid event times advance the watermark. Progress is tracked per topic.
    """
    out: list[tuple[str, Item]] = []
    newest: dict[str, int] = {}
    every_shard = [str(s) for s in range(config.shards)]
    for message in batch:
        source = f"{message.topic}"
        if message.topic == DECISIONS:
            try:
                decision = decode_decision(message.value)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            at = int(decision.decided_at.timestamp())
            out.append((shard_of(decision.decision_id, config.shards), ("decision", decision)))
        else:
            event = validate(message.value, key=config.hash_key, max_bytes=config.max_event_bytes)
            if isinstance(event, Rejection):
                continue
            at = int(event.event_time.timestamp())
            for outcome in outcomes_of(event):
                if outcome.decision_id is not None:
                    shard = shard_of(outcome.decision_id, config.shards)
                    out.append((shard, ("outcome", outcome)))
                else:
                    out.extend((shard, ("outcome", outcome)) for shard in every_shard)
        newest[source] = max(newest.get(source, at), at)
    for source, at in sorted(newest.items()):
        out.extend((shard, ("progress", (source, at))) for shard in every_shard)
    return out


def _utc_now() -> datetime:
    return datetime.now(UTC)


class JoinLogic(StatefulBatchLogic[Item, LabelledExample, OutcomeJoin]):
    """One shard's :class:`OutcomeJoin` inside Bytewax; flushes at the end of the input.

    While tailing, a topic that delivers nothing for ``config.idle_s`` seconds (wall clock)
    is marked idle (:meth:`OutcomeJoin.mark_idle`) at Bytewax's notification.
    """

    def __init__(self, config: OutcomeJoinConfig, resume: OutcomeJoin | None,
                 clock: Callable[[], datetime] = _utc_now) -> None:  # fmt: skip
        self.join = resume or OutcomeJoin(config.windows, sources=config.topics)
        # Idleness is this process's wall-clock view: after a restart every topic holds
        # the watermark again until it is seen quiet here (its backlog may be waiting).
        self.join.idle.clear()
        # Bounded runs never look at the clock, so a replay gives the same examples.
        live = config.tail and config.idle_s > 0
        self.idle_after = timedelta(seconds=config.idle_s) if live else None
        self.clock = clock
        started = clock()
        self.last_delivery = dict.fromkeys(self.join.sources, started)

    def on_batch(self, values: list[Item]) -> tuple[Iterable[LabelledExample], bool]:
        out: list[LabelledExample] = []
        join = self.join
        now = self.clock() if self.idle_after is not None else None
        for kind, payload in values:
            if kind == "decision":
                out += join.on_decision(payload)
            elif kind == "outcome":
                join.on_outcome(payload)
            elif now is None:
                out += join.advance(*payload)
            else:
                # An event time past the clock (a device with a wrong date) counts as now:
                # once the others go quiet, it alone would move the watermark.
                source, at = payload
                out += join.advance(source, min(at, int(now.timestamp())))
                self.last_delivery[source] = now
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self.idle_after is None:
            return None
        waiting = [t for s, t in self.last_delivery.items() if s not in self.join.idle]
        return min(waiting) + self.idle_after if waiting else None

    def on_notify(self) -> tuple[Iterable[LabelledExample], bool]:
        out: list[LabelledExample] = []
        if self.idle_after is None:
            return out, StatefulBatchLogic.RETAIN
        now = self.clock()
        for source, last in sorted(self.last_delivery.items()):
            if source not in self.join.idle and now - last >= self.idle_after:
                log.info("outcome join: %s delivered nothing for %s; not waiting for it",
                         source, self.idle_after)  # fmt: skip
                out += self.join.mark_idle(source)
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[LabelledExample], bool]:
        return self.join.flush(), StatefulBatchLogic.RETAIN

    def snapshot(self) -> OutcomeJoin:
        return self.join


def build_flow(config: OutcomeJoinConfig, out_path: Path) -> Dataflow:
    """Build the outcome-join dataflow writing one JSON example per line to ``out_path``."""
    flow = Dataflow("omnioffer_outcome_join")
    if config.source == "kafka":
        source = kafka_source(
            config.kafka_bootstrap, config.topics, tail=config.tail, batch_size=config.batch_size
        )
        raw = op.map("from_kafka", op.input("read", flow, source), from_kafka)
    else:
        source = EventLogSource(config.event_log_dir, config.topics, config.batch_size)
        raw = op.input("read", flow, source)
    keyed = op.flat_map_batch("parse", raw, lambda batch: parse_batch(config, batch))
    joined = op.stateful_batch("join", keyed, lambda resume: JoinLogic(config, resume))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(b"")
    lines = op.map("encode", joined, lambda kv: ("examples", encode_example(kv[1]).decode()))
    op.output("examples", lines, FileSink(out_path))
    return flow


def run(config: OutcomeJoinConfig, out_path: Path) -> None:
    """Run the outcome join in this process until its input ends.

    A bounded run writes beside ``out_path`` and replaces it at the end (one rename), so
    training never reads a half-written file, nor an empty one after an interrupted run.
    """
    if config.tail:
        run_main(build_flow(config, out_path))
        return
    partial = out_path.with_name(out_path.name + ".partial")
    run_main(build_flow(config, partial))
    os.replace(partial, out_path)


def config_from(settings: Settings) -> OutcomeJoinConfig:
    """Return the outcome join's configuration from ``omnioffer``'s settings."""
    return OutcomeJoinConfig(
        hash_key=settings.hash_key,
        windows=settings.attribution_windows,
        source=settings.source,
        event_log_dir=settings.event_log_dir,
        kafka_bootstrap=settings.kafka_bootstrap,
        tail=settings.tail,
        max_event_bytes=settings.max_event_bytes,
        idle_s=settings.outcome_idle_s,
    )


def _from_settings() -> Dataflow:
    from omnioffer.settings import Settings

    settings = Settings()
    return build_flow(config_from(settings), settings.examples_path)


def __getattr__(name: str) -> Any:
    # `python -m bytewax.run flows.outcome_join:flow` builds the flow from OMNIOFFER_* settings.
    if name == "flow":
        return _from_settings()
    message = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(message)
