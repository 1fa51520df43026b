"""Logged exposures and their outcomes: campaign messages and on-site offer placements.

The logging policy (:mod:`simulator.policy`) picks an action and its propensity; the
ground truth (:mod:`simulator.truth`) decides what the customer does with it. A message
is delivered within seconds, opened within hours, and redeemed within 7 days (later for
procrastinators); a redemption is an ``engagement`` "converted" plus a ``purchase`` with
the offer in ``offers_redeemed``.
"""

from __future__ import annotations

from features.events import Consent, Engagement, Identifiers
from simulator.commerce import basket, purchase
from simulator.emit import DAY
from simulator.policy import (
    Table,
    message_actions,
    message_decision,
    onsite_actions,
    onsite_decision,
    pick,
    table,
)
from simulator.state import CustomerState, Today
from simulator.truth import (
    click_probability,
    conversion_probability,
    onsite_conversion_probability,
    open_probability,
    response_delay_hours,
)
from simulator.visits import Visit, open_visit
from simulator.world import MESSAGE_CHANNELS

HOUR = 3600
MAX_RESPONSE_S = 7 * DAY
CLICK_ONLY_ONSITE = 0.03
_NOTHING = Table([], [])  # no eligible action: nothing is sent or shown


def engagement(
    st: CustomerState,
    ts: int,
    ids: Identifiers,
    action: str,
    channel: str,
    *,
    offer_id: str | None,
    decision_id: str,
    campaign: str | None = None,
    message_id: str | None = None,
) -> None:
    """Emit an engagement with a message (source ``messaging``) or an on-site offer."""
    source = channel if channel in ("web", "app") else "messaging"
    st.emit(
        Engagement(
            event_id=st.next_id("ev"),
            event_time=st.at(ts),
            source=source,  # type: ignore[arg-type]
            ids=ids,
            action=action,  # type: ignore[arg-type]
            channel=channel,  # type: ignore[arg-type]
            campaign=campaign,
            offer_id=offer_id,
            decision_id=decision_id,
            message_id=message_id,
        ),
        ts,
    )


def campaign_message(st: CustomerState, ts: int, today: Today, campaign_index: int) -> None:
    """Send a campaign message chosen by the logging policy, and play out the reaction."""
    c = st.customer
    rng = st.rng
    channels = [ch for ch in MESSAGE_CHANNELS if st.can_message(ch, ts)]
    if not st.known or not channels:
        return
    campaign = today.campaigns[campaign_index]
    when = st.at(ts)
    facts = st.sim.facts
    valid = tuple(facts[o].valid_at(ts) for o in campaign.offer_ids)
    key = ("message", campaign_index, tuple(channels), c.tier, c.home_store, valid)
    distribution = today.tables.get(key)
    if distribution is None:
        actions = message_actions(campaign, facts, channels, when, c.tier, c.home_store)
        distribution = today.tables[key] = table(actions) if actions else _NOTHING
    if not distribution.candidates:
        return
    picked = pick(distribution, rng.random(), send_at=when)
    decision_id = st.next_id("de")
    ids = Identifiers(customer_id=c.customer_id)
    st.log_decision(message_decision(decision_id, when, ids, campaign.campaign_id, picked), ts)

    offer_id, channel = picked.chosen.offer_id or "", str(picked.chosen.channel)
    offer = facts[offer_id]
    message_id = st.next_id("me")
    common = {
        "offer_id": offer_id,
        "decision_id": decision_id,
        "campaign": campaign.campaign_id,
        "message_id": message_id,
    }
    engagement(st, ts + st.between(1, 90), ids, "delivered", channel, **common)
    hour = st.local_hour(ts)
    convert = conversion_probability(c, offer, channel, hour)
    opened = max(open_probability(c, channel, hour), convert)
    u = rng.random()  # one draw: a redemption (u < convert) is always an open (u < opened)
    if u >= opened:
        return
    mean_open = 1.5 * HOUR + 6 * HOUR * c.persona_mix["procrastinator"]
    open_ts = ts + 60 + min(int(rng.expovariate(1 / mean_open)), 2 * DAY)
    engagement(st, open_ts, ids, "opened", channel, **common)
    converted = u < convert
    if converted or rng.random() < click_probability(c, offer):
        engagement(st, open_ts + st.between(5, 300), ids, "clicked", channel, **common)
    if converted:
        delay = int(rng.expovariate(1 / (response_delay_hours(c) * HOUR)))
        due = min(open_ts + 600 + delay, ts + MAX_RESPONSE_S)
        st.schedule(
            due, "conversion", (decision_id, message_id, campaign.campaign_id, channel, offer_id)
        )
    elif rng.random() < 0.01 * (1.5 - c.responsiveness[channel]):
        unsubscribe(st, open_ts + st.between(10, 120), ids, channel, **common)


def unsubscribe(
    st: CustomerState,
    ts: int,
    ids: Identifiers,
    channel: str,
    *,
    offer_id: str | None,
    decision_id: str,
    campaign: str | None,
    message_id: str,
) -> None:
    """Unsubscribe from a message: engagement "unsubscribed", then the channel's opt-out."""
    engagement(
        st,
        ts,
        ids,
        "unsubscribed",
        channel,
        offer_id=offer_id,
        decision_id=decision_id,
        campaign=campaign,
        message_id=message_id,
    )
    st.emit(
        Consent(
            event_id=st.next_id("ev"),
            event_time=st.at(ts + 1),
            source="messaging",
            ids=ids,
            channel=channel,  # type: ignore[arg-type]
            granted=False,
        ),
        ts + 1,
    )
    st.consent_until[channel] = min(st.consent_until[channel], ts + 1)


def conversion(st: CustomerState, ts: int, payload: tuple[str, str, str, str, str]) -> None:
    """Redeem a message's offer: engagement "converted" and a purchase that uses it."""
    decision_id, message_id, campaign, channel, offer_id = payload
    c = st.customer
    rng = st.rng
    ids = Identifiers(customer_id=c.customer_id)
    engagement(
        st,
        ts,
        ids,
        "converted",
        channel,
        offer_id=offer_id,
        decision_id=decision_id,
        campaign=campaign,
        message_id=message_id,
    )
    facts = st.sim.facts[offer_id]
    offer = facts.offer
    seed = [st.product(offer.category)] if offer.category else []
    items = basket(st, seed, offer.min_basket)
    ts += st.between(30, 600)
    if facts.store_only:
        store = (
            c.home_store
            if c.home_store in facts.redeemable_stores
            else min(facts.redeemable_stores)
        )
        purchase(
            st,
            ts,
            "store",
            Identifiers(card_id=c.card_id),
            items,
            store_id=store,
            redeemed=[offer_id],
        )
        return
    sales = "web"
    if facts.app_only or (not facts.web_only and st.linked_devices and rng.random() < 0.5):
        sales = "app"
    if sales == "app" and not c.devices:
        purchase(st, ts, "app", ids, items, redeemed=[offer_id])
        return
    visit = open_visit(st, ts, sales)
    visit.login(ts)
    purchase(st, ts + st.between(30, 300), sales, visit.ids, items, redeemed=[offer_id])


def onsite_exposure(st: CustomerState, visit: Visit, ts: int) -> int:
    """Show one offer at a page load, logged with its propensity; return the session's clock."""
    c = st.customer
    rng = st.rng
    channel = visit.channel
    today = st.sim.today
    when = st.at(ts)
    tier = c.tier if visit.logged_in else None
    pool = today.featured[channel]
    valid = tuple(st.sim.facts[o].valid_at(ts) for o in pool)
    key = ("onsite", channel, tier, valid)
    distribution = today.tables.get(key)
    if distribution is None:
        actions = onsite_actions(pool, st.sim.facts, channel, when, tier)
        distribution = today.tables[key] = table(actions) if actions else _NOTHING
    if not distribution.candidates:
        return ts
    picked = pick(distribution, rng.random())
    decision_id = st.next_id("de")
    st.log_decision(onsite_decision(decision_id, when, visit.ids, channel, picked), ts)
    offer_id = picked.chosen.offer_id or ""
    facts = st.sim.facts[offer_id]
    u = rng.random()
    convert = onsite_conversion_probability(c, facts, channel)
    if u >= convert + CLICK_ONLY_ONSITE:
        return ts
    ts += st.between(5, 60)
    engagement(st, ts, visit.ids, "clicked", channel, offer_id=offer_id, decision_id=decision_id)
    if u >= convert:
        return ts
    visit.login(ts)
    seed = [st.product(facts.offer.category)] if facts.offer.category else []
    items = basket(st, seed, facts.offer.min_basket)
    ts += st.between(60, 600)
    engagement(st, ts, visit.ids, "converted", channel, offer_id=offer_id, decision_id=decision_id)
    purchase(st, ts + st.between(5, 60), channel, visit.ids, items, redeemed=[offer_id])
    return ts
