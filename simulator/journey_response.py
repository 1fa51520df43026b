"""How a simulated customer reacts to a message an outside system sends (a journey step).

A :class:`Delivery` reaches the customer only with consent for its channel at the send
time. It is delivered within seconds and opened with the ground-truth open probability;
what follows depends on the template: a cart reminder may bring an abandoned cart back
(more likely with a coupon for discount hunters, and for procrastinators), a points nudge
may lead to an online purchase, a cross-sell redeems its offer with the ground-truth
conversion probability, and the rest only earn opens and clicks. Every marketing message
risks an unsubscribe, more so the more journey messages arrived in the last 7 days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from features.events import Identifiers
from simulator.emit import DAY
from simulator.exposures import MAX_RESPONSE_S, engagement, unsubscribe
from simulator.state import ABANDONED_MEMORY_S, CustomerState
from simulator.truth import (
    click_probability,
    conversion_probability,
    open_probability,
    response_delay_hours,
)
from simulator.world import MESSAGE_CHANNELS

HOUR = 3600
CONTENTS = ("cart_reminder", "points_nudge", "cross_sell", "how_to", "feedback", "reminder")
KINDS = ("marketing", "transactional")
# Clicks on an opened message that leads to nothing more (cross-sells use the offer's).
CLICK = {
    "cart_reminder": 0.3,
    "points_nudge": 0.2,
    "cross_sell": 0.15,
    "how_to": 0.3,
    "feedback": 0.25,
    "reminder": 0.15,
}
MAX_RECOVERY = 0.9
NUDGE_PURCHASE = 0.3
UNSUBSCRIBE_BASE = 0.004
UNSUBSCRIBE_PER_RECENT = 0.01  # per further journey message in the fatigue window
FATIGUE_WINDOW_S = 7 * DAY
_MAX_ID = 128


@dataclass(frozen=True)
class Delivery:
    """A message our system sends to a simulated customer.

    ``message_id`` (our decision id) is echoed in the engagement events as both
    ``decision_id`` and ``message_id``.

    >>> from datetime import UTC, datetime
    >>> Delivery("cu-000001", "fax", datetime(2026, 3, 2, tzinfo=UTC), "m1", "j", "reminder")
    Traceback (most recent call last):
    ...
    ValueError: channel must be one of email, push, sms, messenger; got 'fax'
    """

    customer_id: str  # world customer id, e.g. "cu-000012"
    channel: str  # email | push | sms | messenger
    send_at: datetime  # aware
    message_id: str
    campaign: str  # e.g. "journey:cart_abandonment:reminder"
    content: str  # one of CONTENTS
    kind: str = "marketing"  # or "transactional"
    offer_id: str | None = None  # a catalog offer (cross_sell), or None
    discount_pct: int = 0  # a cart coupon level (0 = reminder only)
    cart_id: str | None = None  # the cart a cart reminder is about

    def __post_init__(self) -> None:
        for name, allowed in (
            ("channel", MESSAGE_CHANNELS),
            ("content", CONTENTS),
            ("kind", KINDS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                message = f"{name} must be one of {', '.join(allowed)}; got {value!r}"
                raise ValueError(message)
        if self.send_at.tzinfo is None or self.send_at.utcoffset() is None:
            message = f"send_at must be a timezone-aware datetime; got {self.send_at!r}"
            raise ValueError(message)
        for name in ("customer_id", "message_id", "campaign", "offer_id", "cart_id"):
            value = getattr(self, name)
            if value is not None and not 1 <= len(value) <= _MAX_ID:
                message = f"{name} must have 1 to {_MAX_ID} characters; got {value!r}"
                raise ValueError(message)
        if not 0 <= self.discount_pct <= 100:
            message = f"discount_pct must be within [0, 100]; got {self.discount_pct!r}"
            raise ValueError(message)


def recovery_probability(st: CustomerState, discount_pct: int) -> float:
    """Return how likely an opened reminder brings an abandoned cart back."""
    mix = st.customer.persona_mix
    coupon = min(1.0, discount_pct / 10)
    p = 0.25 + 0.5 * mix["discount_hunter"] * coupon + 0.15 * mix["procrastinator"]
    return min(MAX_RECOVERY, p)


def _recent(st: CustomerState, ts: int) -> int:
    # Journey messages delivered in the fatigue window before ts; then log this one.
    log = [t for t in st.journeys if t > ts - FATIGUE_WINDOW_S]
    count = len(log)
    log.append(ts)
    st.journeys = log
    return count


def journey_message(st: CustomerState, ts: int, delivery: Delivery) -> None:
    """Deliver a journey message at ``ts`` and play out the customer's reaction."""
    channel = delivery.channel
    if ts >= st.stop_ts or not st.can_message(channel, ts):
        return  # not ours to send: the customer never gets it
    c = st.customer
    rng = st.rng
    recent = _recent(st, ts)
    _engage(st, ts + st.between(1, 90), delivery, "delivered")
    hour = st.local_hour(ts)
    facts = None
    if delivery.content == "cross_sell" and delivery.offer_id is not None:
        facts = st.sim.facts[delivery.offer_id]
    convert = 0.0
    if facts is not None and facts.valid_at(ts):
        convert = conversion_probability(c, facts, channel, hour)
    u = rng.random()  # one draw: a redemption (u < convert) is always an open
    mean_open = 1.5 * HOUR + 6 * HOUR * c.persona_mix["procrastinator"]
    open_ts = ts + 60 + min(int(rng.expovariate(1 / mean_open)), 2 * DAY)
    if u < max(open_probability(c, channel, hour), convert):
        _engage(st, open_ts, delivery, "opened")
        if u < convert:
            _redeem(st, ts, open_ts, delivery)
        else:
            _react(st, open_ts, delivery)
    if delivery.kind == "marketing":
        p = UNSUBSCRIBE_BASE + UNSUBSCRIBE_PER_RECENT * recent
        gone = open_ts + st.between(10, 120) if rng.random() < p else None
        if gone is not None and st.consent_until[channel] > gone:  # not opted out already
            unsubscribe(
                st,
                gone,
                Identifiers(customer_id=c.customer_id),
                channel,
                offer_id=delivery.offer_id,
                decision_id=delivery.message_id,
                campaign=delivery.campaign,
                message_id=delivery.message_id,
            )


def _engage(st: CustomerState, ts: int, delivery: Delivery, action: str) -> None:
    engagement(
        st,
        ts,
        Identifiers(customer_id=st.customer.customer_id),
        action,
        delivery.channel,
        offer_id=delivery.offer_id,
        decision_id=delivery.message_id,
        campaign=delivery.campaign,
        message_id=delivery.message_id,
    )


def _click(st: CustomerState, open_ts: int, delivery: Delivery) -> None:
    _engage(st, open_ts + st.between(5, 300), delivery, "clicked")


def _redeem(st: CustomerState, ts: int, open_ts: int, delivery: Delivery) -> None:
    # A cross-sell converts as a campaign message does: click, then redeem within 7 days.
    _click(st, open_ts, delivery)
    delay = int(st.rng.expovariate(1 / (response_delay_hours(st.customer) * HOUR)))
    due = min(open_ts + 600 + delay, ts + MAX_RESPONSE_S)
    payload = (
        delivery.message_id,
        delivery.message_id,
        delivery.campaign,
        delivery.channel,
        delivery.offer_id,
    )
    st.schedule(due, "conversion", payload)


def _react(st: CustomerState, open_ts: int, delivery: Delivery) -> None:
    # What an opened message leads to, short of redeeming a cross-sell's offer.
    rng = st.rng
    content = delivery.content
    if content == "cart_reminder" and delivery.cart_id is not None:
        cart = st.abandoned.get(delivery.cart_id)
        if cart is not None and open_ts - cart[3] >= ABANDONED_MEMORY_S:
            del st.abandoned[delivery.cart_id]  # forgotten: too old to come back to
            cart = None
        if cart is not None and rng.random() < recovery_probability(st, delivery.discount_pct):
            del st.abandoned[delivery.cart_id]
            _click(st, open_ts, delivery)
            channel, device, items, _ = cart
            payload = (channel, device, delivery.cart_id, items)
            st.schedule(open_ts + st.between(600, 3 * HOUR), "return_to_cart", payload)
            return
    elif content == "points_nudge" and rng.random() < NUDGE_PURCHASE:
        _click(st, open_ts, delivery)
        products = [st.product() for _ in range(st.between(1, 3))]
        st.schedule(open_ts + st.between(600, DAY), "buy_online", products)
        return
    if content == "cross_sell" and delivery.offer_id is not None:
        p = click_probability(st.customer, st.sim.facts[delivery.offer_id])
    else:
        p = CLICK[content]
    if rng.random() < p:
        _click(st, open_ts, delivery)
