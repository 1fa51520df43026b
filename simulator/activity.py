"""Day-by-day behaviour in event time: sessions, carts, store visits, identity and consent.

Each day a customer's visits are put on their agenda at times drawn around their peak
local hour, then the agenda runs in time order (with things planned on earlier days, such
as returning to an abandoned cart), so the points balance follows event time.

Persona effects: discount hunters browse and buy often and clip coupons; newcomers sign up
during the simulation and live in the app; touchers scan products in the store and buy
them online later; procrastinators abandon carts and come back days later.
"""

from __future__ import annotations

from features.catalog import Product
from features.events import (
    AddToCart,
    CheckoutStart,
    Consent,
    ErasureRequest,
    Identifiers,
    Item,
    RemoveFromCart,
    Search,
)
from simulator.commerce import basket, expire, expiry_notice, purchase
from simulator.emit import DAY
from simulator.exposures import campaign_message, conversion, onsite_exposure
from simulator.journey_response import journey_message
from simulator.state import ABANDONED_MEMORY_S, CustomerState, Today
from simulator.visits import Visit, link, open_visit, page_view, product_view
from simulator.world import MESSAGE_CHANNELS

HOUR = 3600
MESSAGE_RATE = 0.3  # marketing messages per member and day
ONSITE_SHARE = 0.5  # page loads that show an offer placement


def session(st: CustomerState, ts: int, channel: str) -> None:
    """Browse the web or the app: pages, products, searches, maybe a cart."""
    c = st.customer
    rng = st.rng
    device = None
    if channel == "app":
        # Before signing up only one's own devices are used (shared ones need a login).
        usable = c.devices if st.known else [d for d in c.devices if d not in c.shared_devices]
        if not usable:
            return
        device = usable[int(rng.random() * len(usable))]
    visit = open_visit(st, ts, channel, device)
    src = channel
    st.emit(page_view(st, ts, visit, "home"), ts)
    if rng.random() < ONSITE_SHARE:
        ts = onsite_exposure(st, visit, ts)
    login_step = st.between(0, 3) if visit.member_ids and rng.random() < 0.55 else -1
    viewed: list[Product] = []
    steps = 1 + (rng.random() < 0.6) + (rng.random() < 0.35)
    for step in range(steps):
        ts += st.between(15, 120)
        if step == login_step:
            visit.login(ts)
        category = st.category()
        if rng.random() < 0.2:
            query = st.sim.category_names[category]
            st.emit(
                Search(
                    event_id=st.next_id("ev"),
                    event_time=st.at(ts),
                    source=src,  # type: ignore[arg-type]
                    ids=visit.ids,
                    query=query,
                    session_id=visit.session_id,
                ),
                ts,
            )
        else:
            st.emit(page_view(st, ts, visit, "category"), ts)
        for _ in range(1 + (rng.random() < 0.5)):
            ts += st.between(10, 90)
            product = st.product(category)
            st.emit(product_view(st, ts, visit.ids, product, src, visit.session_id), ts)
            viewed.append(product)
    mix = c.persona_mix
    if rng.random() < 0.3 + 0.2 * mix["discount_hunter"] + 0.1 * mix["procrastinator"]:
        cart(st, visit, ts, viewed)


def cart(st: CustomerState, visit: Visit, ts: int, products: list[Product]) -> None:
    """Fill a cart; buy now, abandon it, or come back to it later (procrastinators)."""
    rng = st.rng
    cart_id = st.next_id("ct")
    picked = rng.sample(products, min(len(products), st.between(1, 3)))
    items = []
    for p in picked:
        ts += st.between(5, 60)
        item = Item(p.id, p.category, p.price, 1 + (rng.random() < 0.2))
        st.emit(
            AddToCart(
                event_id=st.next_id("ev"),
                event_time=st.at(ts),
                source=visit.channel,  # type: ignore[arg-type]
                ids=visit.ids,
                cart_id=cart_id,
                product_id=p.id,
                category=p.category,
                price=p.price,
                quantity=item.quantity,
                session_id=visit.session_id,
            ),
            ts,
        )
        items.append(item)
    if len(items) > 1 and rng.random() < 0.1:
        ts += st.between(5, 60)
        gone = items.pop()
        st.emit(
            RemoveFromCart(
                event_id=st.next_id("ev"),
                event_time=st.at(ts),
                source=visit.channel,  # type: ignore[arg-type]
                ids=visit.ids,
                cart_id=cart_id,
                product_id=gone.product_id,
                category=gone.category,
                price=gone.price,
                quantity=gone.quantity,
                session_id=visit.session_id,
            ),
            ts,
        )
    late = st.customer.persona_mix["procrastinator"]
    if rng.random() < 0.65 - 0.75 * late:
        checkout(st, visit, ts + st.between(30, 300), cart_id, items)
    elif rng.random() < 0.3 + 0.6 * late:
        mean = 2 * HOUR + 40 * HOUR * late
        delay = min(int(rng.expovariate(1 / mean)) + 600, 9 * DAY)
        device = visit.ids.device_id
        st.schedule(ts + delay, "return_to_cart", (visit.channel, device, cart_id, items))
    else:
        remember_abandoned(st, ts, visit, cart_id, items)


def remember_abandoned(
    st: CustomerState, ts: int, visit: Visit, cart_id: str, items: list[Item]
) -> None:
    """Note a cart left for good, which a reminder may still bring back (no random draw).

    Carts older than :data:`ABANDONED_MEMORY_S` are forgotten.
    """
    abandoned = st.abandoned
    if abandoned:
        old = [k for k, v in abandoned.items() if v[3] <= ts - ABANDONED_MEMORY_S]
        for key in old:
            del abandoned[key]
    abandoned[cart_id] = (visit.channel, visit.ids.device_id, items, ts)


def checkout(st: CustomerState, visit: Visit, ts: int, cart_id: str, items: list[Item]) -> None:
    """Log in if needed, start the checkout and pay."""
    visit.login(ts)
    value = round(sum(i.price * i.quantity for i in items), 2)
    st.emit(
        CheckoutStart(
            event_id=st.next_id("ev"),
            event_time=st.at(ts),
            source=visit.channel,  # type: ignore[arg-type]
            ids=visit.ids,
            cart_id=cart_id,
            cart_value=value,
            session_id=visit.session_id,
        ),
        ts,
    )
    purchase(st, ts + st.between(60, 240), visit.channel, visit.ids, items, cart_id=cart_id)


def return_to_cart(
    st: CustomerState, ts: int, payload: tuple[str, str | None, str, list[Item]]
) -> None:
    """Come back to an abandoned cart and buy it."""
    channel, device, cart_id, items = payload
    visit = open_visit(st, ts, channel, device)
    st.emit(page_view(st, ts, visit, "cart"), ts)
    checkout(st, visit, ts + st.between(20, 120), cart_id, items)


def store_visit(st: CustomerState, ts: int, store_id: str) -> None:
    """Shop in a store with the loyalty card, or (touchers) scan products to buy online."""
    c = st.customer
    rng = st.rng
    if c.card_id is None:
        return
    card = Identifiers(card_id=c.card_id)
    if not st.card_seen:
        st.card_seen = True
        ids = Identifiers(customer_id=c.customer_id, card_id=c.card_id)
        st.emit(link(st, ts, ids, "card_scan", "store"), ts)
    if rng.random() < min(0.9, 1.4 * c.persona_mix["toucher"]):
        device = next(iter(sorted(st.linked_devices)), None)
        scan_ids = Identifiers(customer_id=c.customer_id, device_id=device) if device else card
        seen = []
        for _ in range(st.between(2, 4)):
            ts += st.between(30, 300)
            product = st.product()
            st.emit(product_view(st, ts, scan_ids, product, "store", None, store_id), ts)
            seen.append(product)
        if rng.random() < 0.7:
            delay = int(rng.expovariate(1 / (6 * HOUR))) + 1200
            st.schedule(ts + delay, "buy_online", seen)
        if rng.random() >= 0.15:
            return
    ts += st.between(300, 1800)
    purchase(st, ts, "store", card, basket(st), store_id=store_id)


def buy_online(st: CustomerState, ts: int, products: list[Product]) -> None:
    """Buy online what was looked at in the store (the toucher's way)."""
    channel = "app" if st.linked_devices and st.rng.random() < 0.5 else "web"
    visit = open_visit(st, ts, channel)
    visit.login(ts)
    if st.rng.random() < 0.1:
        cart(st, visit, ts, products)  # even touchers sometimes leave the cart
    else:
        _buy_now(st, visit, ts, products)


def _buy_now(st: CustomerState, visit: Visit, ts: int, products: list[Product]) -> None:
    cart_id = st.next_id("ct")
    items = []
    for p in products:
        ts += st.between(5, 40)
        st.emit(
            AddToCart(
                event_id=st.next_id("ev"),
                event_time=st.at(ts),
                source=visit.channel,  # type: ignore[arg-type]
                ids=visit.ids,
                cart_id=cart_id,
                product_id=p.id,
                category=p.category,
                price=p.price,
                session_id=visit.session_id,
            ),
            ts,
        )
        items.append(Item(p.id, p.category, p.price))
    checkout(st, visit, ts + st.between(30, 200), cart_id, items)


def signup(st: CustomerState, ts: int) -> None:
    """Join the loyalty program: link cookie, card and email; record consent per channel."""
    c = st.customer
    st.known = True
    ids = Identifiers(
        customer_id=c.customer_id,
        anonymous_id=c.cookies[0],
        card_id=c.card_id,
        email_hash=c.email_hash,
    )
    st.emit(link(st, ts, ids, "signup", "web"), ts)
    member = Identifiers(customer_id=c.customer_id)
    for channel in MESSAGE_CHANNELS:
        if channel == "push" and not c.app_user:
            continue
        ts += 1
        st.emit(
            Consent(
                event_id=st.next_id("ev"),
                event_time=st.at(ts),
                source="web",
                ids=member,
                channel=channel,
                granted=c.consent[channel],
            ),
            ts,
        )  # type: ignore[arg-type]


def contact_center(st: CustomerState, ts: int) -> None:
    """Call the contact center, which learns the phone number."""
    c = st.customer
    ids = Identifiers(customer_id=c.customer_id, phone_hash=c.phone_hash)
    st.emit(link(st, ts, ids, "contact_given", "contact_center"), ts)


def opt_out(st: CustomerState, ts: int) -> None:
    """Withdraw consent for one channel in the account settings."""
    open_channels = [ch for ch in MESSAGE_CHANNELS if st.consent_until[ch] > ts]
    if not open_channels:
        return
    channel = st.rng.choice(open_channels)
    st.consent_until[channel] = ts
    st.emit(
        Consent(
            event_id=st.next_id("ev"),
            event_time=st.at(ts),
            source="web",
            ids=Identifiers(customer_id=st.customer.customer_id),
            channel=channel,
            granted=False,
        ),
        ts,
    )  # type: ignore[arg-type]


def erasure(st: CustomerState, ts: int) -> None:
    """Ask to be forgotten; the customer does nothing afterwards."""
    c = st.customer
    event = ErasureRequest(
        event_id=st.next_id("ev"),
        event_time=st.at(ts),
        source="contact_center",
        ids=Identifiers(customer_id=c.customer_id),
    )
    st.sim.emitter.event(st.noise_rng, event, ts)


def _session_ts(st: CustomerState, today: Today) -> int:
    hour = (st.customer.peak_hour + st.rng.gauss(0.0, 2.5)) % 24
    return st.local_ts(today.start_ts, hour)


def plan_day(st: CustomerState, today: Today) -> None:
    """Put the day's visits, messages and calls on the customer's agenda."""
    c = st.customer
    rng = st.rng
    day = today.day
    if day == c.signup_day:
        at = today.start_ts + st.between(0, 600) if day == 0 else _session_ts(st, today)
        st.schedule(at, "signup")
    if c.erasure_day == day:
        st.schedule(st.stop_ts, "erasure")
    member = c.signup_day is not None and c.signup_day <= day
    mix = c.persona_mix
    web = 0.4 + 0.3 * mix["discount_hunter"] + 0.5 * mix["toucher"] + 0.2 * mix["procrastinator"]
    for _ in range(st.poisson(web)):
        st.schedule(_session_ts(st, today), "web")
    if c.app_user:
        for _ in range(st.poisson(0.45 + 0.6 * mix["newcomer"] + 0.3 * mix["social"])):
            st.schedule(_session_ts(st, today), "app")
    if not member:
        return
    for _ in range(st.poisson(0.25 + 0.5 * mix["toucher"])):
        planned = _plan_store_visit(st, today)
        if planned is not None:
            st.schedule(*planned)
    if rng.random() < MESSAGE_RATE:
        campaign = rng.randrange(len(today.campaigns))
        st.schedule(
            st.local_ts(today.start_ts, rng.uniform(8.0, 21.0)), "message", (today, campaign)
        )
    if c.phone_hash is not None and rng.random() < 0.01:
        st.schedule(st.local_ts(today.start_ts, rng.uniform(9.0, 18.0)), "contact")
    if rng.random() < 0.002:
        st.schedule(_session_ts(st, today), "opt_out")


def _plan_store_visit(st: CustomerState, today: Today) -> tuple[int, str, str] | None:
    c = st.customer
    rng = st.rng
    store_id = c.home_store
    if rng.random() < 0.15:
        store_id = rng.choice(st.sim.stores_by_zone[c.timezone])
    weekday = ((today.start_ts + DAY // 2 + st.offset) // DAY + 3) % 7  # 1970-01-01 was a Thursday
    hours = st.sim.stores[store_id].opens_at(weekday)
    if hours is None:
        return None
    opens, closes = hours
    start = opens.hour + opens.minute / 60
    end = max(start, closes.hour + closes.minute / 60 - 0.5)
    return st.local_ts(today.start_ts, rng.uniform(start, end)), "store", store_id


def begin_day(st: CustomerState, today: Today) -> bool:
    """Start a customer's day and plan it; return ``False`` if they are gone by then."""
    if today.start_ts >= st.stop_ts:
        return False
    st.start_day(today.start_ts)
    plan_day(st, today)
    return True


def advance_to(st: CustomerState, until_ts: int) -> None:
    """Work the customer's agenda in time order up to epoch second ``until_ts`` (exclusive).

    Handlers only plan things at or after their own time, so working a day in steps does
    the same as working it at once.
    """
    while (entry := st.due(until_ts)) is not None:
        ts, kind, payload = entry
        if ts >= st.stop_ts and kind != "erasure":
            continue
        _HANDLERS[kind](st, ts, payload)


def run_day(st: CustomerState, today: Today) -> None:
    """Simulate one day of one customer: plan it, then work the agenda in time order."""
    if begin_day(st, today):
        advance_to(st, today.start_ts + DAY)


_HANDLERS = {
    "web": lambda st, ts, _: session(st, ts, "web"),
    "app": lambda st, ts, _: session(st, ts, "app"),
    "store": store_visit,
    "return_to_cart": return_to_cart,
    "buy_online": buy_online,
    "signup": lambda st, ts, _: signup(st, ts),
    "contact": lambda st, ts, _: contact_center(st, ts),
    "opt_out": lambda st, ts, _: opt_out(st, ts),
    "erasure": lambda st, ts, _: erasure(st, ts),
    "expiry_notice": lambda st, ts, p: expiry_notice(st, ts, *p),
    "expire": lambda st, ts, p: expire(st, p),
    "message": lambda st, ts, p: campaign_message(st, ts, *p),
    "conversion": conversion,
    "journey_message": journey_message,
}
