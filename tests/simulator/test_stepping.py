"""The stepped run: same events as simulate(), deliveries and the customers' reactions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from features.catalog import Catalog
from features.events import Consent, Engagement, Event, Purchase, encode_event
from features.topics import EVENT_TOPICS
from features.validation import validate
from simulator import FileSink, SimulationConfig, simulate
from simulator.stepping import Delivery, SteppedRun
from simulator.world import MESSAGE_CHANNELS

HOUR = 3600
SMALL = SimulationConfig(customers=150, days=4, seed=13)
WEEK = SimulationConfig(customers=300, days=7, seed=17)


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def logged_events(directory: Path, config: SimulationConfig) -> list[Event]:
    """Every valid event of a file log once, in (event time, id) order."""
    found: dict[str, Event] = {}
    for topic in EVENT_TOPICS:
        for line in (directory / f"{topic}.jsonl").read_bytes().splitlines():
            event = validate(line, key=config.contact_hash_key)
            if isinstance(event, Event):
                found.setdefault(event.event_id, event)
    return sorted(found.values(), key=lambda e: (e.event_time, e.event_id))


def hourly(run: SteppedRun) -> list[Event]:
    events: list[Event] = []
    while run.now < run.end_ts:
        step = run.advance(run.now + HOUR)
        assert all(run.now - HOUR <= e.event_time.timestamp() < run.now for e in step)
        events += step
    return events


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def wire(events: list[Event]) -> list[bytes]:
    return [encode_event(e) for e in events]


def test_hourly_steps_give_the_events_and_the_bytes_of_simulate(
    tmp_path: Path, catalog: Catalog
) -> None:
    simulate(SMALL, catalog, FileSink(tmp_path / "simulated"))
    before = files(tmp_path / "simulated")
    run = SteppedRun(SMALL, catalog, FileSink(tmp_path / "stepped"))
    events = hourly(run)
    stats = run.close()
    expected = logged_events(tmp_path / "simulated", SMALL)
    assert [(e.event_id, e.event_time) for e in events] == [
        (e.event_id, e.event_time) for e in expected
    ]
    assert events == expected
    assert files(tmp_path / "stepped") == before
    assert stats.messages == sum(
        len(b.splitlines()) for n, b in before.items() if "ground" not in n
    )
    simulate(SMALL, catalog, FileSink(tmp_path / "again"))
    assert files(tmp_path / "again") == before


def test_uneven_steps_return_every_event_once_in_order(catalog: Catalog) -> None:
    whole = SteppedRun(SMALL, catalog).advance(SMALL.days * 86_400 + 10**10)
    run = SteppedRun(SMALL, catalog)
    events: list[Event] = []
    for step in (1, 7_000, 50, 86_400, 3 * HOUR, 10**6):
        events += run.advance(run.now + step)
    assert run.advance(run.now) == []
    assert wire(events) == wire(whole)


def remind_discount_hunters(
    catalog: Catalog, *, send: bool
) -> tuple[list[Event], set[str], SteppedRun]:
    """Send a 10 % cart reminder for every abandoned cart of a discount hunter (or not)."""
    run = SteppedRun(WEEK, catalog)
    events: list[Event] = []
    reminded: set[str] = set()
    while run.now < run.end_ts:
        events += run.advance(run.now + HOUR)
        for customer in run.world.customers:
            if customer.persona_mix["discount_hunter"] < 0.5:
                continue
            st = run.state(customer.customer_id)
            channel = next((ch for ch in MESSAGE_CHANNELS if st.can_message(ch, run.now)), None)
            for cart_id in sorted(set(st.abandoned) - reminded):
                reminded.add(cart_id)
                if send and channel is not None:
                    delivery = Delivery(
                        customer_id=customer.customer_id,
                        channel=channel,
                        send_at=at(run.now),
                        message_id=f"de-{cart_id}",
                        campaign="journey:cart_abandonment:reminder",
                        content="cart_reminder",
                        discount_pct=10,
                        cart_id=cart_id,
                    )
                    run.deliver(delivery)
    return events, reminded, run


def test_cart_reminders_bring_abandoned_carts_back_and_are_deterministic(
    catalog: Catalog,
) -> None:
    treated, reminded, _ = remind_discount_hunters(catalog, send=True)
    again, _, _ = remind_discount_hunters(catalog, send=True)
    control, abandoned, _ = remind_discount_hunters(catalog, send=False)
    assert wire(treated) == wire(again)

    def bought(events: list[Event], carts: set[str]) -> int:
        return sum(isinstance(e, Purchase) and e.cart_id in carts for e in events)

    assert bought(treated, reminded) > bought(control, abandoned)
    ours = [
        e
        for e in treated
        if isinstance(e, Engagement) and e.campaign == "journey:cart_abandonment:reminder"
    ]
    assert {"delivered", "opened", "clicked"} <= {e.action for e in ours}
    for e in ours:
        assert e.source == "messaging"
        assert e.decision_id == e.message_id == f"de-{e.message_id[3:]}"
        assert e.ids.customer_id is not None


def test_a_delivery_without_consent_or_after_erasure_changes_nothing(catalog: Catalog) -> None:
    config = SimulationConfig(customers=300, days=4, seed=13)  # cu-000199 is erased on day 1
    run = SteppedRun(config, catalog)
    silent = next(c for c in run.world.customers if not c.consent["sms"])
    erased = next(c for c in run.world.customers if c.erasure_day is not None)
    gone = run.state(erased.customer_id).stop_ts
    sends = [
        (silent.customer_id, "sms", run.start_ts + 86_400 + 600),
        (erased.customer_id, "email", gone),
        (erased.customer_id, "email", gone + HOUR),
    ]
    assert erased.consent["email"]
    for customer_id, channel, ts in sends:
        delivery = Delivery(
            customer_id, channel, at(ts), f"de-{ts}", "journey:points:nudge", "points_nudge"
        )
        run.deliver(delivery)
    events = run.advance(run.end_ts)
    assert wire(events) == wire(SteppedRun(config, catalog).advance(run.end_ts))


def test_fatigue_unsubscribes_and_stops_later_messages(catalog: Catalog) -> None:
    run = SteppedRun(SMALL, catalog)
    run.advance(run.start_ts + 86_400)  # everyone signed up on day 0 is a member now
    members = [
        c
        for c in run.world.customers
        if c.consent["email"] and c.signup_day == 0 and c.erasure_day is None
    ]
    contents = ("how_to", "feedback", "reminder", "points_nudge", "cross_sell")
    for hour in range(48):
        for customer in members:
            content = contents[hour % len(contents)]
            run.deliver(
                Delivery(
                    customer.customer_id,
                    "email",
                    at(run.start_ts + 86_400 + hour * HOUR),
                    f"de-{customer.customer_id}-{hour}",
                    f"journey:test:{content}",
                    content,
                    offer_id="of-disc-dairy" if content == "cross_sell" else None,
                )
            )
    events = run.advance(run.end_ts)
    mine = [
        e for e in events if isinstance(e, Engagement) and (e.campaign or "").startswith("journey:")
    ]
    actions = {e.action for e in mine}
    assert {"delivered", "opened", "clicked", "unsubscribed"} <= actions
    optouts: dict[str | None, datetime] = {}
    for e in events:
        if isinstance(e, Consent) and e.channel == "email" and not e.granted:
            optouts.setdefault(e.ids.customer_id, e.event_time)  # the first one
    assert optouts
    for e in mine:
        if e.action == "delivered" and e.ids.customer_id in optouts:
            # Sent before the first opt-out took effect (delivery takes up to 90 s).
            assert (e.event_time - optouts[e.ids.customer_id]).total_seconds() < 90


def test_bad_deliveries_are_refused(catalog: Catalog) -> None:
    run = SteppedRun(SMALL, catalog)
    when = at(run.start_ts)
    with pytest.raises(ValueError, match="content"):
        Delivery("cu-000001", "email", when, "de-1", "journey:x", "spam")
    with pytest.raises(ValueError, match="aware"):
        Delivery("cu-000001", "email", datetime(2026, 3, 2), "de-1", "journey:x", "how_to")  # noqa: DTZ001
    with pytest.raises(KeyError, match="unknown customer"):
        run.deliver(Delivery("cu-999999", "email", when, "de-1", "journey:x", "how_to"))
    with pytest.raises(KeyError, match="unknown offer"):
        run.deliver(
            Delivery("cu-000001", "email", when, "de-1", "journey:x", "cross_sell", offer_id="x")
        )
    run.close()
    with pytest.raises(RuntimeError, match="closed"):
        run.advance(run.end_ts)
