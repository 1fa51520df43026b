"""Triggered journeys as data: definitions, the facts they read, the records they write.

A journey (``features/data/journeys.yaml``, edited by marketers) **enters** on an event
(an app or web cart, a purchase, a points-expiry notice), **waits** in event time (hours
after its anchor: the entry, or the last cart activity), sends **one message per step**
through the contact policy and the channel choice that ``POST /v1/channel`` uses, and
**exits** when its goal is met or the customer withdraws:

=================  ===========================================================================
exit               when
=================  ===========================================================================
``purchased``      a purchase (any channel, a store too) contains an item of the cart, or its id
``cart_emptied``   every item was taken out of the cart
``points_used``    a purchase redeems points
``unsubscribed``   an opt-out or an unsubscribe left no channel for the steps still to go
``completed``      every step is done and the goal window is over
``expired``        the points expired before the remaining steps were due
``replaced``       a newer entry (a new cart) restarted the journey
``unlinked``       the identifier whose event started it left the customer's profile (a wrong
                   link undone, or found shared): its cart is not the customer's
=================  ===========================================================================

A share of entries (``control_share``, stable per customer and journey) is **held out**:
the journey runs for them with the same timers, but sends nothing, so treated and control
conversion can be compared per step (``omnioffer journeys report``).

The state machine that runs them is :mod:`features.journey_state`.

>>> book = load_journeys()
>>> [j.id for j in book.journeys]
['cart_abandonment', 'purchase_follow_up', 'points_expiry']
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from features.datafile import DataFileError, check_document, fail, read_document
from features.events import (
    AddToCart,
    CheckoutStart,
    Consent,
    Engagement,
    Event,
    MessageChannel,
    PointsExpiry,
    Purchase,
    RemoveFromCart,
    Source,
)
from features.policy import Urgency
from features.snapshots import with_new_fields
from features.store import MessageKind

DEFAULT_JOURNEYS_PATH = Path(__file__).parent / "data" / "journeys.yaml"

Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
Hours = Annotated[float, msgspec.Meta(ge=0, le=24 * 366)]
Share = Annotated[float, msgspec.Meta(ge=0, lt=1)]
Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]
EntryEvent = Literal["add_to_cart", "purchase", "points_expiry"]
CartActivity = Literal["add_to_cart", "remove_from_cart", "checkout_start"]
ExitRule = Literal["purchased", "cart_emptied", "points_used", "unsubscribed"]
Goal = Literal["cart_purchased", "any_purchase", "points_used"]
Content = Literal["cart_reminder", "points_nudge", "cross_sell", "how_to", "feedback", "reminder"]
PERSONA_NAMES = ("discount_hunter", "newcomer", "toucher", "social", "procrastinator")
Persona = Literal["discount_hunter", "newcomer", "toucher", "social", "procrastinator"]


class JourneyError(DataFileError):
    """The journeys file is invalid; the message names the file, the entry and the field."""


# --- the definitions --------------------------------------------------------------------------


class Variant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a step says to whom: the first variant whose persona score reaches ``min_score``.

    A variant without ``persona`` matches everyone (put it last). ``offer_id`` may contain
    ``{category}``: the main category of the entry (the dearest item of the cart or order).
    """

    persona: Persona | None = None
    min_score: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5
    discount_pct: Percent = 0
    offer_id: str | None = None

    def matches(self, personas: dict[str, float]) -> bool:
        """Return whether the customer's persona scores select this variant."""
        return self.persona is None or personas.get(self.persona, 0.0) >= self.min_score


class StepMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The message of one step; ``allowed_channels`` restricts the channel choice."""

    content: Content
    kind: MessageKind = "marketing"
    urgency: Urgency = "low"
    allowed_channels: list[MessageChannel] | None = None
    variants: list[Variant] = msgspec.field(default_factory=lambda: [Variant()])


class Step(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One message, due ``after_hours`` after the journey's anchor.

    With ``before_expiry_hours`` (points journeys) the step is due that long before the
    points expire instead, and never earlier than the entry.
    """

    id: Name
    message: StepMessage
    after_hours: Hours = 0.0
    before_expiry_hours: Hours | None = None


class Entry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What starts the journey: the event kind and its conditions.

    ``customers_only``: only profiles of a known customer enter (an anonymous visitor has
    no consent on record, so every step would be suppressed).
    """

    event: EntryEvent
    customers_only: bool = True
    sources: list[Source] | None = None
    min_value: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    min_points: Annotated[int, msgspec.Meta(ge=0)] = 0


class Journey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One triggered journey; see the module docstring for the exit rules."""

    id: Name
    name: str
    entry: Entry
    steps: Annotated[list[Step], msgspec.Meta(min_length=1, max_length=20)]
    goal: Goal
    goal_window_hours: Hours = 7 * 24.0
    exits: list[ExitRule] = []
    restart_wait_on: list[CartActivity] = []
    reentry: Literal["ignore", "restart"] = "ignore"
    cooldown_hours: Hours = 0.0
    control_share: Share = 0.1

    def campaign(self, step: int) -> str:
        """Return the campaign id of a step's message (``journey:<journey>:<step>``)."""
        return f"journey:{self.id}:{self.steps[step].id}"


class JourneyBook(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole journeys file; ``salt`` keys the control-group assignment."""

    journeys: list[Journey]
    salt: str = "journeys-v1"

    def by_id(self) -> dict[str, Journey]:
        """Return the journeys by id."""
        return {j.id: j for j in self.journeys}


def parse_journeys(
    document: Any,
    source: str = "<journeys>",
    offer_ids: Iterable[str] | None = None,
    categories: Iterable[str] = (),
) -> JourneyBook:
    """Validate a decoded journeys document (and its offer ids against ``offer_ids``).

    Raises
    ------
    JourneyError
        Naming ``source``, the entry and the field, e.g. ``journeys.yaml: entry
        'journeys.cart_abandonment.steps.reminder', field 'after_hours': Expected `float`
        >= 0.0; got -1``.

    """
    check_document(document, JourneyBook, source, JourneyError)
    book = msgspec.convert(document, JourneyBook, strict=True)
    seen: set[str] = set()
    for journey in book.journeys:
        where = ["journeys", journey.id]
        if journey.id in seen:
            fail(source, [*where[:-1], "id"], f"duplicate journey id {journey.id!r}", JourneyError)
        seen.add(journey.id)
        _check_steps(journey, where, source)
        if offer_ids is not None:
            _check_offers(journey, set(offer_ids), sorted(categories), where, source)
    return book


def _check_steps(journey: Journey, where: list[str], source: str) -> None:
    ids = [s.id for s in journey.steps]
    if len(set(ids)) != len(ids):
        fail(source, [*where, "steps"], f"step ids must be unique; got {ids}", JourneyError)
    hours = [s.after_hours for s in journey.steps]
    if hours != sorted(hours):
        problem = f"steps must come in order of after_hours; got {hours}"
        fail(source, [*where, "steps"], problem, JourneyError)
    expiring = any(s.before_expiry_hours is not None for s in journey.steps)
    if expiring and journey.entry.event != "points_expiry":
        problem = "before_expiry_hours needs entry event 'points_expiry'"
        fail(source, [*where, "steps"], problem, JourneyError)
    for step in journey.steps:
        if not step.message.variants:
            fail(source, [*where, "steps", step.id, "variants"], "needs a variant", JourneyError)
        if step.message.variants[-1].persona is not None:
            problem = "the last variant must have no persona (everyone else gets it)"
            fail(source, [*where, "steps", step.id, "variants"], problem, JourneyError)


def _check_offers(
    journey: Journey, offer_ids: set[str], categories: list[str], where: list[str], source: str
) -> None:
    for step in journey.steps:
        for variant in step.message.variants:
            if variant.offer_id is None:
                continue
            wanted = (
                [variant.offer_id.format(category=c) for c in categories]
                if "{category}" in variant.offer_id
                else [variant.offer_id]
            )
            missing = [o for o in wanted if o not in offer_ids]
            if missing:
                problem = f"unknown offer id(s) {missing[:3]} for {variant.offer_id!r}"
                fail(source, [*where, "steps", step.id, "offer_id"], problem, JourneyError)


def load_journeys(
    path: Path | str = DEFAULT_JOURNEYS_PATH,
    offer_ids: Iterable[str] | None = None,
    categories: Iterable[str] = (),
) -> JourneyBook:
    """Load and validate a journeys file (YAML or JSON).

    Raises
    ------
    JourneyError
        If the file is missing, cannot be parsed or breaks the schema.

    """
    path = Path(path)
    document = read_document(path, "journeys", JourneyError)
    return parse_journeys(document, str(path), offer_ids, categories)


def in_control(profile_id: str, journey_id: str, share: float, salt: str) -> bool:
    """Return whether a profile is held out of a journey: stable, uniform, per journey.

    >>> in_control("customer_id:cu-1", "cart_abandonment", 0.0, "s")
    False
    """
    if share <= 0:
        return False
    digest = hashlib.blake2b(f"{salt}|{journey_id}|{profile_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64 < share


def decision_id_of(journey_id: str, entry_id: str, step: int, profile_id: str) -> str:
    """Return the deterministic decision id of one step: idempotent by journey, step, profile.

    >>> decision_id_of("cart", "ev1", 0, "customer_id:cu-1") == decision_id_of(
    ...     "cart", "ev1", 0, "customer_id:cu-1")
    True
    """
    key = f"{journey_id}|{entry_id}|{step}|{profile_id}".encode()
    return "jr-" + hashlib.blake2b(key, digest_size=12).hexdigest()


# --- what journeys read from one event --------------------------------------------------------


@dataclass(slots=True)
class JourneyFact:
    """The part of one event journeys act on (events of other kinds give none).

    ``value`` is the cart change (negative when removed) or the order total; ``points``
    the points expiring or redeemed; ``channel`` the consent or engagement channel.
    """

    kind: str
    event_id: str
    ts: int
    source: str
    cart_id: str | None = None
    products: tuple[str, ...] = ()
    category: str | None = None
    value: float = 0.0
    points: int = 0
    expires_at: int | None = None
    channel: str | None = None
    withdrawn: bool = False
    fragment: str | None = None  # whose event it is (set by the profiles step)

    __setstate__ = with_new_fields


ERASED = "erased"
# An identifier's fragment left the customer's profile (an unlink, or found shared): the
# journeys its events started there end, as its history left (``fragment`` names it).
LEFT = "left"


def journey_fact(event: Event) -> JourneyFact | None:
    """Return what ``event`` means to journeys, or ``None`` when it means nothing."""
    ts = int(event.event_time.timestamp())
    match event:
        case AddToCart() | RemoveFromCart():
            sign = 1 if isinstance(event, AddToCart) else -1
            return JourneyFact(
                event.kind,
                event.event_id,
                ts,
                event.source,
                event.cart_id,
                (event.product_id,),
                event.category,
                sign * event.price * event.quantity,
            )
        case CheckoutStart():
            return JourneyFact(event.kind, event.event_id, ts, event.source, event.cart_id)
        case Purchase():
            top = max(event.items, key=lambda i: i.price * i.quantity)
            return JourneyFact(
                event.kind,
                event.event_id,
                ts,
                event.channel,
                event.cart_id,
                tuple(sorted({i.product_id for i in event.items})),
                top.category,
                event.total,
                event.points_redeemed,
            )
        case PointsExpiry():
            return JourneyFact(
                event.kind,
                event.event_id,
                ts,
                event.source,
                points=event.points,
                expires_at=int(event.expires_at.timestamp()),
            )
        case Consent(granted=False) | Engagement(action="unsubscribed"):
            return JourneyFact(
                event.kind, event.event_id, ts, event.source, channel=event.channel,
                withdrawn=True,
            )  # fmt: skip
    return None


# --- what journeys write ----------------------------------------------------------------------


class JourneyRecord(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True
):
    """One thing a journey did to one profile, on the ``triggers`` topic."""

    journey: str
    profile_id: str
    entry_id: str
    at: datetime
    control: bool = False


class Entered(JourneyRecord, tag="entered"):
    """The profile entered the journey (``entry_id`` is the entry event's id)."""


class Exited(JourneyRecord, tag="exited"):
    """The profile left the journey, for ``reason`` (see the module docstring)."""

    reason: str


class Converted(JourneyRecord, tag="converted"):
    """The journey's goal happened (``after_step``: the last step reached, -1 for none)."""

    goal: str
    after_step: int


class HeldOut(JourneyRecord, tag="held_out"):
    """A step of a control-group profile: due, but nothing was sent (by design)."""

    step: str
    step_index: int
    decision_id: str


class Suppressed(JourneyRecord, tag="suppressed"):
    """A step that sent nothing: ``rule`` names the contact-policy rule that stopped it."""

    step: str
    step_index: int
    decision_id: str
    rule: str


class Outbound(JourneyRecord, tag="sent"):
    """A message to send: the ``messages.outbound`` record (``at`` is when it was due)."""

    step: str
    step_index: int
    decision_id: str
    channel: MessageChannel
    send_at: datetime
    campaign: str
    content: str
    kind: MessageKind
    urgency: str
    propensity: float
    model_version: str
    model_choice: str | None = None
    offer_id: str | None = None
    discount_pct: int = 0
    cart_id: str | None = None


AnyJourneyRecord = Entered | Exited | Converted | HeldOut | Suppressed | Outbound
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyJourneyRecord)


def encode_record(record: JourneyRecord) -> bytes:
    """Encode a journey record as compact JSON, ``type`` first."""
    return _encoder.encode(record)


def decode_record(raw: bytes | str) -> JourneyRecord:
    """Decode one journey record."""
    return _decoder.decode(raw)
