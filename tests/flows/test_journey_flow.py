"""The journey flow over the file event log: replay, idempotent sends, identity across channels."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from bytewax.testing import run_main
from typer.testing import CliRunner

from features.catalog import load_catalog
from features.eventlog import EventLogWriter, topic_path
from features.events import (
    AddToCart,
    Consent,
    Identifiers,
    IdentityLink,
    Item,
    PageView,
    Purchase,
    encode_event,
)
from features.journeys import DEFAULT_JOURNEYS_PATH, in_control, load_journeys
from features.policy import DEFAULT_POLICIES_PATH
from features.store import open_store
from features.topics import MESSAGES_OUTBOUND, TRIGGERS, topic_for
from flows.features_flow import FlowConfig
from flows.journey_flow import JourneySetup, build_journey_flow
from omnioffer.cli import app as cli
from tests.conftest import TEST_HASH_KEY

CATALOG = load_catalog()
BOOK = load_journeys(DEFAULT_JOURNEYS_PATH, CATALOG.offers, CATALOG.categories)


def run_journeys(events_dir, db_path, out_dir):
    config = FlowConfig(
        open_store=functools.partial(open_store, "sqlite", sqlite_path=db_path),
        hash_key=TEST_HASH_KEY,
        event_log_dir=events_dir,
        batch_size=100,
    )
    setup = JourneySetup(
        book=BOOK, catalog=CATALOG, policies_path=DEFAULT_POLICIES_PATH, output_dir=out_dir
    )
    run_main(build_journey_flow(config, setup, deadletter_path=out_dir / "deadletter.jsonl"))
    outbound = topic_path(out_dir, MESSAGES_OUTBOUND)
    triggers = topic_path(out_dir, TRIGGERS)
    return (
        outbound.read_bytes() if outbound.exists() else b"",
        triggers.read_bytes() if triggers.exists() else b"",
    )


def records(raw: bytes) -> list[dict]:
    return [orjson.loads(line) for line in raw.splitlines() if line]


def test_a_replay_emits_exactly_the_same_messages(small_world, tmp_path):
    first = run_journeys(small_world, tmp_path / "a.sqlite3", tmp_path / "a")
    second = run_journeys(small_world, tmp_path / "b.sqlite3", tmp_path / "b")
    assert first == second
    sent = records(first[0])
    assert len(sent) > 20
    assert len({m["decision_id"] for m in sent}) == len(sent)
    kinds = {r["type"] for r in records(first[1])}
    assert {"entered", "exited", "sent", "converted"} <= kinds
    report = CliRunner().invoke(cli, ["journeys", "report", "--events", str(tmp_path / "a"),
                                      "--json", str(tmp_path / "report.json")])  # fmt: skip
    assert report.exit_code == 0, report.output
    assert f"{len(records(first[1])):,} journey records in" in report.output
    document = orjson.loads((tmp_path / "report.json").read_bytes())
    assert "cart_abandonment" in document and "entries" in document["cart_abandonment"]


def test_running_again_on_the_same_contact_log_sends_nothing_twice(small_world, tmp_path):
    db = tmp_path / "store.sqlite3"
    outbound, triggers = run_journeys(small_world, db, tmp_path / "out")
    again_outbound, again_triggers = run_journeys(small_world, db, tmp_path / "out")
    # messages.outbound is appended to: the second run added no line. It decided the same
    # things (the triggers file is rewritten by each run without recovery).
    assert again_outbound == outbound
    assert again_triggers == triggers
    with open_store("sqlite", sqlite_path=db) as store:
        for message in records(outbound)[:20]:
            logged = {c.decision_id for c in store.contacts_of(message["profile_id"])}
            assert message["decision_id"] in logged


def _customer_not_held_out() -> str:
    ids = (f"cu-journey-{i}" for i in range(1000))
    return next(c for c in ids if not in_control(f"customer_id:{c}", "cart_abandonment",
                                                   0.1, BOOK.salt))  # fmt: skip


def _write_story(directory, *, store_purchase: bool) -> str:
    """A customer with an app device and a loyalty card leaves a cart in the app."""
    customer = _customer_not_held_out()
    t0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
    device = Identifiers(device_id=f"dv-{customer}")
    card = Identifiers(card_id=f"cd-{customer}")
    both = Identifiers(customer_id=customer, device_id=device.device_id, card_id=card.card_id)
    events = [
        IdentityLink(event_id="link", event_time=t0 - timedelta(days=1), source="app", ids=both,
                     reason="app_install"),
        *[
            Consent(event_id=f"consent-{ch}", event_time=t0 - timedelta(days=1), source="app",
                    ids=Identifiers(customer_id=customer), channel=ch, granted=True)
            for ch in ("email", "push")
        ],
        AddToCart(event_id="add", event_time=t0, source="app", ids=device, cart_id="ct-1",
                  product_id="pr-coffee", category="coffee_tea", price=6.5),
    ]  # fmt: skip
    if store_purchase:
        events.append(
            Purchase(event_id="till", event_time=t0 + timedelta(hours=5), source="store", ids=card,
                     order_id="or-1", channel="store", payment_channel="store", store_id="st-001",
                     items=[Item("pr-coffee", "coffee_tea", 6.5), Item("pr-milk", "dairy", 1.2)],
                     total=7.7)
        )  # fmt: skip
    # Someone else browsing for four days moves event time (the watermark) on.
    events += [
        PageView(event_id=f"pv-{h}", event_time=t0 + timedelta(hours=h), source="web",
                 ids=Identifiers(anonymous_id="a-browser"), page="home")
        for h in range(1, 96)
    ]  # fmt: skip
    with EventLogWriter(directory) as log:
        for event in sorted(events, key=lambda e: e.event_time):
            log.append(topic_for(event.kind), encode_event(event))
    return f"customer_id:{customer}"


@pytest.mark.parametrize("store_purchase", [True, False])
def test_a_purchase_in_a_store_cancels_the_app_cart_reminder(tmp_path, store_purchase):
    profile = _write_story(tmp_path / "events", store_purchase=store_purchase)
    outbound, triggers = run_journeys(tmp_path / "events", tmp_path / "s.sqlite3", tmp_path / "out")
    cart = [r for r in records(triggers) if r["journey"] == "cart_abandonment"]
    assert {r["profile_id"] for r in cart} == {profile}  # device and card resolved to one person
    reminders = [m for m in records(outbound) if m["journey"] == "cart_abandonment"]
    if store_purchase:
        assert reminders == []
        assert [r["reason"] for r in cart if r["type"] == "exited"] == ["purchased"]
    else:
        assert [m["step"] for m in reminders] == ["reminder", "last_chance"]
        assert {m["channel"] for m in reminders} <= {"email", "push"}


def test_a_send_is_refused_when_the_api_sent_in_between(tmp_path, monkeypatch):
    # The reminder is decided with the contact log as the journey step read it; the API
    # then sends the person two marketing messages (the daily cap across channels) before
    # the reminder is written. The send must see them and not pass the cap.
    import dataclasses

    from features.policy import load_policies
    from features.store import ContactRecord, StoreBatch
    from flows import journey_flow, metrics

    events = tmp_path / "events"
    profile = _write_story(events, store_purchase=False)
    probe, _ = run_journeys(events, tmp_path / "probe.sqlite3", tmp_path / "probe")
    reminder = next(m for m in records(probe) if m["step"] == "reminder")
    send_at = datetime.fromisoformat(reminder["send_at"])
    cap = load_policies(DEFAULT_POLICIES_PATH).contact.caps.all_channels.day
    api = [
        ContactRecord(profile_id=profile, decision_id=f"api-{n}", channel="sms",
                      sent_at=send_at - timedelta(minutes=10 + n), kind="marketing",
                      campaign=f"api-campaign-{n}")
        for n in range(cap)
    ]  # fmt: skip
    db = tmp_path / "shared.sqlite3"
    with open_store("sqlite", sqlite_path=db) as store:
        store.write(StoreBatch(contacts=api))

    decide = journey_flow._Runtime.context

    def stale_context(runtime):
        # The step's reads miss the API's sends: they happened after its read.
        if getattr(runtime, "_stale", None) is None:
            context = decide(runtime)
            read = context.history
            runtime._stale = dataclasses.replace(context, history=lambda p, since: [
                c for c in read(p, since) if not c.decision_id.startswith("api-")
            ])  # fmt: skip
        return runtime._stale

    monkeypatch.setattr(journey_flow._Runtime, "context", stale_context)
    refused = metrics.JOURNEY_SENDS_REFUSED.labels("total_cap_day")
    before = refused._value.get()
    outbound, triggers = run_journeys(events, db, tmp_path / "out")
    sent = {m["decision_id"] for m in records(outbound)}
    said = {r["decision_id"]: r for r in records(triggers) if "decision_id" in r}
    assert reminder["decision_id"] not in sent  # the send refused what the step decided
    # and triggers says so: suppressed by the rule, never "sent"
    assert (said[reminder["decision_id"]]["type"], said[reminder["decision_id"]]["rule"]) == (
        "suppressed", "total_cap_day")  # fmt: skip
    assert {d for d, r in said.items() if r["type"] == "sent"} == sent
    assert refused._value.get() == before + 1
    with open_store("sqlite", sqlite_path=db) as store:
        logged = store.contacts_of(profile)
    same_day = [c for c in logged if abs(c.sent_at - send_at) < timedelta(days=1)]
    assert sorted(c.decision_id for c in same_day) == [c.decision_id for c in api]
