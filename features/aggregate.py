"""Per-fragment aggregates in event time: what one event contributes, and how states merge.

A *fragment* is the history of one identifier (a cookie, a device, a card, a customer id).
Its :class:`Aggregate` holds

* bucketed counters — day buckets for the last :data:`HORIZON_DAYS` days, each a flat
  ``{counter: int}`` dict, and hour buckets for the last :data:`HOUR_HORIZON` hours that
  count events only (recent activity). Counters are integers (money in cents) so sums are
  exact and merge in any order;
* last-writer-wins registers ``{name: (epoch_s, event_id, value)}`` (consent per channel,
  points balance, last purchase per channel, offers seen / redeemed, …);
* carts ``{cart_id: [added_cents, removed_cents, first_add_s, last_add_s, closed_s]}``;
* points-expiry notices, and the event ids seen (duplicates count once).

Every piece is a commutative, idempotent merge, so the final state depends only on the *set*
of events, never on their arrival order: that is what makes the stream equal to batch
recomputation, and a replay after a crash converge. Buckets older than the horizon (relative
to the newest event of the fragment) are evicted, and the eviction is returned so a merged
profile can subtract it.

>>> from datetime import UTC, datetime
>>> from features.events import Identifiers, PageView
>>> agg = Aggregate()
>>> e = PageView(event_id="e1", event_time=datetime(2026, 3, 2, 9, tzinfo=UTC), source="web",
...              ids=Identifiers(anonymous_id="a-1"), page="home")
>>> agg.apply(contribution(e)) is not None, agg.apply(contribution(e))  # a duplicate
(True, None)
>>> agg.days[epoch_day(e.event_time)]["pv:web"]
1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from features.events import (
    AddToCart,
    CheckoutStart,
    Consent,
    Engagement,
    Event,
    IdentityLink,
    PageView,
    PointsExpiry,
    ProductView,
    Purchase,
    Refund,
    RemoveFromCart,
    Search,
)
from features.journeys import JourneyFact, journey_fact

DAY = 86_400
HOUR = 3_600
HORIZON_DAYS = 90
HOUR_HORIZON = 24

Counters = dict[str, int]
Register = tuple[int, str, Any]
_NO_BUCKETS: dict[int, Counters] = {}


def epoch_day(when: datetime) -> int:
    """Return the UTC day number of an aware time (days since 1970-01-01)."""
    return int(when.timestamp()) // DAY


def cents(amount: float) -> int:
    """Convert a currency amount to integer cents."""
    return round(amount * 100)


# Per-event shapes are plain slotted classes, not frozen ones: a frozen dataclass pays for
# every field it sets, and these are made once per event. Nothing mutates them.
@dataclass(slots=True)
class Contribution:
    """What one event adds to a fragment: counters for its buckets and register updates."""

    event_id: str
    ts: int
    counters: tuple[tuple[str, int], ...]
    registers: tuple[tuple[str, Any], ...] = ()
    cart: tuple[str, int, int, int] | None = None  # (cart_id, added, removed, closed_flag)
    expiry: tuple[int, int] | None = None  # (expires_at_s, points)
    journey: JourneyFact | None = None  # what the event means to triggered journeys


@dataclass(slots=True)
class Applied:
    """What applying one contribution changed in a fragment's buckets.

    ``in_day`` / ``in_hour``: whether its counters went into its day / hour bucket (not when
    older than the horizon); ``evicted_days`` / ``evicted_hours``: buckets dropped because
    the horizon moved. A merged profile mirrors exactly this.
    """

    in_day: bool
    in_hour: bool
    evicted_days: dict[int, Counters]
    evicted_hours: dict[int, Counters]


# Event times carry the customer's own offset, so their hour is the local hour.
_HOUR_KEYS = tuple(f"hr:{hour}" for hour in range(24))


def contribution(event: Event) -> Contribution:
    """Return what ``event`` contributes to its fragment (pure; one event, no state)."""
    when = event.event_time
    ts = int(when.timestamp())
    src = event.source
    counters: list[tuple[str, int]] = [("ev", 1), (_HOUR_KEYS[when.hour], 1)]
    registers: list[tuple[str, Any]] = []
    cart = None
    expiry = None
    match event:
        case PageView():
            counters.append((f"pv:{src}", 1))
            # The UTC offset (for quiet hours) is refreshed at session starts and at the
            # till, not on every click: it changes at most twice a year.
            registers.append(("tz_offset_min", _offset_minutes(when)))
        case ProductView(category=category, store_id=store_id):
            counters += [(f"vw:{src}", 1), (f"vw_cat:{category}", 1)]
            if store_id is not None:
                counters.append((f"visit:{store_id}", 1))
        case Search():
            counters.append((f"search:{src}", 1))
        case AddToCart(cart_id=cart_id, category=category, price=price, quantity=quantity):
            counters += [(f"atc:{src}", 1), (f"atc_cat:{category}", 1)]
            cart = (cart_id, cents(price) * quantity, 0, 0)
        case RemoveFromCart(cart_id=cart_id, price=price, quantity=quantity):
            counters.append((f"rfc:{src}", 1))
            cart = (cart_id, 0, cents(price) * quantity, 0)
        case CheckoutStart():
            counters.append((f"chk:{src}", 1))
        case Purchase() as purchase:
            registers.append(("tz_offset_min", _offset_minutes(when)))
            counters, registers, cart = _purchase(purchase, ts, counters, registers)
        case Refund(channel=channel, amount=amount, offers_voided=voided):
            # Beside the purchases, not netted from them: the order still happened.
            counters += [(f"ref:{channel}", 1), (f"ref_amt:{channel}", cents(amount))]
            # A voided offer is no longer redeemed (until redeemed again, later).
            registers += [(f"offer_redeemed:{offer}", None) for offer in voided]
        case PointsExpiry(points=points, expires_at=expires_at, points_balance=balance):
            expiry = (int(expires_at.timestamp()), points)
            if balance is not None:
                registers.append(("points_balance", balance))
        case Engagement(action=action, channel=channel, offer_id=offer_id):
            counters.append((f"eng:{channel}:{action}", 1))
            if action == "delivered":
                registers.append((f"last_contact:{channel}", ts))
            if action == "unsubscribed" and channel in _MESSAGE_CHANNELS:
                registers.append((f"consent:{channel}", False))
            if offer_id is not None and action in _OFFER_REGISTER:
                registers.append((f"{_OFFER_REGISTER[action]}:{offer_id}", ts))
        case Consent(channel=channel, granted=granted):
            registers.append((f"consent:{channel}", granted))
        case IdentityLink():
            counters.append(("links", 1))
    return Contribution(
        event.event_id, ts, tuple(counters), tuple(registers), cart, expiry, journey_fact(event)
    )


_MESSAGE_CHANNELS = frozenset({"email", "push", "sms", "messenger"})
_OFFER_REGISTER = {
    "delivered": "offer_seen",
    "opened": "offer_seen",
    "clicked": "offer_clicked",
    "dismissed": "offer_dismissed",
    "converted": "offer_redeemed",
}


def _offset_minutes(when: datetime) -> int:
    offset = when.utcoffset()
    return int(offset.total_seconds()) // 60 if offset is not None else 0


def _purchase(
    purchase: Purchase,
    ts: int,
    counters: list[tuple[str, int]],
    registers: list[tuple[str, Any]],
) -> tuple[list[tuple[str, int]], list[tuple[str, Any]], tuple[str, int, int, int] | None]:
    channel = purchase.channel
    counters += [(f"pur:{channel}", 1), (f"rev:{channel}", cents(purchase.total))]
    counters.append((f"pay:{purchase.payment_channel}", 1))
    for item in purchase.items:
        counters += [
            (f"pur_cat:{item.category}", item.quantity),
            (f"spend_cat:{item.category}", cents(item.price) * item.quantity),
        ]
    if purchase.offers_redeemed:
        counters += [("pur_with_offer", 1), ("redeemed", len(purchase.offers_redeemed))]
        registers += [(f"offer_redeemed:{offer}", ts) for offer in purchase.offers_redeemed]
    if purchase.points_earned:
        counters.append(("pts_earned", purchase.points_earned))
    if purchase.points_redeemed:
        counters.append(("pts_redeemed", purchase.points_redeemed))
    if purchase.store_id is not None:
        counters.append((f"visit:{purchase.store_id}", 1))
        registers.append(("last_store", purchase.store_id))
    registers += [("last_purchase", ts), (f"last_purchase:{channel}", ts)]
    if purchase.points_balance is not None:
        registers.append(("points_balance", purchase.points_balance))
    if purchase.tier is not None:
        registers.append(("tier", purchase.tier))
    cart = (purchase.cart_id, 0, 0, 1) if purchase.cart_id is not None else None
    return counters, registers, cart


def _add(target: dict[int, Counters], bucket: int, items: Any, sign: int = 1) -> None:
    counters = target.get(bucket)
    if counters is None:
        counters = target[bucket] = {}
    for name, amount in items:
        value = counters.get(name, 0) + sign * amount
        if value:
            counters[name] = value
        else:
            del counters[name]
    if not counters:
        del target[bucket]


def _count_event(hours: dict[int, Counters], hour: int) -> None:
    bucket = hours.get(hour)
    if bucket is None:
        hours[hour] = {"ev": 1}
    else:
        bucket["ev"] += 1


def _lww(registers: dict[str, Register], name: str, stamp: Register) -> None:
    current = registers.get(name)
    if current is None or stamp[:2] > current[:2]:
        registers[name] = stamp


@dataclass(slots=True)
class Small:
    """The non-bucketed part of a fragment: registers, carts, expiry notices, time span."""

    first_seen: int = 0
    last_seen: int = 0
    registers: dict[str, Register] = field(default_factory=dict)
    carts: dict[str, list[int]] = field(default_factory=dict)
    expiries: dict[str, tuple[int, int]] = field(default_factory=dict)

    def apply(self, c: Contribution) -> None:
        """Apply the non-bucketed part of one contribution (idempotent per event id)."""
        if not self.first_seen or c.ts < self.first_seen:
            self.first_seen = c.ts
        self.last_seen = max(self.last_seen, c.ts)
        for name, value in c.registers:
            _lww(self.registers, name, (c.ts, c.event_id, value))
        if c.cart is not None:
            cart_id, added, removed, closed = c.cart
            entry = self.carts.get(cart_id)
            if entry is None:
                entry = self.carts[cart_id] = [0, 0, 0, 0, 0]
            entry[0] += added
            entry[1] += removed
            if added:
                entry[2] = c.ts if not entry[2] else min(entry[2], c.ts)
                entry[3] = max(entry[3], c.ts)
            if closed:
                entry[4] = max(entry[4], c.ts)
        if c.expiry is not None and c.expiry[0] >= self.last_seen:
            # One already past is what ``prune`` drops: a redelivered old notice stays out.
            self.expiries[c.event_id] = c.expiry

    def prune(self, horizon_start: int) -> None:
        """Drop carts and expiry notices that no longer matter at the fragment's newest time."""
        stale = [k for k, v in self.carts.items() if max(v[3], v[4]) < horizon_start and v[3]]
        for cart_id in stale:
            del self.carts[cart_id]
        gone = [k for k, (expires, _) in self.expiries.items() if expires < self.last_seen]
        for key in gone:
            del self.expiries[key]

    def merge(self, other: Small) -> None:
        """Merge another fragment's small state into this one (commutative)."""
        if other.first_seen and (not self.first_seen or other.first_seen < self.first_seen):
            self.first_seen = other.first_seen
        self.last_seen = max(self.last_seen, other.last_seen)
        for name, stamp in other.registers.items():
            _lww(self.registers, name, stamp)
        for cart_id, theirs in other.carts.items():
            mine = self.carts.get(cart_id)
            if mine is None:
                self.carts[cart_id] = list(theirs)
                continue
            first = min(x for x in (mine[2], theirs[2]) if x) if mine[2] or theirs[2] else 0
            self.carts[cart_id] = [
                mine[0] + theirs[0],
                mine[1] + theirs[1],
                first,
                max(mine[3], theirs[3]),
                max(mine[4], theirs[4]),
            ]
        self.expiries.update(other.expiries)


@dataclass(slots=True)
class Aggregate:
    """Everything known about one fragment, or (merged) about one profile."""

    days: dict[int, Counters] = field(default_factory=dict)
    hours: dict[int, Counters] = field(default_factory=dict)
    small: Small = field(default_factory=Small)
    seen: dict[str, int] = field(default_factory=dict)
    erased_before: int = 0
    day_floor: int = 0
    hour_floor: int = 0

    def apply(self, c: Contribution) -> Applied | None:
        """Apply one event's contribution; ``None`` if it was a duplicate or erased."""
        if c.event_id in self.seen or c.ts <= self.erased_before:
            return None
        newest_day = max(self.small.last_seen, c.ts) // DAY
        if c.cart is not None and c.ts // DAY <= newest_day - HORIZON_DAYS and not c.cart[3]:
            # Its cart was pruned with the horizon (and so was its id from ``seen``): a late
            # or redelivered line must not bring an old cart back as open. A purchase's
            # close is kept: it cannot open a cart, and the add may sit on another fragment.
            c.cart = None
        self.seen[c.event_id] = c.ts
        previous_last = self.small.last_seen
        self.small.apply(c)
        last = self.small.last_seen
        day_floor, hour_floor = last // DAY - HORIZON_DAYS, last // HOUR - HOUR_HORIZON
        in_day = c.ts // DAY > day_floor
        in_hour = c.ts // HOUR > hour_floor
        if in_day:
            _add(self.days, c.ts // DAY, c.counters)
        if in_hour:
            _count_event(self.hours, c.ts // HOUR)
        if last == previous_last or hour_floor <= self.hour_floor:
            return Applied(in_day, in_hour, _NO_BUCKETS, _NO_BUCKETS)
        return Applied(in_day, in_hour, *self._evict(day_floor, hour_floor))

    def _evict(self, day_floor: int, hour_floor: int) -> tuple[dict[int, Counters], ...]:
        self.hour_floor = hour_floor
        old_hours = {h: self.hours.pop(h) for h in [h for h in self.hours if h <= hour_floor]}
        if day_floor <= self.day_floor:
            return _NO_BUCKETS, old_hours
        self.day_floor = day_floor
        old_days = {d: self.days.pop(d) for d in [d for d in self.days if d <= day_floor]}
        if old_days:
            horizon_start = (day_floor + 1) * DAY
            self.seen = {k: t for k, t in self.seen.items() if t >= horizon_start}
            self.small.prune(horizon_start)
        return old_days, old_hours

    def add_buckets(self, days: dict[int, Counters], hours: dict[int, Counters], sign: int) -> None:
        """Add (``sign=1``) or subtract (``sign=-1``) another state's buckets."""
        for day, counters in days.items():
            _add(self.days, day, counters.items(), sign)
        for hour, counters in hours.items():
            _add(self.hours, hour, counters.items(), sign)

    def mirror(self, c: Contribution, applied: Applied) -> None:
        """Repeat in a merged profile what applying ``c`` did to its fragment's buckets."""
        if applied.in_day:
            _add(self.days, c.ts // DAY, c.counters)
        if applied.in_hour:
            _count_event(self.hours, c.ts // HOUR)
        if applied.evicted_days or applied.evicted_hours:
            self.add_buckets(applied.evicted_days, applied.evicted_hours, -1)

    def erase_before(self, ts: int) -> None:
        """Forget everything with event time at or before ``ts`` (an erasure request)."""
        self.erased_before = max(self.erased_before, ts)
        self.days.clear()
        self.hours.clear()
        self.small = Small()
        self.seen.clear()
        self.day_floor = self.hour_floor = 0
