"""Topic names, which topic an event kind travels on, and its routing key.

The message key of an event is the routing identifier so one person's events stay ordered
within a partition: the most stable identifier the event carries. A decision record is
keyed by its own id instead (``features.decisions.decision_key``), so that its topic can be
compacted and one record erased (``TOPIC_CONFIGS``).

>>> topic_for("add_to_cart"), topic_for("consent")
('events.clickstream', 'events.consent')
"""

from __future__ import annotations

from features.events import CLICKSTREAM_KINDS, ID_FIELDS, Event, Identifiers

CLICKSTREAM = "events.clickstream"
PURCHASES = "events.purchases"
ENGAGEMENT = "events.engagement"
IDENTITY = "events.identity"
CONSENT = "events.consent"
DECISIONS = "decisions"
OUTCOMES = "outcomes"
TRIGGERS = "triggers"
MESSAGES_OUTBOUND = "messages.outbound"
DEADLETTER = "deadletter"
# Erasures of people's decisions queued by the API for ``omnioffer eraser`` (see
# serving.eraser). They name the person's identifiers, so they expire, after 30 days: the
# time the law gives to answer an erasure request, and far longer than an eraser may be down.
DECISION_ERASURES = "decisions.erasures"
# What the eraser did with each job, keyed by the job's id (GET /v1/erasures/{id} reads it).
DECISION_ERASURES_DONE = "decisions.erasures.done"

EVENT_TOPICS = (CLICKSTREAM, PURCHASES, ENGAGEMENT, IDENTITY, CONSENT)
ALL_TOPICS = (*EVENT_TOPICS, DECISIONS, OUTCOMES, TRIGGERS, MESSAGES_OUTBOUND, DEADLETTER,
              DECISION_ERASURES, DECISION_ERASURES_DONE)  # fmt: skip

_WEEK_MS = 7 * 24 * 3600 * 1000
# Topic settings besides the broker's defaults, applied when a topic is created. Erasing a
# person's decisions writes a tombstone under each decision id: compaction ("compact") then
# removes the records, at the latest max.compaction.lag.ms after the tombstone (without
# that bound a quiet partition may not be cleaned for far longer); "delete" keeps expiring
# every record at the end of the retention, as on any other topic.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    DECISIONS: {"cleanup.policy": "compact,delete", "max.compaction.lag.ms": str(_WEEK_MS)},
    DECISION_ERASURES: {"retention.ms": str(30 * 24 * 3600 * 1000)},
    DECISION_ERASURES_DONE: {"cleanup.policy": "compact,delete",
                             "retention.ms": str(30 * 24 * 3600 * 1000)},
}

_TOPIC_BY_KIND = {
    **{kind: CLICKSTREAM for kind in CLICKSTREAM_KINDS},
    "purchase": PURCHASES,
    "refund": PURCHASES,
    "points_expiry": PURCHASES,
    "engagement": ENGAGEMENT,
    "identity_link": IDENTITY,
    # With the erasures, on purpose: both are keyed by the customer, so an unlink and a
    # later erasure of that customer reach the flow in the order they were asked.
    "identity_unlink": CONSENT,
    "consent": CONSENT,
    "erasure_request": CONSENT,
}


def topic_for(kind: str) -> str:
    """Return the topic an event kind is published on."""
    try:
        return _TOPIC_BY_KIND[kind]
    except KeyError:
        message = f"unknown event kind {kind!r}; expected one of {sorted(_TOPIC_BY_KIND)}"
        raise ValueError(message) from None


def routing_key(event: Event) -> str:
    """Return the message key: the first identifier present in ``ID_FIELDS`` order."""
    return routing_key_for(event.ids, event.event_id)


def routing_key_for(ids: Identifiers, fallback: str) -> str:
    """Return the first identifier of ``ids`` in ``ID_FIELDS`` order, else ``fallback``."""
    for name in ID_FIELDS:
        if (value := getattr(ids, name)) is not None:
            return value
    return fallback
