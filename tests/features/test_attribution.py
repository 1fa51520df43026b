"""Outcome join window semantics: late outcomes inside the window count, outside are dropped."""

from datetime import UTC, datetime, timedelta

import pytest

from features.attribution import (
    AttributionWindows,
    Outcome,
    OutcomeJoin,
    decode_example,
    encode_example,
    join_in_time_order,
    outcomes_of,
)
from features.decisions import Choice, Decision
from features.events import Engagement, Identifiers, Item, PageView, Purchase, Refund

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
HOUR = 3600
WINDOWS = AttributionWindows(click=24 * HOUR, conversion=7 * 24 * HOUR, lateness=2 * HOUR)


def decision(n=1, at=T0, offer="of-a", **ids):
    return Decision(
        decision_id=f"d-{n}", decided_at=at, surface="channel", policy="logging-v1",
        ids=Identifiers(**(ids or {"customer_id": "c-1"})),
        chosen=[Choice(offer_id=offer, channel="email", propensity=0.25)],
    )


def ts(hours):
    return int((T0 + timedelta(hours=hours)).timestamp())


def outcome(kind, hours, n=1):
    return Outcome(ts(hours), kind, f"e-{kind}-{hours}", decision_id=f"d-{n}")


def test_late_outcome_inside_the_window_counts():
    join = OutcomeJoin(WINDOWS, sources=("decisions", "engagement"))
    assert join.on_decision(decision()) == []
    join.advance("decisions", ts(0))
    # The engagement topic runs ahead to hour 100, then a conversion from hour 30 arrives
    # late: still inside the 7-day window and before the watermark closed the decision.
    join.advance("engagement", ts(100))
    join.on_outcome(outcome("converted", 30))
    join.advance("decisions", ts(200))
    [example] = join.advance("engagement", ts(200))
    assert example.labels.converted and example.complete
    assert join.stats.outside_window == 0


def test_an_engagement_with_another_offer_of_the_slate_does_not_label_the_first():
    join = OutcomeJoin(WINDOWS, sources=("all",))
    slate = Decision(
        decision_id="d-1", decided_at=T0, surface="offers", policy="serve-egreedy-0.05",
        ids=Identifiers(customer_id="c-1"),
        chosen=[Choice(offer_id="of-a", channel="web", propensity=0.9),
                Choice(offer_id="of-b", channel="web", propensity=0.5, position=1)],
    )  # fmt: skip
    join.on_decision(slate)
    join.on_outcome(Outcome(ts(1), "clicked", "e-1", decision_id="d-1", offer_id="of-b"))
    join.on_outcome(Outcome(ts(2), "converted", "e-2", decision_id="d-1", offer_id="of-b"))
    join.on_outcome(Outcome(ts(3), "opened", "e-3", decision_id="d-1"))  # no offer named
    [example] = join.advance("all", ts(7 * 24 + 3))
    assert not example.labels.clicked and not example.labels.converted
    assert example.labels.opened
    assert join.stats.other_position == 2


def test_outcome_outside_its_window_is_dropped():
    join = OutcomeJoin(WINDOWS, sources=("all",))
    join.on_decision(decision())
    join.on_outcome(outcome("clicked", 25))  # click window is 24 h
    join.on_outcome(outcome("converted", 7 * 24 + 1))  # conversion window is 7 days
    join.on_outcome(outcome("opened", 23))
    [example] = join.advance("all", ts(7 * 24 + 3))
    assert example.labels.opened
    assert not example.labels.clicked and not example.labels.converted
    assert join.stats.outside_window == 2


def test_outcome_after_the_watermark_closed_the_decision_is_dropped_as_too_late():
    join = OutcomeJoin(WINDOWS, sources=("all",))
    join.on_decision(decision())
    [closed] = join.advance("all", ts(7 * 24 + 2))
    assert not closed.labels.converted
    join.on_outcome(outcome("converted", 10))  # inside the window, but hours too late
    assert join.stats.too_late == 1
    assert join.flush() == []


def test_outcome_before_its_decision_arrives_waits_for_it():
    join = OutcomeJoin(WINDOWS, sources=("decisions", "engagement"))
    join.advance("engagement", ts(5))
    join.on_outcome(outcome("clicked", 5))
    join.advance("decisions", ts(-1))
    join.on_decision(decision())
    [example] = join.flush()
    assert example.labels.clicked and not example.complete


def test_outcome_whose_decision_never_comes_is_dropped_once_the_watermark_passes():
    join = OutcomeJoin(WINDOWS, sources=("all",))
    join.on_outcome(outcome("clicked", 1, n=9))
    join.advance("all", ts(4))
    assert join.stats.orphaned == 1


def test_watermark_waits_for_every_source():
    join = OutcomeJoin(WINDOWS, sources=("decisions", "engagement"))
    join.on_decision(decision())
    assert join.advance("decisions", ts(1000)) == []  # engagement has not reported yet
    assert len(join.advance("engagement", ts(1000))) == 1


def test_purchase_redemption_is_attributed_by_identifier_and_offer():
    join = OutcomeJoin(WINDOWS, sources=("all",))
    join.on_decision(decision(1, offer="of-a", customer_id="c-1"))
    join.on_decision(decision(2, offer="of-b", customer_id="c-1"))
    join.on_decision(decision(3, offer="of-a", customer_id="c-2"))
    purchase = Purchase(
        event_id="p-1", event_time=T0 + timedelta(hours=50), source="web",
        ids=Identifiers(customer_id="c-1", anonymous_id="a-1"), order_id="o-1",
        channel="web", payment_channel="web", items=[Item("p", "dairy", 2.0)], total=2.0,
        offers_redeemed=["of-a"],
    )
    for o in outcomes_of(purchase):
        join.on_outcome(o)
    labels = {x.decision.decision_id: x.labels.redeemed for x in join.flush()}
    assert labels == {"d-1": True, "d-2": False, "d-3": False}


def _purchase(order, hours, offers=("of-a",), customer="c-1"):
    return Purchase(
        event_id=f"p-{order}", event_time=T0 + timedelta(hours=hours), source="web",
        ids=Identifiers(customer_id=customer), order_id=order, channel="web",
        payment_channel="web", items=[Item("p", "dairy", 2.0)], total=2.0,
        offers_redeemed=list(offers),
    )  # fmt: skip


def _refund(order, hours, offers=("of-a",), customer="c-1"):
    return Refund(
        event_id=f"r-{order}", event_time=T0 + timedelta(hours=hours), source="web",
        ids=Identifiers(customer_id=customer), order_id=order, channel="web", amount=2.0,
        offers_voided=list(offers),
    )  # fmt: skip


def _converted(hours, n=1):
    return Engagement(event_id=f"e-conv-{n}", event_time=T0 + timedelta(hours=hours),
                      source="messaging", ids=Identifiers(customer_id="c-1"),
                      action="converted", channel="email", decision_id=f"d-{n}",
                      offer_id="of-a")  # fmt: skip


@pytest.mark.parametrize(
    ("events", "refunded"),
    [
        # the order that redeemed the offer refunded inside the window
        ([_converted(1), _purchase("o-1", 2), _refund("o-1", 30)], True),
        # the refund before the purchase in the input (topics are read independently)
        ([_refund("o-1", 30), _converted(1), _purchase("o-1", 2)], True),
        # another order refunded; a refund that voids nothing; a refund of another offer
        ([_converted(1), _purchase("o-1", 2), _refund("o-2", 30)], False),
        ([_converted(1), _purchase("o-1", 2), _refund("o-1", 30, offers=())], False),
        ([_converted(1), _purchase("o-1", 2, ("of-a", "of-b")), _refund("o-1", 30, ("of-b",))],
         False),
        # two orders redeemed it, one refunded: the conversion is kept
        ([_converted(1), _purchase("o-1", 2), _purchase("o-2", 3), _refund("o-1", 30)], False),
        # refunded after the conversion window (7 days): too late to count
        ([_converted(1), _purchase("o-1", 2), _refund("o-1", 7 * 24 + 1)], False),
    ],
)
def test_a_refund_that_voids_the_redeemed_offer_takes_the_conversion_back(events, refunded):
    join = OutcomeJoin(WINDOWS, sources=("all",))
    join.on_decision(decision(1, offer="of-a", customer_id="c-1"))
    for event in events:
        for o in outcomes_of(event):
            join.on_outcome(o)
    [example] = join.flush()
    assert example.labels.converted and example.labels.redeemed
    assert example.labels.refunded is refunded
    assert example.labels.kept_conversion is not refunded


def test_a_refund_window_keeps_examples_open_for_later_refunds():
    windows = AttributionWindows(click=24 * HOUR, conversion=7 * 24 * HOUR, lateness=2 * HOUR,
                                 refund=7 * 24 * HOUR)  # fmt: skip
    late = _refund("o-1", 10 * 24)
    examples = join_in_time_order(
        [decision()], [_converted(1), _purchase("o-1", 2), late], windows
    )
    assert [x.labels.refunded for x in examples] == [True]
    # Without it the decision closes at 7 days (plus lateness), before the refund.
    join = OutcomeJoin(WINDOWS, sources=("all",))
    join.on_decision(decision())
    for event in (_converted(1), _purchase("o-1", 2)):
        for o in outcomes_of(event):
            join.on_outcome(o)
    [closed] = join.advance("all", ts(7 * 24 + 2))
    assert not closed.labels.refunded and closed.complete
    # With it the same input keeps the decision open until its refund window passes.
    join = OutcomeJoin(windows, sources=("all",))
    join.on_decision(decision())
    assert join.advance("all", ts(7 * 24 + 2)) == []
    assert len(join.advance("all", ts(14 * 24 + 2))) == 1


def test_only_reactions_with_a_decision_are_outcomes():
    base = {"event_time": T0, "ids": Identifiers(customer_id="c")}
    delivered = Engagement(event_id="e1", source="messaging", action="delivered",
                           channel="email", decision_id="d-1", **base)
    no_decision = Engagement(event_id="e2", source="messaging", action="opened",
                             channel="email", **base)
    page = PageView(event_id="e3", source="web", page="home", **base)
    assert outcomes_of(delivered) == outcomes_of(no_decision) == outcomes_of(page) == []


def test_batch_join_labels_and_round_trips_as_json():
    events = [
        Engagement(event_id="e1", event_time=T0 + timedelta(hours=2), source="messaging",
                   ids=Identifiers(customer_id="c-1"), action="opened", channel="email",
                   decision_id="d-1"),
    ]
    [example] = join_in_time_order([decision()], events, WINDOWS)
    assert example.labels.opened and not example.complete and example.propensity == 0.25
    assert decode_example(encode_example(example)) == example


@pytest.mark.parametrize(
    ("field", "value"),
    [("click", -1), ("conversion", 1.5), ("lateness", "6h"), ("refund", -3600)],
)
def test_bad_windows_are_named(field, value):
    with pytest.raises(ValueError, match=f"{field} must be a whole number of seconds"):
        AttributionWindows(**{field: value})


def test_a_join_needs_sources():
    with pytest.raises(ValueError, match="sources must name at least one"):
        OutcomeJoin(WINDOWS, sources=())


def _labels_by_decision(items, shard_of):
    """Run the join as the flow does: decisions and named outcomes to their decision's
    shard, purchase and refund outcomes to every shard."""
    shards = {shard_of(x.decision_id): OutcomeJoin(WINDOWS, sources=("all",))
              for x in items if isinstance(x, Decision)}  # fmt: skip
    for item in items:
        if isinstance(item, Decision):
            shards[shard_of(item.decision_id)].on_decision(item)
            continue
        for o in outcomes_of(item):
            targets = [shards[shard_of(o.decision_id)]] if o.decision_id else shards.values()
            for join in targets:
                join.on_outcome(o)
    return {x.decision.decision_id: x.labels for j in shards.values() for x in j.flush()}


def test_redemptions_and_refunds_label_the_same_in_any_arrival_order_and_sharding():
    import itertools

    second = decision(2, at=T0 + timedelta(hours=1))
    items = [decision(1), second, _converted(2, n=2), _purchase("o-1", 2), _refund("o-1", 30)]
    time_order = _labels_by_decision(items, lambda _d: 0)
    assert time_order["d-2"].refunded and time_order["d-1"].refunded  # multi-touch
    for order in itertools.permutations(items):
        for shard_of in (lambda _d: 0, lambda d: d):  # one shard, or one per decision
            assert _labels_by_decision(list(order), shard_of) == time_order


def test_a_refund_with_other_identifiers_than_its_purchase_still_voids_it():
    web = decision(1, anonymous_id="a-1")
    events = [_converted(1), _purchase("o-1", 2), _refund("o-1", 30, customer="c-9")]
    purchase = events[1]
    events[1] = Purchase(**{**{f: getattr(purchase, f) for f in purchase.__struct_fields__},
                            "ids": Identifiers(anonymous_id="a-1", customer_id="c-1")})
    [labels] = _labels_by_decision([web, *events], lambda _d: 0).values()
    assert labels.redeemed and labels.refunded


def test_a_join_snapshot_from_before_refunds_resumes():
    import copyreg
    import pickle

    join = OutcomeJoin(WINDOWS, sources=("all",))
    join.on_decision(decision(1))
    join.on_outcome(Outcome(ts(1), "redeemed", "p-0", offer_id="of-a", identifiers=("x:1",)))
    # What that version pickled: windows and outcomes without their last fields, a join
    # without the order index.
    state = {k: v for k, v in join.__dict__.items() if k not in ("_by_order", "_voids")}
    state["windows"] = copyreg.__newobj__(AttributionWindows)  # type: ignore[attr-defined]
    state["windows"].__setstate__([24 * HOUR, 7 * 24 * HOUR, 2 * HOUR])
    old = pickle.loads(pickle.dumps(join))
    old.__setstate__(state)
    outcome = Outcome.__new__(Outcome)
    outcome.__setstate__([ts(2), "redeemed", "p-1", None, "of-a", ("customer_id:c-1",)])
    assert old.windows.refund == 0 and outcome.order_id is None
    old.on_outcome(outcome)
    old.on_outcome(Outcome(ts(3), "voided", "r-1", offer_id="of-a", order_id="o-1"))
    [example] = old.flush()
    assert example.labels.redeemed and not example.labels.refunded
