"""Baskets, purchases and the loyalty ledger: points earned, redeemed and expiring.

Discount hunters clip coupons: their organic purchases redeem more offers. Points are
1 per currency unit times the tier multiplier, plus what bonus-point offers add.
"""

from __future__ import annotations

from collections.abc import Sequence

from features.aggregate import DAY, HOUR
from features.catalog import Product
from features.events import Identifiers, Item, PointsExpiry, Purchase, Refund
from simulator.policy import offer_allowed
from simulator.state import CustomerState
from simulator.truth import OfferFacts
from simulator.world import TIER_MULTIPLIER


def basket(st: CustomerState, seed: Sequence[Product] = (), min_total: float = 0.0) -> list[Item]:
    """Return purchase lines: the ``seed`` products plus a few more, reaching ``min_total``."""
    rng = st.rng
    products = list(seed)
    for _ in range(st.between(0 if products else 1, 4)):
        products.append(st.product())
    items = [Item(p.id, p.category, p.price, 1 + (rng.random() < 0.25)) for p in products]
    total = sum(i.price * i.quantity for i in items)
    while total < min_total:
        p = st.product()
        items.append(Item(p.id, p.category, p.price, 2))
        total += p.price * 2
    return items


def _coupons(
    st: CustomerState, channel: str, store_id: str | None, items: list[Item], ts: int
) -> list[str]:
    # Organic coupon use; discount hunters clip far more of them.
    c = st.customer
    rng = st.rng
    if not st.known or rng.random() >= 0.03 + 0.5 * c.persona_mix["discount_hunter"]:
        return []
    in_basket = {i.category for i in items}
    usable: list[OfferFacts] = []
    for f in st.sim.facts.values():
        sales = f.offer.sales_channels
        if sales and channel not in sales:
            continue
        if f.store_only and store_id not in f.redeemable_stores:
            continue
        if f.offer.category is not None and f.offer.category not in in_basket:
            continue
        if offer_allowed(f, ts, c.tier, None if f.store_only else c.home_store):
            usable.append(f)
    if not usable:
        return []
    wanted = 1 + (rng.random() < 0.5 * c.persona_mix["discount_hunter"])
    return sorted(f.offer_id for f in rng.sample(usable, min(wanted, len(usable))))


def purchase(
    st: CustomerState,
    ts: int,
    channel: str,
    ids: Identifiers,
    items: list[Item],
    *,
    cart_id: str | None = None,
    store_id: str | None = None,
    redeemed: Sequence[str] = (),
) -> None:
    """Emit a purchase, updating the customer's points balance (members only)."""
    c = st.customer
    rng = st.rng
    total = round(sum(i.price * i.quantity for i in items), 2)
    offers = sorted({*redeemed, *_coupons(st, channel, store_id, items, ts)})
    earned = redeemed_points = 0
    balance: int | None = None
    if st.known:
        earned = int(total * TIER_MULTIPLIER[c.tier])
        for offer_id in offers:
            offer = st.sim.facts[offer_id].offer
            if offer.kind == "bonus_points":
                earned = (
                    earned * int(offer.value) if offer.value < 10 else earned + int(offer.value)
                )
        hunter = c.persona_mix["discount_hunter"]
        if st.points >= 500 and rng.random() < 0.1 + 0.3 * hunter:
            redeemed_points = min(st.points, 100 * st.between(1, 5))
        st.points += earned - redeemed_points
        balance = st.points
    st.emit(
        Purchase(
            event_id=st.next_id("ev"),
            event_time=st.at(ts),
            source=channel,  # type: ignore[arg-type]
            ids=ids,
            order_id=(order_id := st.next_id("or")),
            channel=channel,  # type: ignore[arg-type]
            payment_channel=channel,  # type: ignore[arg-type]
            items=items,
            total=total,
            store_id=store_id,
            cart_id=cart_id,
            points_earned=earned,
            points_redeemed=redeemed_points,
            points_balance=balance,
            tier=c.tier if st.known else None,
            offers_redeemed=offers,
        ),
        ts,
    )
    rate = st.sim.config.refund_rate
    if rate and rng.random() < rate:  # no draw at 0: the default worlds stay as they were
        refund(st, ts, channel, ids, order_id, items, total, offers)


def refund(
    st: CustomerState,
    ts: int,
    channel: str,
    ids: Identifiers,
    order_id: str,
    items: list[Item],
    total: float,
    offers: list[str],
) -> None:
    """Emit a later refund of an order: a cancellation or a return.

    Online orders are cancelled within a day in 30 % of their refunds; the rest are returns
    within two weeks, of the whole order (75 %) or of one line. A refund of the whole order
    voids every offer it redeemed; a line's refund voids none.
    """
    rng = st.rng
    if channel != "store" and rng.random() < 0.3:
        at, reason, amount = ts + st.between(1, 24) * HOUR, "cancelled", total
    else:
        at, reason = ts + st.between(1, 14) * DAY + st.between(0, DAY - 1), "returned"
        line = items[int(rng.random() * len(items))]
        amount = total if rng.random() < 0.75 else round(line.price * line.quantity, 2)
    whole = amount == total
    st.emit(
        Refund(
            event_id=st.next_id("ev"),
            event_time=st.at(at),
            source=channel,  # type: ignore[arg-type]
            ids=ids,
            order_id=order_id,
            channel=channel,  # type: ignore[arg-type]
            amount=amount,
            reason=reason,  # type: ignore[arg-type]
            offers_voided=offers if whole else [],
        ),
        at,
    )


def expiry_notice(st: CustomerState, ts: int, expires: int, points: int) -> None:
    """Emit the ledger's notice that ``points`` expire at ``expires`` (30 days ahead)."""
    c = st.customer
    st.emit(
        PointsExpiry(
            event_id=st.next_id("ev"),
            event_time=st.at(ts),
            source="loyalty",
            ids=Identifiers(customer_id=c.customer_id, card_id=c.card_id),
            points=min(points, st.points),
            expires_at=st.at(expires),
            points_balance=st.points,
        ),
        ts,
    )


def expire(st: CustomerState, points: int) -> None:
    """Take expired points off the balance (the ledger sends no event for it)."""
    st.points -= min(points, st.points)
