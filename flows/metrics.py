"""Prometheus metrics of the flows: what came in, what was dead-lettered, merges, lag."""

from __future__ import annotations

import functools
import time
from typing import Any

from prometheus_client import Counter, Histogram

from features.events import Event
from features.validation import Rejection

EVENTS_IN = Counter("omnioffer_flow_events_total", "Valid events read, by kind.", ["kind"])
DEADLETTERED = Counter(
    "omnioffer_flow_deadlettered_total", "Events sent to the dead-letter, by reason.", ["reason"]
)
MERGES = Counter(
    "omnioffer_flow_merges_total", "Identifiers that changed profile, by rule.", ["rule"]
)
PROFILE_WRITES = Counter("omnioffer_flow_profile_writes_total", "Profile values written.")
SINK_SECONDS = Histogram(
    "omnioffer_flow_sink_write_seconds",
    "Time to write one batch to the online store.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
END_TO_END_SECONDS = Histogram(
    "omnioffer_flow_end_to_end_lag_seconds",
    "From an event reaching the broker to its profile being written to the store.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


@functools.cache
def _events_in(kind: str) -> Any:
    return EVENTS_IN.labels(kind)


def observe_validation(result: Event | Rejection) -> None:
    """Count one validated message by kind, or by rejection reason."""
    if isinstance(result, Rejection):
        DEADLETTERED.labels(result.reason.code).inc()
    else:
        _events_in(type(result).__struct_config__.tag).inc()


def observe_lag(produced_ms: int) -> None:
    """Record end-to-end lag for an event produced at ``produced_ms`` (wall clock)."""
    if produced_ms:
        END_TO_END_SECONDS.observe(max(0.0, time.time() - produced_ms / 1000))


JOURNEY_ENTRIES = Counter(
    "omnioffer_journey_entries_total",
    "Journey entries, by journey and group.",
    ["journey", "group"],
)
JOURNEY_EXITS = Counter(
    "omnioffer_journey_exits_total", "Journey exits, by journey and reason.", ["journey", "reason"]
)
JOURNEY_MESSAGES = Counter(
    "omnioffer_journey_messages_total",
    "Journey messages decided, by journey, step and channel.",
    ["journey", "step", "channel"],
)
JOURNEY_SUPPRESSED = Counter(
    "omnioffer_journey_suppressed_total",
    "Journey steps that sent nothing, by journey and rule (control_group: held out).",
    ["journey", "rule"],
)
JOURNEY_CONVERSIONS = Counter(
    "omnioffer_journey_conversions_total",
    "Journey goals reached, by journey and group.",
    ["journey", "group"],
)
JOURNEY_DUPLICATES_SKIPPED = Counter(
    "omnioffer_journey_duplicates_skipped_total",
    "Outbound messages not written again because the contact log already had them.",
)
JOURNEY_SENDS_REFUSED = Counter(
    "omnioffer_journey_sends_refused_total",
    "Outbound messages not sent: the contact log changed since the decision, by rule.",
    ["rule"],
)
JOURNEY_MODEL_ERRORS = Counter(
    "omnioffer_journey_model_errors_total", "Promoted models the journey flow failed to load."
)
JOURNEY_POLICY_RELOADS = Counter(
    "omnioffer_journey_policy_reloads_total",
    "Policy-file reloads of the journey flow by result (reloaded, rejected).",
    ["result"],
)


def observe_journey(record: Any) -> None:
    """Count one journey record (see :mod:`features.journeys`)."""
    kind = type(record).__name__
    group = "control" if record.control else "treated"
    if kind == "Entered":
        JOURNEY_ENTRIES.labels(record.journey, group).inc()
    elif kind == "Exited":
        JOURNEY_EXITS.labels(record.journey, record.reason).inc()
    elif kind == "Outbound":
        JOURNEY_MESSAGES.labels(record.journey, record.step, record.channel).inc()
    elif kind == "Suppressed":
        JOURNEY_SUPPRESSED.labels(record.journey, record.rule).inc()
    elif kind == "HeldOut":
        JOURNEY_SUPPRESSED.labels(record.journey, "control_group").inc()
    elif kind == "Converted":
        JOURNEY_CONVERSIONS.labels(record.journey, group).inc()
