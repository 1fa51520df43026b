"""The API's request and response bodies (msgspec), and request decoding with clear errors.

Requests are strict: wrong types, unknown fields and missing required fields are rejected
with a message that names the field (:class:`RequestError`, answered as 422).

>>> decode_request(b'{"context": {"channel": "web"}, "limit": 3}', OffersRequest).limit
3
>>> try:
...     decode_request(b'{"context": {"channel": "tv"}}', OffersRequest)
... except RequestError as error:
...     print(error.field, "-", error)
context.channel - context.channel: Invalid enum value 'tv'
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from features.events import Id, Identifiers, MessageChannel, SalesChannel, UnlinkReason
from features.policy import Urgency

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Money = Annotated[float, msgspec.Meta(ge=0)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=50)]
ID_FIELDS = ("customer_id", "card_id", "device_id", "anonymous_id")


class RequestError(ValueError):
    """A request body is invalid; ``field`` is the dotted path of the offending field."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


# --- requests ----------------------------------------------------------------------------


class _Ids(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    customer_id: Id | None = None
    anonymous_id: Id | None = None
    device_id: Id | None = None
    card_id: Id | None = None

    def identifiers(self) -> Identifiers:
        """Return the ids as the event contract's :class:`Identifiers`."""
        return Identifiers(
            customer_id=self.customer_id,
            anonymous_id=self.anonymous_id,
            device_id=self.device_id,
            card_id=self.card_id,
        )

    def fragments(self) -> list[str]:
        """Return ``field:value`` identifiers, strongest first (the order ``resolve`` wants)."""
        return [f"{name}:{value}" for name in ID_FIELDS if (value := getattr(self, name))]


class OfferContextIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the offers are shown. ``basket_value`` (optional) checks minimum baskets."""

    channel: SalesChannel
    page: Text | None = None
    store_id: Id | None = None
    placement: Text | None = None
    basket_value: Money | None = None


class OffersRequest(_Ids, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/offers``: any identifiers the caller has, the context and how many offers."""

    context: OfferContextIn
    limit: Limit = 5


class MessageIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The message to send; ``allowed_channels`` restricts (or, with one, forces) channels.

    ``message_id`` is the sender's own id of this message (a receipt's order id, say): a
    message whose id was already sent within the duplicate window, on any channel, is
    suppressed as ``duplicate_message``, so a retried request never sends twice.
    """

    campaign: Id
    kind: Literal["transactional", "marketing"]
    offer_id: Id | None = None
    urgency: Urgency = "normal"
    allowed_channels: Annotated[list[MessageChannel], msgspec.Meta(min_length=1)] | None = None
    message_id: Id | None = None


class ChannelRequest(_Ids, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/channel``: customer identifiers (at least one) and the message."""

    message: MessageIn


class UnlinkRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Undo wrong identity links: these identifiers are not this customer's.

    ``identifiers`` are ``field:value`` as ``GET /v1/profiles`` lists them
    (``anonymous_id:a-81f``, ``device_id:d-1``, ``email_hash:…``).
    """

    customer_id: Id
    identifiers: Annotated[list[Text], msgspec.Meta(min_length=1, max_length=50)]
    reason: UnlinkReason = "wrong_link"


# --- responses ---------------------------------------------------------------------------


class OfferOut(msgspec.Struct, frozen=True):
    """One ranked offer. ``score`` = probability × value × lever; ``propensity`` = P(picked)."""

    offer_id: str
    name: str
    kind: str
    score: float
    probability: float
    propensity: float
    position: int
    reasons: list[str]


class OffersResponse(msgspec.Struct, frozen=True):
    """The ranked offers and how they were decided."""

    decision_id: str
    offers: list[OfferOut]
    model_version: str
    degraded: bool
    cold_start: bool
    profile_id: str | None
    policy: str
    suppressed_by: str | None = None


class Alternative(msgspec.Struct, frozen=True):
    """One channel considered: its score, whether allowed, and the rule that blocked it."""

    channel: str
    score: float | None
    allowed: bool
    suppressed_by: str | None
    send_at: datetime | None


class ModelChoice(msgspec.Struct, frozen=True):
    """The model's own favourite channel, before the campaign's ``allowed_channels``."""

    channel: str | None
    score: float | None
    allowed: bool
    matches: bool


class ChannelResponse(msgspec.Struct, frozen=True):
    """The channel (or ``none``), when to send, why, and the alternatives."""

    decision_id: str
    channel: str
    send_at: datetime | None
    reason: str
    suppressed_by: str | None
    propensity: float | None
    alternatives: list[Alternative]
    model_choice: ModelChoice
    model_version: str
    degraded: bool
    profile_id: str | None
    policy: str


class ErrorOut(msgspec.Struct, frozen=True):
    """A 4xx answer: ``error`` in words, ``field`` the offending one, ``detail`` like FastAPI."""

    error: str
    field: str | None
    detail: list[dict[str, Any]]


# --- decoding ------------------------------------------------------------------------------

T = TypeVar("T")
_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {}
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`")
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]+)`")


def _dotted(path: str) -> str:
    return re.sub(r"\[(\d+)\]", r"[\1]", path).lstrip(".")


def decode_request(body: bytes, kind: type[T]) -> T:
    """Decode a JSON request body into ``kind``.

    Raises
    ------
    RequestError
        Naming the field: ``limit: Expected `int`, got `str```; ``context: required field
        is missing``; ``(body): request body is empty``.

    """
    if not body.strip():
        message = "(body): request body is empty; expected a JSON object"
        raise RequestError(message, field="(body)")
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.json.Decoder(kind)
    try:
        return decoder.decode(body)  # type: ignore[no-any-return]
    except msgspec.ValidationError as error:
        raise _validation_error(str(error)) from None
    except msgspec.DecodeError as error:
        message = f"(body): not valid JSON: {error}"
        raise RequestError(message, field="(body)") from None


def _validation_error(text: str) -> RequestError:
    match = _AT.search(text)
    base = _dotted(match["path"]) if match else ""
    problem = _AT.sub("", text)
    for pattern, what in ((_MISSING, "required field is missing"), (_UNKNOWN, "unknown field")):
        if found := pattern.search(problem):
            field = f"{base}.{found['name']}" if base else found["name"]
            return RequestError(f"{field}: {what}", field=field)
    if not base:
        return RequestError(f"(body): {problem}", field="(body)")
    return RequestError(f"{base}: {problem}", field=base)


def error_body(field: str | None, message: str, kind: str = "value_error") -> ErrorOut:
    """Return the 4xx body for one error."""
    loc: list[str] = ["body", *field.split(".")] if field and field != "(body)" else ["body"]
    return ErrorOut(error=message, field=field, detail=[{"loc": loc, "msg": message, "type": kind}])
