import statistics
from collections import defaultdict

from features.events import (
    AddToCart,
    Consent,
    ErasureRequest,
    IdentityLink,
    PointsExpiry,
    ProductView,
    Purchase,
)
from tests.simulator.helpers import owner_of


def by_persona(values: dict[str, list[float]], truth: dict[str, dict]) -> tuple[dict, dict]:
    """Split per-customer values into (persona -> values) for one persona vs the rest."""
    grouped: dict[str, list[float]] = defaultdict(list)
    for customer_id, items in values.items():
        grouped[truth[customer_id]["dominant_persona"]].extend(items)
    return grouped


def test_procrastinators_take_longer_from_cart_to_purchase(events, truth, owners):
    first_add = {}
    for e in events:
        if isinstance(e, AddToCart):
            first_add.setdefault(e.cart_id, e.event_time)
    delays: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if isinstance(e, Purchase) and e.cart_id in first_add:
            hours = (e.event_time - first_add[e.cart_id]).total_seconds() / 3600
            delays[owner_of(e, owners)].append(hours)
    grouped = by_persona(delays, truth)
    late = statistics.median(grouped.pop("procrastinator"))
    others = statistics.median([d for ds in grouped.values() for d in ds])
    assert late > 5 * others, (late, others)


def test_discount_hunters_redeem_more_offers_per_purchase(events, truth, owners):
    redeemed: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if isinstance(e, Purchase):
            redeemed[owner_of(e, owners)].append(len(e.offers_redeemed))
    grouped = by_persona(redeemed, truth)
    hunters = statistics.mean(grouped.pop("discount_hunter"))
    others = statistics.mean([n for ns in grouped.values() for n in ns])
    assert hunters > 2 * others, (hunters, others)


def test_touchers_look_in_stores_and_buy_online(events, truth, owners):
    store_views: dict[str, list[float]] = defaultdict(list)
    online: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if isinstance(e, ProductView) and e.source == "store":
            assert e.store_id is not None
            store_views[owner_of(e, owners)].append(1)
        elif isinstance(e, Purchase):
            online[owner_of(e, owners)].append(e.channel != "store")
    views = by_persona(store_views, truth)
    touchers = sum(1 for r in truth.values() if r["dominant_persona"] == "toucher")
    rest = len(truth) - touchers
    toucher_rate = len(views.pop("toucher")) / touchers
    other_rate = sum(len(v) for v in views.values()) / rest
    assert toucher_rate > 3 * other_rate
    shares = by_persona(online, truth)
    toucher_share = statistics.mean(shares.pop("toucher"))
    other_share = statistics.mean([x for xs in shares.values() for x in xs])
    assert toucher_share > other_share + 0.1, (toucher_share, other_share)


def test_identity_links_agree_with_ground_truth(events, truth, owners):
    shared = {d for row in truth.values() for d in row["shared_devices"]}
    assert all(len(owners[d]) == 2 for d in shared)
    assert all(len(c) == 1 for i, c in owners.items() if i not in shared)
    links = [e for e in events if isinstance(e, IdentityLink)]
    assert {e.reason for e in links} == {
        "signup",
        "login",
        "app_install",
        "card_scan",
        "contact_given",
    }
    for link in links:
        customer_id = link.ids.customer_id
        assert customer_id is not None
        for identifier in link.ids.present().values():
            assert customer_id in owners[identifier], (link.reason, identifier)


def test_every_identifier_in_any_event_belongs_to_its_customer(events, owners):
    for e in events:
        present = e.ids.present()
        customers = set.intersection(*(owners[i] for i in present.values()))
        assert customers, e


def test_anonymous_only_customers_never_log_in(events, truth, owners):
    anonymous = {c for c, row in truth.items() if row["anonymous_only"]}
    assert anonymous
    for e in events:
        assert e.ids.customer_id not in anonymous
    seen = {owner_of(e, owners) for e in events}
    assert anonymous & seen  # they still browse


def test_shared_devices_are_used_by_both_customers(events, truth):
    shared = {d for row in truth.values() for d in row["shared_devices"]}
    users: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.ids.device_id in shared and e.ids.customer_id:
            users[e.ids.device_id].add(e.ids.customer_id)
    assert shared and any(len(u) == 2 for u in users.values())


def test_consent_is_recorded_at_signup_and_opt_outs_happen(events, truth):
    consents = [e for e in events if isinstance(e, Consent)]
    first: dict[tuple[str, str], bool] = {}
    for e in consents:
        first.setdefault((e.ids.customer_id, e.channel), e.granted)
    for (customer_id, channel), granted in first.items():
        assert granted == truth[customer_id]["consent"][channel]
    assert any(not e.granted for e in consents)


def test_points_balance_follows_earnings_and_expiry_notices_come_30_days_early(events):
    purchases = [e for e in events if isinstance(e, Purchase) and e.points_balance is not None]
    assert purchases
    assert all(p.points_earned >= int(p.total) for p in purchases)
    notices = [e for e in events if isinstance(e, PointsExpiry)]
    assert notices
    for notice in notices:
        assert notice.source == "loyalty"
        days = (notice.expires_at - notice.event_time).total_seconds() / 86400
        assert abs(days - 30) < 1e-6


def test_store_purchases_carry_store_and_card(events):
    store = [e for e in events if isinstance(e, Purchase) and e.channel == "store"]
    assert store
    assert all(e.store_id and e.ids.card_id for e in store)


def test_erasure_request_is_the_customers_last_event(events, truth, owners):
    erasures = [e for e in events if isinstance(e, ErasureRequest)]
    last: dict[str, object] = {}
    for e in events:
        last[owner_of(e, owners)] = e
    for erasure in erasures:
        assert truth[erasure.ids.customer_id]["erasure_day"] is not None
        assert last[erasure.ids.customer_id] is erasure


def test_newcomers_sign_up_during_the_run_after_browsing_anonymously(simulated, events, truth):
    start = simulated.config.start
    signups = {
        e.ids.customer_id: e for e in events if isinstance(e, IdentityLink) and e.reason == "signup"
    }
    late_joiners = [c for c, row in truth.items() if row["signup_day"] not in (None, 0)]
    assert late_joiners
    for customer_id in late_joiners:
        if customer_id in signups:
            day = (signups[customer_id].event_time - start).days
            assert day == truth[customer_id]["signup_day"]
    before_login = [
        e for e in events if e.ids.device_id and not e.ids.customer_id and e.source == "app"
    ]
    assert before_login  # app use before signup: the device id is all there is
