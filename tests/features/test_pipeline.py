"""Identity resolution and aggregation, in-process (the logic the flow runs)."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.events import (
    AddToCart,
    ErasureRequest,
    Identifiers,
    IdentityLink,
    IdentityUnlink,
    Item,
    PageView,
    PointsExpiry,
    ProductView,
    Purchase,
    Refund,
)
from features.pipeline import recompute
from features.profile import decode_profile, profile_features

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)


def at(minutes):
    return T0 + timedelta(minutes=minutes)


def view(n, minutes, **ids):
    return ProductView(
        event_id=f"v{n}", event_time=at(minutes), source="web", ids=Identifiers(**ids),
        product_id="p-1", category="dairy", price=2.0,
    )


def link(n, minutes, **ids):
    return IdentityLink(
        event_id=f"l{n}", event_time=at(minutes), source="web", ids=Identifiers(**ids),
        reason="login",
    )


def unlink(n, minutes, **ids):
    return IdentityUnlink(
        event_id=f"u{n}", event_time=at(minutes), source="contact_center",
        ids=Identifiers(**ids), reason="wrong_link",
    )


def profiles(events):
    return {k: decode_profile(v) for k, v in recompute(events).profiles.items()}


def total(record, counter):
    return sum(day.get(counter, 0) for day in record["days"].values())


def test_anonymous_history_is_merged_into_the_customer_on_login():
    events = [
        view(1, 0, anonymous_id="a-1"),
        view(2, 5, anonymous_id="a-1"),
        link(1, 10, anonymous_id="a-1", customer_id="cu-1"),
        view(3, 15, anonymous_id="a-1"),
        view(4, 20, customer_id="cu-1"),
    ]
    result = recompute(events)
    assert set(result.profiles) == {"customer_id:cu-1"}
    record = decode_profile(result.profiles["customer_id:cu-1"])
    assert total(record, "vw:web") == 4
    assert record["fragments"] == ["anonymous_id:a-1", "customer_id:cu-1"]
    assert result.identity["anonymous_id:a-1"] == "customer_id:cu-1"
    [move] = result.moves
    assert (move.from_profile, move.into_profile, move.rule) == (
        "anonymous_id:a-1", "customer_id:cu-1", "linked",
    )


def test_a_link_that_arrives_after_the_events_it_covers_gives_the_same_profile():
    events = [view(1, 0, anonymous_id="a-1"), link(1, 10, anonymous_id="a-1", customer_id="cu-1")]
    assert profiles(events) == profiles(list(reversed(events)))


def test_a_shared_device_never_merges_two_customers():
    events = [
        view(1, 0, customer_id="cu-1"),
        view(2, 1, customer_id="cu-2"),
        view(3, 2, device_id="d-tablet"),
        link(1, 3, device_id="d-tablet", customer_id="cu-1"),
        link(2, 4, device_id="d-tablet", customer_id="cu-2"),
        view(4, 5, device_id="d-tablet"),
    ]
    result = profiles(events)
    assert total(result["customer_id:cu-1"], "vw:web") == 1
    assert total(result["customer_id:cu-2"], "vw:web") == 1
    assert total(result["device_id:d-tablet"], "vw:web") == 2
    rules = [m.rule for m in recompute(events).moves]
    assert rules == ["linked", "shared_identifier"]


def test_two_known_profiles_linked_by_a_card_merge_once():
    purchase = Purchase(
        event_id="pu1", event_time=at(0), source="store", ids=Identifiers(card_id="k-1"),
        order_id="o1", channel="store", payment_channel="store", store_id="st-001",
        items=[Item(product_id="p-1", category="dairy", price=3.0, quantity=2)],
        total=6.0,
    )
    events = [
        purchase,
        view(1, 1, customer_id="cu-1"),
        link(1, 2, card_id="k-1", customer_id="cu-1"),
        link(1, 2, card_id="k-1", customer_id="cu-1"),  # the same link delivered twice
    ]
    result = profiles(events)
    assert list(result) == ["customer_id:cu-1"]
    assert total(result["customer_id:cu-1"], "rev:store") == 600
    assert total(result["customer_id:cu-1"], "links") == 1


def test_duplicates_count_once_and_order_does_not_matter():
    rng = random.Random(5)
    events = [view(n, n, anonymous_id=f"a-{n % 4}") for n in range(40)]
    events += [link(n, 40 + n, anonymous_id=f"a-{n}", customer_id=f"cu-{n % 2}") for n in range(4)]
    events += [AddToCart(
        event_id=f"c{n}", event_time=at(n * 7), source="app", ids=Identifiers(customer_id="cu-0"),
        cart_id="cart-1", product_id="p-9", category="snacks", price=1.5,
    ) for n in range(5)]
    expected = profiles(events)
    for _ in range(5):
        shuffled = events + rng.sample(events, 10)
        rng.shuffle(shuffled)
        assert profiles(shuffled) == expected


def test_events_older_than_the_horizon_fall_out_of_the_windows():
    events = [view(1, 0, customer_id="cu-1"), view(2, 60 * 24 * 100, customer_id="cu-1")]
    record = profiles(events)["customer_id:cu-1"]
    assert total(record, "vw:web") == 1
    assert profiles(list(reversed(events))) == {"customer_id:cu-1": record}


def test_erasure_forgets_the_person_and_their_linked_identifiers():
    events = [
        view(1, 0, anonymous_id="a-1"),
        link(1, 1, anonymous_id="a-1", customer_id="cu-1"),
        view(2, 2, customer_id="cu-1"),
        view(3, 3, customer_id="cu-2"),
        ErasureRequest(event_id="er1", event_time=at(4), source="web",
                       ids=Identifiers(customer_id="cu-1")),
        view(4, 3, anonymous_id="a-1"),  # arrives late, from before the request
    ]
    result = recompute(events)
    assert set(result.profiles) == {"customer_id:cu-2"}
    assert "anonymous_id:a-1" not in result.identity
    assert "customer_id:cu-1" not in result.identity


def test_features_as_of_a_time_use_only_their_windows():
    cart = AddToCart(
        event_id="c1", event_time=at(0), source="app", ids=Identifiers(customer_id="cu-1"),
        cart_id="cart-1", product_id="p-9", category="snacks", price=2.5, quantity=2,
    )
    page = PageView(event_id="pv1", event_time=at(1), source="app",
                    ids=Identifiers(customer_id="cu-1"), page="home")
    record = profiles([cart, page])["customer_id:cu-1"]
    soon = profile_features(record, int(at(30).timestamp()))
    assert soon["open_cart_value"] == 5.0 and soon["cart_abandoned"] is False
    assert soon["events_24h"] == 2
    later = profile_features(record, int(at(60 * 5).timestamp()))
    assert later["cart_abandoned"] is True
    much_later = profile_features(record, int(at(60 * 24 * 120).timestamp()))
    assert much_later["events_90d"] == 0 and much_later["events_24h"] == 0
    for name in ("discount_hunter", "newcomer", "toucher", "social", "procrastinator"):
        assert 0.0 <= soon[f"persona_{name}"] <= 1.0


@pytest.mark.parametrize("seed", [1, 2])
def test_simulated_world_is_order_independent(seed, small_world_events):
    # Erasures are the one order-dependent input: an erasure forgets what was seen before it.
    events = [e for e in small_world_events if not isinstance(e, ErasureRequest)]
    expected = profiles(events)
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    assert profiles(shuffled) == expected


def test_a_redelivered_cart_event_older_than_the_horizon_opens_no_cart():
    def add(n, minutes):
        return AddToCart(
            event_id=f"c{n}", event_time=at(minutes), source="app",
            ids=Identifiers(customer_id="cu-1"), cart_id=f"cart-{n}", product_id="p-9",
            category="snacks", price=5.0,
        )

    old, recent = add(1, 0), add(2, 60 * 24 * 100)
    record = profiles([old, recent, old])["customer_id:cu-1"]
    assert list(record["carts"]) == ["cart-2"]


def test_the_loyalty_tier_on_a_purchase_reaches_the_features():
    purchase = Purchase(
        event_id="pu9", event_time=at(0), source="app", ids=Identifiers(customer_id="cu-1"),
        order_id="o9", channel="app", payment_channel="app", total=3.0, tier="gold",
        items=[Item(product_id="p-1", category="dairy", price=3.0)],
    )
    record = profiles([purchase])["customer_id:cu-1"]
    assert profile_features(record, int(at(60).timestamp()))["tier"] == "gold"


def test_a_refund_that_voids_an_offer_makes_it_unredeemed_until_redeemed_again():
    def purchase(n, minutes, offers):
        return Purchase(
            event_id=f"pu{n}", event_time=at(minutes), source="web",
            ids=Identifiers(customer_id="cu-1"), order_id=f"o{n}", channel="web",
            payment_channel="web", total=3.0, offers_redeemed=offers,
            items=[Item(product_id="p-1", category="dairy", price=3.0)],
        )  # fmt: skip

    def refund(n, minutes, offers):
        return Refund(event_id=f"rf{n}", event_time=at(minutes), source="web",
                      ids=Identifiers(customer_id="cu-1"), order_id=f"o{n}", channel="web",
                      amount=3.0, offers_voided=offers)  # fmt: skip

    def redeemed(events, minutes):
        record = profiles(events)["customer_id:cu-1"]
        return profile_features(record, int(at(minutes).timestamp()))["offers_redeemed"]

    first = [purchase(1, 0, ["of-a", "of-b"]), refund(1, 60, ["of-a"])]
    assert redeemed(first, 90) == ["of-b"]
    assert redeemed(first[::-1], 90) == ["of-b"]  # the refund processed first
    again = [*first, purchase(2, 120, ["of-a"])]
    assert redeemed(again, 150) == redeemed(again[::-1], 150) == ["of-a", "of-b"]
    # A refund without voided offers (one line returned) leaves the redemptions.
    assert redeemed([purchase(3, 0, ["of-c"]), refund(3, 60, [])], 90) == ["of-c"]


@given(
    st.dictionaries(
        st.integers(19_900, 20_100).map(str),
        st.dictionaries(
            st.sampled_from(["ev", "pur:web", "rev:app", "hr:3"]), st.integers(0, 10**6), max_size=4
        ),
        max_size=40,
    ),
    st.integers(19_950, 20_150),
)
def test_day_windows_sum_the_buckets_of_each_window(days: dict, day: int) -> None:
    from features.profile import _day_windows, _window

    d7, d30, d90 = _day_windows(days, day)
    assert d7 == _window(days, day - 6, day)
    assert d30 == _window(days, day - 29, day)
    assert d90 == _window(days, day - 89, day)


def test_an_unlink_gives_the_identifier_back_its_own_profile_with_its_history():
    events = [
        view(1, 0, anonymous_id="a-1"),
        view(2, 1, customer_id="cu-1"),
        link(1, 2, anonymous_id="a-1", customer_id="cu-1"),  # a wrong link
        view(3, 3, anonymous_id="a-1"),
        unlink(1, 4, anonymous_id="a-1", customer_id="cu-1"),
        view(4, 5, anonymous_id="a-1"),
        link(2, 6, anonymous_id="a-1", customer_id="cu-1"),  # the same link again: ignored
    ]
    result = recompute(events)
    record = {k: decode_profile(v) for k, v in result.profiles.items()}
    assert total(record["customer_id:cu-1"], "vw:web") == 1  # only the customer's own
    assert record["customer_id:cu-1"]["fragments"] == ["customer_id:cu-1"]
    assert total(record["anonymous_id:a-1"], "vw:web") == 3  # all of its history, back
    assert result.identity["anonymous_id:a-1"] == "anonymous_id:a-1"
    assert [(m.rule, m.into_profile, m.cause_event_id) for m in result.moves] == [
        ("linked", "customer_id:cu-1", "l1"), ("unlinked", "anonymous_id:a-1", "u1")]
    # The identifier's profile is as if it had never been linked: the unlink is exact.
    # (The customer keeps the link events themselves in their own history.)
    never = profiles([e for e in events if not e.event_id.startswith(("l", "u"))])
    assert record["anonymous_id:a-1"] == never["anonymous_id:a-1"]


def test_an_unlink_does_not_depend_on_arrival_order():
    events = [
        view(1, 0, device_id="d-1"),
        view(2, 1, customer_id="cu-1"),
        link(1, 2, device_id="d-1", customer_id="cu-1"),
        unlink(1, 3, device_id="d-1", customer_id="cu-1"),
        view(3, 4, device_id="d-1"),
    ]
    expected = profiles(events)
    rng = random.Random(5)
    for _ in range(10):
        shuffled = events[:]
        rng.shuffle(shuffled)
        assert profiles(shuffled) == expected
    assert set(expected) == {"customer_id:cu-1", "device_id:d-1"}


def test_unlinking_one_of_two_customers_links_a_shared_device_to_the_other():
    events = [
        view(1, 0, device_id="d-tablet"),
        view(2, 1, customer_id="cu-1"),
        link(1, 2, device_id="d-tablet", customer_id="cu-1"),
        link(2, 3, device_id="d-tablet", customer_id="cu-2"),
        unlink(1, 4, device_id="d-tablet", customer_id="cu-2"),
    ]
    result = recompute(events)
    assert result.identity["device_id:d-tablet"] == "customer_id:cu-1"
    assert [m.rule for m in result.moves] == ["linked", "shared_identifier", "linked"]
    assert total(decode_profile(result.profiles["customer_id:cu-1"]), "vw:web") == 2


def test_a_late_link_after_an_erasure_spares_an_identifier_unlinked_before():
    erasure = ErasureRequest(event_id="er1", event_time=at(4), source="web",
                             ids=Identifiers(customer_id="cu-1"))
    events = [
        view(1, 0, anonymous_id="a-1"),
        unlink(1, 2, anonymous_id="a-1", customer_id="cu-1"),
        erasure,
        link(1, 1, anonymous_id="a-1", customer_id="cu-1"),  # learnt after the erasure
    ]
    result = recompute(events)
    assert set(result.profiles) == {"anonymous_id:a-1"}


def test_a_snapshot_from_before_unlinks_resumes():
    from features.pipeline import FragmentLogic, LinkTo, PersonIndex

    fragment, person = FragmentLogic("anonymous_id:a-1"), PersonIndex()
    del fragment.unlinked, person.unlinked  # as restored from an older snapshot
    out: list = []
    fragment.on_input(LinkTo("cu-1", 1, "l1"), out)
    assert fragment.profile == "customer_id:cu-1"
    assert person.on_event("customer_id:cu-1", link(1, 1, anonymous_id="a-1", customer_id="cu-1"))
    assert person.linked == {"anonymous_id:a-1"}


def test_erasing_a_customer_spares_an_identifier_unlinked_from_them():
    events = [
        view(1, 0, anonymous_id="a-1"),
        link(1, 1, anonymous_id="a-1", customer_id="cu-1"),
        unlink(1, 2, anonymous_id="a-1", customer_id="cu-1"),
        view(2, 3, customer_id="cu-1"),
        ErasureRequest(event_id="er1", event_time=at(4), source="web",
                       ids=Identifiers(customer_id="cu-1")),
    ]
    result = recompute(events)
    assert set(result.profiles) == {"anonymous_id:a-1"}  # someone else's history stays
    assert "customer_id:cu-1" not in result.identity


def test_a_purchase_closes_a_cart_added_on_another_fragment_in_any_order():
    t0 = at(0)
    link_ = IdentityLink(event_id="l1", event_time=t0 - timedelta(days=1), source="web",
                         ids=Identifiers(customer_id="c1", anonymous_id="a1"), reason="login")
    add = AddToCart(event_id="atc1", event_time=t0, source="web",
                    ids=Identifiers(anonymous_id="a1"), cart_id="cart1", product_id="p",
                    category="dairy", price=12.5, quantity=2)
    buy = Purchase(event_id="pu1", event_time=t0 + timedelta(hours=1), source="web",
                   ids=Identifiers(customer_id="c1"), order_id="o1", channel="web",
                   payment_channel="web", items=[Item("p", "dairy", 12.5, 2)], total=25.0,
                   cart_id="cart1")
    # A visit 100 days on: the close reaches a fragment whose horizon has moved past it.
    later = PageView(event_id="pv1", event_time=t0 + timedelta(days=100), source="web",
                     ids=Identifiers(customer_id="c1"), page="home")  # fmt: skip
    as_of = int((t0 + timedelta(days=100, hours=1)).timestamp())
    keys = ("open_cart_value", "cart_abandoned", "carts_abandoned", "carts_closed")

    def carts(events):
        features = profile_features(profiles(events)["customer_id:c1"], as_of)
        return {k: features[k] for k in keys}

    assert carts([link_, add, buy, later]) == carts([link_, later, add, buy])
    assert carts([link_, later, add, buy])["open_cart_value"] == 0


def test_a_redelivered_expired_points_notice_changes_nothing():
    ids = Identifiers(customer_id="cu-1")
    notice = PointsExpiry(event_id="x1", event_time=at(0), source="loyalty", ids=ids,
                          points=50, expires_at=at(60 * 24 * 30), points_balance=200)
    later = PageView(event_id="pv1", event_time=at(60 * 24 * 100), source="web", ids=ids,
                     page="home")  # fmt: skip
    once = profiles([notice, later])["customer_id:cu-1"]
    assert profiles([notice, later, notice])["customer_id:cu-1"] == once


@pytest.mark.parametrize(
    "orders",
    [
        # the link and its undoing, either way round
        (("link", "c1", 0), ("unlink", "c1", 1)),
        # linked to c2 then c1, the c2 link undone; or the same in another order
        (("link", "c1", 0), ("unlink", "c2", 2), ("link", "c2", 1)),
    ],
)
def test_an_identifier_with_no_events_ends_the_same_whatever_the_link_order(orders):
    def event(kind, customer, hours):
        cls = IdentityLink if kind == "link" else IdentityUnlink
        reason = "login" if kind == "link" else "wrong_link"
        return cls(event_id=f"{kind}-{customer}", event_time=at(60 * hours), reason=reason,
                   source="web", ids=Identifiers(customer_id=customer, device_id="d2"))

    def outcome(events):
        result = recompute(events)
        fragments = {p: decode_profile(v)["fragments"] for p, v in result.profiles.items()}
        return result.identity.get("device_id:d2"), fragments

    events = [event(*spec) for spec in orders]
    first = outcome(events)
    for order in (events[::-1], events[1:] + events[:1]):
        assert outcome(order) == first


def test_an_erasure_reaches_journeys_and_store_when_the_person_returns_in_the_same_batch():
    from features.journeys import ERASED
    from features.pipeline import (
        Delta,
        EraseBefore,
        FragmentLogic,
        Observe,
        ProfileState,
        apply_profile_inputs,
        contribution,
    )

    fragment, profile = FragmentLogic("customer_id:cu-1"), ProfileState("customer_id:cu-1")
    out: list = []
    cart = AddToCart(event_id="atc", event_time=at(0), source="app", cart_id="ct-old",
                     ids=Identifiers(customer_id="cu-1"), product_id="p-1", category="dairy",
                     price=5.0)  # fmt: skip
    fragment.on_input(Observe(contribution(cart)), out)
    apply_profile_inputs(profile, [i for key, i in out if key == profile.profile_id])
    # One batch for the profile: the erasure, then the person's next visit.
    out = []
    fragment.on_input(EraseBefore(int(at(60).timestamp()), "er-1"), out)
    fragment.on_input(Observe(contribution(view(9, 61, customer_id="cu-1"))), out)
    batch = [i for key, i in out if key == profile.profile_id]
    assert [type(i).__name__ for i in batch] == ["Leave", "Delta"] and isinstance(batch[1], Delta)
    journey_inputs: list = []
    [written] = apply_profile_inputs(profile, batch, journey_inputs=journey_inputs)
    assert [fact.kind for fact, _ in journey_inputs][:1] == [ERASED]  # before the new facts
    assert written.erased and written.value is not None  # erase the old, keep the new


def test_the_store_erases_a_person_whose_next_event_came_in_the_same_batch(tmp_path):
    from features.pipeline import IdentityOut, ProfileOut
    from features.store import ContactRecord, StoreBatch, open_store
    from flows.sinks import StoreSink

    with open_store("sqlite", sqlite_path=tmp_path / "s.sqlite3") as store:
        old = ContactRecord(profile_id="customer_id:cu-1", decision_id="de-1", channel="sms",
                            sent_at=at(0), kind="marketing")  # fmt: skip
        store.write(StoreBatch(contacts=[old]))
        sink = StoreSink(lambda: store).build("sink", 0, 1)
        sink.write_batch([("customer_id:cu-1", [
            IdentityOut("customer_id:cu-1", "customer_id:cu-1"),
            ProfileOut("customer_id:cu-1", b'{"new": true}', erased=True),
        ])])  # fmt: skip
        assert store.contacts_of("customer_id:cu-1") == []
        assert store.read_profile("customer_id:cu-1") == b'{"new": true}'
        assert store.resolve(["customer_id:cu-1"]) == "customer_id:cu-1"
