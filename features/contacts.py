"""Normalize and hash raw contacts (email, phone) at the edge.

Raw contacts must never reach a topic, a store or a file. Every producer calls
:func:`hash_email` / :func:`hash_phone` (or :func:`scrub_identifiers`) before it writes.
The hash is a keyed HMAC-SHA256 so that a leaked hash cannot be reversed with a dictionary
of known emails without the key.

>>> hash_email("  Ann.Lee@Example.COM ", key=b"k") == hash_email("ann.lee@example.com", key=b"k")
True
>>> hash_phone("+49 (170) 123-4567", key=b"k") == hash_phone("+491701234567", key=b"k")
True
"""

from __future__ import annotations

import hashlib
import hmac
import re

import msgspec
import orjson

from features.events import Event, Identifiers

# For local runs and tests only; deployments set OMNIOFFER_CONTACT_HASH_KEY.
DEV_CONTACT_HASH_KEY = b"omnioffer-local-dev-key-change-me"

_NOT_DIGITS = re.compile(r"[^\d]")
# Starts only where a run of address characters starts: matched from every position of a
# long run (a padded field), the scan would be quadratic.
_EMAIL_LIKE = re.compile(rb"(?<![\w.+-])[\w.+-]+@[\w-]+(\.[\w-]+)+")
# International (+CC …) numbers only: bare digit runs are too often dates, ids or amounts.
_PHONE_LIKE = re.compile(rb"\+\d[\d ()./-]{6,}\d")
_RAW_CONTACT_KEYS = frozenset({"email", "phone"})
# The value of an email/phone key in text that is not JSON (cut short, a Python repr,
# escaped JSON inside a string, a bare number): quoted, or up to the next separator.
_CONTACT_FIELD = re.compile(
    rb"""(\\?["']?)(email|phone)(\\?["']?\s*[:=]\s*)(?:\\?["'][^"'\\]*(?:\\?["'])?|[^,;}\]\s]*)""",
    re.IGNORECASE,
)
# What is left of an address at the end of text cut short ("ann.lee@exa").
_CUT_EMAIL = re.compile(rb"(?<![\w.+-])[\w.+-]+@[\w.-]*\Z")


def normalize_email(email: str) -> str:
    """Lower-case and trim an email address."""
    return email.strip().lower()


def normalize_phone(phone: str) -> str:
    """Keep the digits of a phone number, with a leading ``+`` if it had one."""
    stripped = phone.strip()
    digits = _NOT_DIGITS.sub("", stripped)
    return f"+{digits}" if stripped.startswith("+") else digits


def _hmac(value: str, key: bytes, prefix: str) -> str:
    digest = hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
    return f"{prefix}:{digest[:40]}"


class ContactError(ValueError):
    """A raw contact that is no address at all (empty, no ``@``, too few digits).

    Hashed, every such value would be one identifier shared by everyone who sent it. The
    message names the field, never the value.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


MIN_PHONE_DIGITS = 5  # national numbers as short as 5 digits exist (the Falklands)


def hash_email(email: str, *, key: bytes) -> str:
    """Return the keyed hash of a normalized email, e.g. ``"em:3f1c…"``.

    Raises :class:`ContactError` for what is not an address (``local@domain``).
    """
    normalized = normalize_email(email)
    _check_email(normalized)
    return _hmac(normalized, key, "em")


def _check_email(normalized: str) -> None:
    local, at, domain = normalized.rpartition("@")
    if not (at and local and domain):
        field, message = "ids.email", "'ids.email' is not an email address (local@domain)"
        raise ContactError(field, message)


def _check_phone(normalized: str) -> None:
    if len(normalized.lstrip("+")) < MIN_PHONE_DIGITS:
        field = "ids.phone"
        message = f"'{field}' is not a phone number (at least {MIN_PHONE_DIGITS} digits)"
        raise ContactError(field, message)


def hash_phone(phone: str, *, key: bytes) -> str:
    """Return the keyed hash of a normalized phone number, e.g. ``"ph:9a0b…"``.

    Raises :class:`ContactError` for fewer than :data:`MIN_PHONE_DIGITS` digits.
    """
    normalized = normalize_phone(phone)
    _check_phone(normalized)
    return _hmac(normalized, key, "ph")


def drop_junk_contacts(ids: Identifiers) -> tuple[Identifiers, list[ContactError]]:
    """Leave out a raw email or phone that is no address; say what was left out and why.

    Client SDKs send ``""`` or ``"n/a"`` for a contact they do not have: the rest of the
    identifiers (and the event) still count.

    >>> kept, junk = drop_junk_contacts(Identifiers(customer_id="c-1", email=""))
    >>> kept.email is None and kept.customer_id, [e.field for e in junk]
    ('c-1', ['ids.email'])
    """
    junk: list[ContactError] = []
    changes: dict[str, None] = {}
    for name, value, check, normalize in (
        ("email", ids.email, _check_email, normalize_email),
        ("phone", ids.phone, _check_phone, normalize_phone),
    ):
        if value is None:
            continue
        try:
            check(normalize(value))
        except ContactError as error:
            junk.append(error)
            changes[name] = None
    return (msgspec.structs.replace(ids, **changes) if changes else ids), junk


def scrub_identifiers(ids: Identifiers, *, key: bytes) -> Identifiers:
    """Replace raw ``email`` / ``phone`` by their hashes; identity when none is present."""
    if ids.email is None and ids.phone is None:
        return ids
    changes: dict[str, str | None] = {"email": None, "phone": None}
    if ids.email is not None:
        changes["email_hash"] = hash_email(ids.email, key=key)
    if ids.phone is not None:
        changes["phone_hash"] = hash_phone(ids.phone, key=key)
    return msgspec.structs.replace(ids, **changes)


def scrub_event(event: Event, *, key: bytes) -> Event:
    """Return the event with raw contacts in its identifiers hashed."""
    scrubbed = scrub_identifiers(event.ids, key=key)
    if scrubbed is event.ids:
        return event
    return msgspec.structs.replace(event, ids=scrubbed)


def redact_text(text: str) -> str:
    """Mask what looks like an email address or an international phone number in ``text``."""
    return _redact_bytes(text.encode()).decode()


def _redact_bytes(raw: bytes) -> bytes:
    # Also the value of an "email" / "phone" key in text that is not JSON: a national
    # number or half an address has no shape of its own to match.
    raw = _CONTACT_FIELD.sub(rb"\1\2\3<redacted>", raw)
    raw = _PHONE_LIKE.sub(b"<redacted>", _EMAIL_LIKE.sub(b"<redacted>", raw))
    return _CUT_EMAIL.sub(b"<redacted>", raw)


def redact_head(raw: bytes, size: int = 1024) -> bytes:
    """Return the first ``size`` bytes of ``raw`` with contacts masked (for oversize input).

    Cut first, so the cost does not grow with the input; what the cut leaves of a contact
    is masked by its key, or as the end of an address.

    >>> redact_head(b'{"ids":{"phone":"0170 1234567"},"pad":"xxxx"}', 24)
    b'{"ids":{"phone":<redacte'
    """
    return _redact_bytes(raw[:size])[:size]


def _redact_value(value: object) -> object:
    if isinstance(value, dict):
        return {
            redact_text(k): "<redacted>" if k in _RAW_CONTACT_KEYS else _redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact_value(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_raw(raw: bytes) -> bytes:
    """Mask raw contacts in input that failed validation, keeping the rest for debugging.

    Dead-letter copies keep the original bytes, but may not keep raw contacts: JSON objects
    lose the values of ``email`` / ``phone`` keys at any depth; anything else loses what
    looks like an email address or an international phone number.

    >>> redact_raw(b'{"ids": {"email": "ann@example.com"}, "n": 1}')
    b'{"ids":{"email":"<redacted>"},"n":1}'
    >>> redact_raw(b'not json: ann@example.com +49 170 1234567')
    b'not json: <redacted> <redacted>'
    """
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict | list):
        return orjson.dumps(_redact_value(parsed))
    return _redact_bytes(raw)
