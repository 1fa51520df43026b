"""What real event streams do to data: duplicates, late arrivals and malformed lines.

Pure functions over encoded events. A malformed line is derived from a valid event and
goes to the topic the event would have gone to, so consumers meet it where it hurts.
Every variant is one line (no newline) and fails :func:`features.validation.validate`.

>>> raw = b'{"kind":"search","query":"tea","event_id":"e1","event_time":"2026-03-02T10:00:00Z",'
>>> raw += b'"source":"web","ids":{"anonymous_id":"an-1"}}'
>>> malformed(raw, "unknown_kind")[:22]
b'{"kind":"teleport","qu'
>>> malformed(raw, "not_json")
b'{"kind":"search","query":"tea","event_id":"e1","event_time":"202'
"""

from __future__ import annotations

import random

import orjson

MALFORMED_KINDS = (
    "not_json",
    "json_array",
    "missing_field",
    "wrong_type",
    "bad_time",
    "unknown_kind",
    "oversize",
    "no_identifier",
)
# The rejection code features.validation gives each variant.
EXPECTED_REASON = {
    "not_json": "malformed_json",
    "json_array": "not_an_object",
    "missing_field": "missing",
    "wrong_type": "wrong_type",
    "bad_time": "bad_time",
    "unknown_kind": "unknown_kind",
    "oversize": "oversize",
    "no_identifier": "no_identifier",
}
OVERSIZE_BYTES = 70 * 1024
DUPLICATE_DELAY_S = (1, 600)


def malformed(raw: bytes, kind: str) -> bytes:
    """Return a broken single-line variant of the valid JSON event ``raw``."""
    if kind == "not_json":
        # Half of a JSON object never closes its brace.
        return raw[: len(raw) // 2]
    if kind == "json_array":
        return b"[" + raw + b"]"
    if kind == "oversize":
        return raw[:-1] + b',"padding":"' + b"x" * OVERSIZE_BYTES + b'"}'
    event = orjson.loads(raw)
    if kind == "missing_field":
        del event["event_id"]
    elif kind == "wrong_type":
        event["event_id"] = 12345
    elif kind == "bad_time":
        # A naive local time: the sender forgot the offset.
        event["event_time"] = event["event_time"][:19]
    elif kind == "unknown_kind":
        event = {"kind": "teleport", **{k: v for k, v in event.items() if k != "kind"}}
    elif kind == "no_identifier":
        event["ids"] = {}
    else:
        message = f"unknown malformed kind {kind!r}; expected one of {MALFORMED_KINDS}"
        raise ValueError(message)
    return orjson.dumps(event)


def late_delay_seconds(rng: random.Random, max_late_hours: float) -> int:
    """Return how long after its event time a late event arrives (1 minute or more)."""
    return 60 + int(rng.random() * max(max_late_hours * 3600 - 60, 1))


def duplicate_delay_seconds(rng: random.Random) -> int:
    """Return how long after the original a re-sent duplicate arrives."""
    return rng.randint(*DUPLICATE_DELAY_S)
