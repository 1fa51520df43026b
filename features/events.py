"""Typed events: one envelope, one struct per kind.

Every event on an ``events.*`` topic is a JSON object whose ``kind`` selects the struct.
Raw contacts never travel: ``Identifiers.email`` / ``phone`` are accepted at the edge only
and replaced by keyed hashes (see :mod:`features.contacts`) before anything is written.

Example:
-------
>>> from features.events import decode_event
>>> event = decode_event(
...     b'{"kind": "page_view", "event_id": "e1", "event_time": "2026-03-01T10:00:00+01:00",'
...     b' "source": "web", "ids": {"anonymous_id": "a-1"}, "page": "home"}'
... )
>>> event.kind, event.ids.anonymous_id
('page_view', 'a-1')

"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

SCHEMA_VERSION = 1

Source = Literal["web", "app", "store", "contact_center", "messaging", "loyalty"]
SalesChannel = Literal["web", "app", "store"]
MessageChannel = Literal["email", "push", "sms", "messenger"]
EngagementChannel = Literal["email", "push", "sms", "messenger", "web", "app"]
EngagementAction = Literal[
    "delivered", "opened", "clicked", "dismissed", "unsubscribed", "converted"
]
LinkReason = Literal["login", "signup", "card_scan", "app_install", "contact_given"]
UnlinkReason = Literal["wrong_link", "shared_identifier", "customer_request"]
RefundReason = Literal["returned", "cancelled", "price_adjustment", "other"]
Tier = Literal["basic", "silver", "gold"]
Page = Literal["home", "category", "product", "search", "cart", "checkout", "account", "offers"]

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Text = Annotated[str, msgspec.Meta(max_length=512)]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
# Bounded so every accepted value fits the stores' 64-bit integers (cents, counters).
Money = Annotated[float, msgspec.Meta(ge=0, le=1e9)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
Points = Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)]
# What features.contacts produces: a raw address in these fields is rejected, not stored.
EmailHash = Annotated[str, msgspec.Meta(pattern=r"^em:[0-9a-f]{40}$")]
PhoneHash = Annotated[str, msgspec.Meta(pattern=r"^ph:[0-9a-f]{40}$")]

ID_FIELDS = ("customer_id", "card_id", "device_id", "anonymous_id", "email_hash", "phone_hash")


class Identifiers(msgspec.Struct, frozen=True, omit_defaults=True):
    """Whatever identifiers the sender knows; at least one is required.

    ``email`` and ``phone`` are raw contacts accepted at the edge only: ingestion hashes
    them into ``email_hash`` / ``phone_hash`` and drops the raw value.
    """

    customer_id: Id | None = None
    anonymous_id: Id | None = None
    device_id: Id | None = None
    card_id: Id | None = None
    email_hash: EmailHash | None = None
    phone_hash: PhoneHash | None = None
    email: Text | None = None
    phone: Text | None = None

    def present(self) -> dict[str, str]:
        """Return the hashed/opaque identifiers that are set, as ``{field: value}``."""
        return {name: value for name in ID_FIELDS if (value := getattr(self, name)) is not None}


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", omit_defaults=True):
    """The envelope every event kind shares."""

    event_id: Id
    event_time: AwareTime
    source: Source
    ids: Identifiers
    schema_version: Annotated[int, msgspec.Meta(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION

    @property
    def kind(self) -> str:
        """The event kind, e.g. ``"purchase"``."""
        return type(self).__struct_config__.tag  # type: ignore[return-value]


# --- clickstream (web, app, and in-store scans) -------------------------------------------


class PageView(Event, tag="page_view"):
    """A page or screen shown to the visitor."""

    page: Page
    session_id: Id | None = None
    store_id: Id | None = None


class ProductView(Event, tag="product_view"):
    """A product looked at: online, or scanned on the shelf in a store."""

    product_id: Id
    category: Id
    price: Money
    session_id: Id | None = None
    store_id: Id | None = None


class Search(Event, tag="search"):
    """A search query."""

    query: Text
    session_id: Id | None = None


class CartChange(Event):
    """A product put into or taken out of a cart (the fields both kinds share)."""

    cart_id: Id
    product_id: Id
    category: Id
    price: Money
    quantity: Quantity = 1
    session_id: Id | None = None


class AddToCart(CartChange, tag="add_to_cart"):
    """A product put into a cart."""


class RemoveFromCart(CartChange, tag="remove_from_cart"):
    """A product taken out of a cart."""


class CheckoutStart(Event, tag="checkout_start"):
    """The visitor began to check out a cart."""

    cart_id: Id
    cart_value: Money
    session_id: Id | None = None


# --- purchases and loyalty ------------------------------------------------------------------


class Item(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of a purchase."""

    product_id: Id
    category: Id
    price: Money
    quantity: Quantity = 1


class Purchase(Event, tag="purchase"):
    """A completed order, online (``store_id`` absent) or in a store."""

    order_id: Id
    channel: SalesChannel
    payment_channel: SalesChannel
    items: Annotated[list[Item], msgspec.Meta(min_length=1, max_length=500)]
    total: Money
    store_id: Id | None = None
    cart_id: Id | None = None
    points_earned: Points = 0
    points_redeemed: Points = 0
    points_balance: Points | None = None
    tier: Tier | None = None
    offers_redeemed: Annotated[list[Id], msgspec.Meta(max_length=50)] = []


class Refund(Event, tag="refund"):
    """Money given back on an order: a return, a cancellation, a price adjustment.

    ``offers_voided`` are the offers whose redemption by this order no longer stands (the
    order system knows which promotions it reversed; a full refund voids them all): they
    stop counting against their budgets. A refund may arrive before its purchase (another
    topic partition, a replay); the void holds either way.
    """

    order_id: Id
    channel: SalesChannel
    amount: Money
    reason: RefundReason = "returned"
    offers_voided: Annotated[list[Id], msgspec.Meta(max_length=50)] = []


class PointsExpiry(Event, tag="points_expiry"):
    """Notice from the loyalty ledger that points will expire at ``expires_at``."""

    points: Points
    expires_at: AwareTime
    points_balance: Points | None = None


# --- engagement with messages and on-site offers --------------------------------------------


class Engagement(Event, tag="engagement"):
    """A reaction to a message or an on-site offer: delivered, opened, clicked and so on."""

    action: EngagementAction
    channel: EngagementChannel
    campaign: Id | None = None
    offer_id: Id | None = None
    decision_id: Id | None = None
    message_id: Id | None = None


# --- identity, consent, erasure -------------------------------------------------------------


class IdentityLink(Event, tag="identity_link"):
    """The identifiers in ``ids`` belong to one person (learnt at login, card scan, …)."""

    reason: LinkReason


class IdentityUnlink(Event, tag="identity_unlink"):
    """The identifiers in ``ids`` other than its ``customer_id`` are not that customer's.

    Undoes a wrong link (support staff, ``POST /v1/identity/unlinks``). The pairs stay
    undone: a link between them seen before or after is ignored. Published on the
    erasures' topic, keyed by the customer, so the two keep their order.
    """

    reason: UnlinkReason


class Consent(Event, tag="consent"):
    """Opt-in (``granted``) or opt-out for one messaging channel, as of ``event_time``."""

    channel: MessageChannel
    granted: bool


class ErasureRequest(Event, tag="erasure_request"):
    """The person identified by ``ids`` asks to be forgotten everywhere."""


AnyEvent = (
    PageView
    | ProductView
    | Search
    | AddToCart
    | RemoveFromCart
    | CheckoutStart
    | Purchase
    | Refund
    | PointsExpiry
    | Engagement
    | IdentityLink
    | IdentityUnlink
    | Consent
    | ErasureRequest
)

EVENT_TYPES: tuple[type[Event], ...] = AnyEvent.__args__  # type: ignore[attr-defined]
KINDS: tuple[str, ...] = tuple(t.__struct_config__.tag for t in EVENT_TYPES)  # type: ignore[misc]
CLICKSTREAM_KINDS = frozenset(
    {"page_view", "product_view", "search", "add_to_cart", "remove_from_cart", "checkout_start"}
)

_decoder = msgspec.json.Decoder(AnyEvent)
_encoder = msgspec.json.Encoder()


def decode_event(raw: bytes | str) -> Event:
    """Decode and type-check one JSON event; raises ``msgspec`` errors on bad input.

    Use :func:`features.validation.validate` where bad input must become a reason instead.
    """
    return _decoder.decode(raw)


def encode_event(event: Event) -> bytes:
    """Encode an event as compact JSON (defaults omitted, ``kind`` first)."""
    return _encoder.encode(event)


def json_schemas() -> dict[str, object]:
    """Return the JSON Schema of every event kind, in one document with shared definitions."""
    return msgspec.json.schema(AnyEvent)
