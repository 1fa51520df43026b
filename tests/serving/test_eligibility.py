"""Offer eligibility: channel, store format, coffee corner, tier, budget, validity, basket."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.catalog import load_catalog
from serving.eligibility import OfferContext, offer_rule

CATALOG = load_catalog()
NOW = datetime(2026, 3, 8, 12, tzinfo=UTC)
OFFERS = sorted(CATALOG.offers.values(), key=lambda o: o.id)
STORES = sorted(CATALOG.stores.values(), key=lambda s: s.id)


def ctx(channel: str, store=None, home=None, **kw) -> OfferContext:
    return OfferContext(channel=channel, now=NOW, store=store, home_store=home, **kw)


@given(
    offer=st.sampled_from(OFFERS),
    store=st.one_of(st.none(), st.sampled_from(STORES)),
    home=st.one_of(st.none(), st.sampled_from(STORES)),
    tier=st.sampled_from([None, "basic", "silver", "gold"]),
)
@settings(max_examples=300, deadline=None)
def test_limited_offers_never_appear_outside_their_channel_or_store(offer, store, home, tier):
    for channel in ("web", "app", "store"):
        rule = offer_rule(offer, ctx(channel, store, home, tier=tier))
        if rule is not None:
            continue
        if offer.sales_channels:
            assert channel in offer.sales_channels
        where = store if channel == "store" else home
        if offer.requires_coffee_corner:
            assert where is not None and where.coffee_corner
        if offer.store_formats:
            assert where is not None and where.format in offer.store_formats
        if offer.tiers:
            assert tier in offer.tiers


def test_an_app_only_offer_is_never_shown_on_web():
    app_only = CATALOG.offers["of-pts-app-install"]
    assert app_only.sales_channels == ["app"]
    assert offer_rule(app_only, ctx("web")) == "sales_channel"
    assert offer_rule(app_only, ctx("store", STORES[0])) == "sales_channel"
    assert offer_rule(app_only, ctx("app")) is None


def test_a_coffee_corner_offer_only_in_stores_with_one():
    coffee = CATALOG.offers["of-coffee-corner"]
    with_corner = next(s for s in STORES if s.coffee_corner)
    without = next(s for s in STORES if not s.coffee_corner)
    assert offer_rule(coffee, ctx("store", with_corner)) is None
    assert offer_rule(coffee, ctx("store", without)) == "coffee_corner"
    assert offer_rule(coffee, ctx("store")) == "store_unknown"
    assert offer_rule(coffee, ctx("web", home=with_corner)) == "sales_channel"


def test_store_formats_are_checked_against_the_store():
    hyper_only = CATALOG.offers["of-hyper-household"]
    hyper = next(s for s in STORES if s.format == "hypermarket")
    convenience = next(s for s in STORES if s.format == "convenience")
    assert offer_rule(hyper_only, ctx("store", hyper)) is None
    assert offer_rule(hyper_only, ctx("store", convenience)) == "store_format"


def test_tier_validity_budget_and_min_basket():
    gold = CATALOG.offers["of-pts-gold-double"]
    assert offer_rule(gold, ctx("web")) == "tier"
    assert offer_rule(gold, ctx("web", tier="silver")) == "tier"
    assert offer_rule(gold, ctx("web", tier="gold")) is None
    plain = CATALOG.offers["of-disc-dairy"]
    late = OfferContext(channel="web", now=datetime(2030, 1, 1, tzinfo=UTC))
    assert offer_rule(plain, late) == "not_valid"
    budgeted = CATALOG.offers["of-xsell-baby"]
    assert budgeted.budget is not None
    assert offer_rule(budgeted, ctx("web"), {budgeted.id: budgeted.budget}) == "budget"
    assert offer_rule(budgeted, ctx("web"), {budgeted.id: 0.0}) is None
    web_pay = CATALOG.offers["of-pts-web-pay"]
    assert offer_rule(web_pay, ctx("web", basket_value=10.0)) == "min_basket"
    assert offer_rule(web_pay, ctx("web", basket_value=50.0)) is None
    assert offer_rule(web_pay, ctx("web")) is None  # no basket stated: checked at redemption


@pytest.mark.parametrize("channel", ["web", "app", "store"])
def test_unlimited_offers_are_eligible_everywhere(channel):
    plain = CATALOG.offers["of-disc-dairy"]
    assert offer_rule(plain, ctx(channel, STORES[0])) is None
