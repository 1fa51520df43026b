"""The outcome-join dataflow: window semantics in event time, and equal to the batch join."""

from datetime import UTC, datetime, timedelta

import orjson

from features.attribution import AttributionWindows, decode_example, join_in_time_order
from features.decisions import Choice, Decision, encode_decision
from features.eventlog import EventLogWriter, load_events
from features.events import Engagement, Identifiers, Item, Purchase, encode_event
from features.topics import DECISIONS, ENGAGEMENT, PURCHASES
from flows.outcome_join import JOIN_TOPICS, OutcomeJoinConfig, run, shard_of
from models.dataset import load_decisions
from tests.conftest import TEST_HASH_KEY

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
HOUR = timedelta(hours=1)
WINDOWS = AttributionWindows(click=24 * 3600, conversion=3 * 24 * 3600, lateness=2 * 3600)


def decision(n, at):
    return Decision(
        decision_id=f"d-{n}", decided_at=at, surface="channel", policy="logging-v1",
        ids=Identifiers(customer_id=f"c-{n}"),
        chosen=[Choice(offer_id="of-disc-dairy", channel="email", propensity=0.2)],
    )


def engagement(n, action, at, decision_id):
    return Engagement(
        event_id=f"e-{n}", event_time=at, source="messaging",
        ids=Identifiers(customer_id="c-x"), action=action, channel="email",
        decision_id=decision_id,
    )


def purchase(hours):
    return Purchase(
        event_id=f"p-{hours}", event_time=T0 + hours * HOUR, source="web",
        ids=Identifiers(customer_id="c-x"), order_id=f"o-{hours}", channel="web",
        payment_channel="web", items=[Item("p-1", "dairy", 2.0)], total=2.0,
    )


def run_flow(tmp_path, events_dir, windows=WINDOWS, shards=3):
    out = tmp_path / "examples.jsonl"
    config = OutcomeJoinConfig(hash_key=TEST_HASH_KEY, windows=windows,
                               event_log_dir=events_dir, batch_size=2, shards=shards)
    run(config, out)
    return {x.decision.decision_id: x for x in map(decode_example, out.read_bytes().splitlines())}


def test_late_outcomes_inside_the_window_count_and_outside_are_dropped(tmp_path):
    log = tmp_path / "log"
    with EventLogWriter(log) as writer:
        for n in range(1, 4):
            writer.append(DECISIONS, encode_decision(decision(n, T0 + n * HOUR)))
        writer.append(DECISIONS, encode_decision(decision(9, T0 + 200 * HOUR)))
        lines = [
            engagement(1, "clicked", T0 + 5 * HOUR, "d-2"),
            engagement(2, "opened", T0 + 40 * HOUR, "d-1"),  # after the 24 h click window
            engagement(3, "converted", T0 + 80 * HOUR, "d-3"),
            # Arrives after the event at hour 80, but happened at hour 70: inside d-1's
            # 3-day conversion window and inside the 2-hour lateness: counts.
            engagement(4, "converted", T0 + 70 * HOUR, "d-1"),
            engagement(5, "converted", T0 + 76 * HOUR, "d-2"),  # after d-2's window
            engagement(6, "opened", T0 + 201 * HOUR, "d-9"),
            engagement(7, "converted", T0 + 10 * HOUR, "d-3"),  # far too late: d-3 closed
        ]
        for event in lines:
            writer.append(ENGAGEMENT, encode_event(event))
        writer.append(PURCHASES, b"{not json")  # skipped, never stops the flow
        # Purchases without offers answer nothing, but move that topic's event time on.
        for hours in (1, 300):
            writer.append(PURCHASES, encode_event(purchase(hours)))
    got = run_flow(tmp_path, log)
    assert set(got) == {"d-1", "d-2", "d-3", "d-9"}
    d1, d2, d3 = got["d-1"].labels, got["d-2"].labels, got["d-3"].labels
    assert d1.converted and not d1.opened
    assert d2.clicked and not d2.converted
    # Decided at hour 3 with a 72 h window: the hour-80 conversion is outside it, and the
    # hour-10 one arrived after the watermark had closed d-3 (too late): neither counts.
    assert not d3.converted
    assert got["d-1"].complete and got["d-2"].complete and got["d-3"].complete
    assert got["d-9"].labels.opened and not got["d-9"].complete  # the input ended first


def test_flow_equals_the_batch_join_on_a_simulated_world(small_world, tmp_path):
    got = run_flow(tmp_path, small_world, windows=AttributionWindows(), shards=4)
    events = load_events(small_world, key=TEST_HASH_KEY)
    expected = join_in_time_order(load_decisions(small_world), events, AttributionWindows())
    assert len(got) == len(expected) > 300
    labels = {x.decision.decision_id: x.labels for x in expected}
    assert {k: v.labels for k, v in got.items()} == labels
    assert sum(x.labels.converted for x in expected) > 5
    assert all(orjson.loads(orjson.dumps(x.propensity)) > 0 for x in got.values())


def test_shards_are_stable():
    # A pinned value: the shard must not depend on the process (no salted hash()).
    assert shard_of("de-1", 8) == "6"
    assert {shard_of(f"de-{i}", 4) for i in range(50)} == {"0", "1", "2", "3"}


def test_the_cli_runs_the_join_with_the_settings(small_world, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from omnioffer.cli import app

    monkeypatch.setenv("OMNIOFFER_CONTACT_HASH_KEY", TEST_HASH_KEY.decode())
    monkeypatch.setenv("OMNIOFFER_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "cli" / "examples.jsonl"
    result = CliRunner().invoke(
        app, ["flow", "outcomes", "--source", "files", "--events", str(small_world),
              "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    examples = map(decode_example, out.read_bytes().splitlines())
    got = {x.decision.decision_id: x.labels for x in examples}
    events = load_events(small_world, key=TEST_HASH_KEY)
    expected = join_in_time_order(load_decisions(small_world), events, AttributionWindows())
    assert got == {x.decision.decision_id: x.labels for x in expected}
    assert f"{len(got):,} labelled examples" in result.output


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def test_a_tailing_join_stops_waiting_for_a_topic_that_stays_quiet():
    from flows.outcome_join import JoinLogic

    windows = AttributionWindows(click=3600, conversion=3600, lateness=0)
    wall = Clock(datetime(2026, 12, 3, 12, tzinfo=UTC))
    config = OutcomeJoinConfig(hash_key=TEST_HASH_KEY, windows=windows, tail=True, idle_s=60)
    logic = JoinLogic(config, None, clock=wall)
    first, later = decision(1, T0), decision(2, T0 + 5 * HOUR)
    progress = ("progress", (DECISIONS, int(later.decided_at.timestamp())))
    out, _ = logic.on_batch([("decision", first), ("decision", later), progress])
    assert list(out) == []  # engagement and purchases have delivered nothing yet
    assert logic.notify_at() == wall.now + timedelta(seconds=60)
    wall.now += timedelta(seconds=30)
    assert list(logic.on_notify()[0]) == []  # not quiet long enough
    logic.on_batch([progress])  # decisions keep coming
    wall.now += timedelta(seconds=31)
    emitted = [x.decision.decision_id for x in logic.on_notify()[0]]
    assert emitted == ["d-1"]  # final: its windows closed in the decisions' event time
    assert logic.join.idle == {ENGAGEMENT, PURCHASES}
    assert logic.notify_at() == wall.now + timedelta(seconds=29)  # when decisions go quiet
    # A quiet topic that delivers again holds the watermark again, from where it is.
    logic.on_batch([("progress", (ENGAGEMENT, int((T0 + HOUR).timestamp())))])
    assert logic.join.idle == {PURCHASES}
    watermark = logic.join.watermark
    later_still = decision(3, T0 + 9 * HOUR)
    logic.on_batch(
        [
            ("decision", later_still),
            ("progress", (DECISIONS, int(later_still.decided_at.timestamp()))),
        ]
    )
    assert logic.join.watermark == watermark  # engagement, an hour in, holds it
    assert "d-2" in logic.join._open
    # Everything quiet: all that was sent is in, and the newest time known rules.
    wall.now += timedelta(seconds=120)
    emitted = [x.decision.decision_id for x in logic.on_notify()[0]]
    assert emitted == ["d-2"] and logic.notify_at() is None


def test_a_bounded_join_never_looks_at_the_clock():
    from flows.outcome_join import JoinLogic

    config = OutcomeJoinConfig(hash_key=TEST_HASH_KEY, windows=WINDOWS, idle_s=60)
    logic = JoinLogic(config, None, clock=Clock(datetime(2026, 12, 3, tzinfo=UTC)))
    assert logic.notify_at() is None
    live = JoinLogic(OutcomeJoinConfig(hash_key=TEST_HASH_KEY, tail=True, idle_s=0), None)
    assert live.notify_at() is None  # idle_s 0: always wait, as before


def test_a_future_event_time_cannot_carry_a_live_join_past_the_clock():
    from flows.outcome_join import JoinLogic

    windows = AttributionWindows(click=3600, conversion=3600, lateness=0)
    wall = Clock(T0 + 10 * HOUR)
    config = OutcomeJoinConfig(hash_key=TEST_HASH_KEY, windows=windows, tail=True, idle_s=60)
    logic = JoinLogic(config, None, clock=wall)
    skewed = int((T0 + timedelta(days=365)).timestamp())  # a device a year ahead
    logic.on_batch([("decision", decision(1, T0)), ("progress", (ENGAGEMENT, skewed)),
                    ("progress", (DECISIONS, int(T0.timestamp())))])  # fmt: skip
    wall.now += timedelta(seconds=61)
    assert [x.decision.decision_id for x in logic.on_notify()[0]] == ["d-1"]
    assert logic.join.watermark <= int(wall.now.timestamp())  # not a year ahead
    fresh = decision(2, wall.now)
    assert logic.on_batch([("decision", fresh)])[0] == []  # waits for its outcomes


def test_a_resumed_join_waits_for_every_topic_again():
    import pickle

    from flows.outcome_join import JoinLogic

    config = OutcomeJoinConfig(hash_key=TEST_HASH_KEY, windows=WINDOWS, tail=True, idle_s=60)
    wall = Clock(datetime(2026, 12, 3, 12, tzinfo=UTC))
    logic = JoinLogic(config, None, clock=wall)
    wall.now += timedelta(seconds=61)
    logic.on_notify()
    assert logic.join.idle == set(JOIN_TOPICS)
    resumed = JoinLogic(config, pickle.loads(pickle.dumps(logic.snapshot())), clock=wall)
    assert resumed.join.idle == set()  # the backlog after an outage may be on any of them
