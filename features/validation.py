"""Turn raw bytes into a valid event or a rejection with a reason; never raise.

Bad input is data: :func:`validate` returns either an :class:`~features.events.Event`
(raw contacts already hashed) or a :class:`Rejection` that names the field and the problem,
ready for the dead-letter topic.

>>> r = validate(b'{"kind": "teleport", "event_id": "e1"}', key=b"k")
>>> r.reason.code, r.reason.field
('unknown_kind', 'kind')
>>> print(r.reason.message)
unknown event kind 'teleport'; expected one of: page_view, product_view, search, ...
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

import msgspec

from features.contacts import drop_junk_contacts, redact_head, redact_raw, redact_text, scrub_event
from features.events import (
    KINDS,
    Event,
    IdentityLink,
    IdentityUnlink,
    PointsExpiry,
    Purchase,
    decode_event,
)

DEFAULT_MAX_EVENT_BYTES = 64 * 1024
# Times far outside these would poison last-writer-wins registers and horizons (or not
# even convert back to a date), so they are rejected as bad times.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)

ReasonCode = Literal[
    "oversize",
    "malformed_json",
    "not_an_object",
    "unknown_kind",
    "missing",
    "wrong_type",
    "bad_time",
    "invalid_value",
    "no_identifier",
    "inconsistent",
    "consumer_error",  # not an event: the Kafka consumer reported an error (flows)
]


class Reason(msgspec.Struct, frozen=True):
    """Why an event was rejected: a machine-readable code, the field, and a sentence."""

    code: ReasonCode
    field: str
    message: str


class Rejection(msgspec.Struct, frozen=True):
    """An input that failed validation, with its raw bytes (contacts redacted)."""

    reason: Reason
    raw: bytes


_AT_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_INVALID_TAG = re.compile(r"Invalid value '(?P<value>[^']*)'")
_KIND_LIST = ", ".join(KINDS[:3]) + ", ..."


_QUOTED_VALUE = re.compile(r"Invalid enum value '.*'")
_KIND_LIKE = re.compile(r"[a-z][a-z0-9_]{0,39}")


def _reason_from_msgspec(error: msgspec.ValidationError) -> Reason:
    # msgspec quotes the bad value: a raw contact in the wrong field must not reach the
    # dead-letter record through its message.
    text = _QUOTED_VALUE.sub("Invalid enum value", redact_text(str(error)))
    match = _AT_PATH.search(text)
    path = match.group("path") if match else ""
    detail = text[: match.start()] if match else text
    if missing := _MISSING.match(detail):
        field = ".".join(p for p in (path, missing.group("field")) if p)
        return Reason("missing", field, f"required field '{field}' is missing")
    if path == "kind":
        if tag := _INVALID_TAG.match(detail):
            value = tag.group("value")
            # Repeated only when it looks like a kind: anything else may be a contact.
            named = f" '{value}'" if _KIND_LIKE.fullmatch(value) else ""
            message = f"unknown event kind{named}; expected one of: {_KIND_LIST}"
            return Reason("unknown_kind", "kind", message)
        return Reason("unknown_kind", "kind", f"'kind' must be a string; {detail}")
    field = path or "$"
    if "datetime" in detail:
        message = f"'{field}' must be an ISO-8601 time with offset; {detail}"
        return Reason("bad_time", field, message)
    if field == "$" and detail.startswith("Expected `object`"):
        return Reason("not_an_object", "$", f"an event must be a JSON object; {detail}")
    if detail.startswith("Expected `") and ", got `" in detail:
        return Reason("wrong_type", field, f"'{field}': {detail}")
    return Reason("invalid_value", field, f"'{field}': {detail}")


def _semantic_reason(event: Event) -> Reason | None:
    if not EARLIEST <= event.event_time < LATEST:
        message = (
            f"'event_time' must be between {EARLIEST.year} and {LATEST.year}; "
            f"got {event.event_time.isoformat()}"
        )
        return Reason("bad_time", "event_time", message)
    if isinstance(event, PointsExpiry) and not EARLIEST <= event.expires_at < LATEST:
        message = f"'expires_at' must be between {EARLIEST.year} and {LATEST.year}"
        return Reason("bad_time", "expires_at", message)
    ids = event.ids
    if (
        ids.customer_id is None
        and ids.card_id is None
        and ids.device_id is None
        and ids.anonymous_id is None
        and ids.email_hash is None
        and ids.phone_hash is None
    ):
        return Reason("no_identifier", "ids", "at least one identifier is required in 'ids'")
    if isinstance(event, IdentityLink) and len(present := ids.present()) < 2:
        message = f"an identity link needs two identifiers or more; got {sorted(present)}"
        return Reason("inconsistent", "ids", message)
    if isinstance(event, IdentityUnlink) and (ids.customer_id is None or len(ids.present()) < 2):
        message = ("an identity unlink needs the customer_id and the identifiers to detach "
                   f"from them; got {sorted(ids.present())}")  # fmt: skip
        return Reason("inconsistent", "ids", message)
    if isinstance(event, Purchase) and event.channel == "store" and event.store_id is None:
        return Reason("missing", "store_id", "an in-store purchase needs 'store_id'")
    return None


def validate(
    raw: bytes, *, key: bytes, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> Event | Rejection:
    """Validate one raw event; hash raw contacts; return the event or a rejection.

    Parameters
    ----------
    raw
        The message value as received.
    key
        The HMAC key for contact hashing (``Settings.contact_hash_key``).
    max_bytes
        Larger inputs are rejected as ``oversize`` without being parsed.

    """
    if len(raw) > max_bytes:
        message = f"event is {len(raw)} bytes; the limit is {max_bytes}"
        return Rejection(Reason("oversize", "$", message), redact_head(raw))
    try:
        event = decode_event(raw)
    except msgspec.ValidationError as error:
        return Rejection(_reason_from_msgspec(error), redact_raw(raw))
    except msgspec.DecodeError as error:
        return Rejection(Reason("malformed_json", "$", f"not valid JSON: {error}"), redact_raw(raw))
    ids, junk = drop_junk_contacts(event.ids)
    if junk:  # "" or "n/a" for a contact the client lacks: left out, never hashed
        event = msgspec.structs.replace(event, ids=ids)
    event = scrub_event(event, key=key)
    if (reason := _semantic_reason(event)) is not None:
        if junk and reason.code in ("no_identifier", "inconsistent"):
            reason = Reason("invalid_value", junk[0].field, str(junk[0]))  # the cause
        return Rejection(reason, redact_raw(raw))
    return event
