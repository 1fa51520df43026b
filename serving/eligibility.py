"""Offer eligibility as pure rules: may this offer be shown here, now, to this customer.

Each rule returns ``None`` when the offer passes and its name when it does not:

================  ===========================================================================
rule              excludes the offer when
================  ===========================================================================
``not_valid``     ``now`` is outside the offer's validity window
``sales_channel`` the offer is limited to sales channels and the context's is not one of them
``store_unknown`` the offer has store limits and no store is known (the context's store in a
                  store; the customer's last store on web and app)
``store_format``  that store's format is not one of the offer's ``store_formats``
``coffee_corner`` the offer requires a coffee corner and that store has none
``tier``          the offer is limited to loyalty tiers and the customer's is unknown or other
``budget``        spend so far plus one more redemption would exceed the offer's budget
``min_basket``    the context states a basket value below the offer's minimum basket
================  ===========================================================================

>>> from features.catalog import load_catalog
>>> catalog = load_catalog()
>>> app_only = catalog.offers["of-pts-app-install"]
>>> now = datetime(2026, 3, 2, tzinfo=UTC)
>>> offer_rule(app_only, OfferContext("web", now)), offer_rule(app_only, OfferContext("app", now))
('sales_channel', None)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from features.catalog import Offer, Store

__all__ = ["UTC", "OfferContext", "offer_rule", "over_budget"]


@dataclass(frozen=True, slots=True)
class OfferContext:
    """What eligibility looks at: the sales channel, the time, the stores, tier and basket.

    ``store`` is the store the request comes from (``channel == "store"``); ``home_store``
    the customer's last store, used for store-limited offers shown on web and app.
    """

    channel: str
    now: datetime
    store: Store | None = None
    home_store: Store | None = None
    tier: str | None = None
    basket_value: float | None = None


def over_budget(offer: Offer, spent: Mapping[str, float]) -> bool:
    """Return whether one more redemption would take the offer's spend past its budget."""
    return offer.budget is not None and spent.get(offer.id, 0.0) + offer.cost > offer.budget


def message_offer_rule(offer: Offer, tier: str | None, spent: Mapping[str, float]) -> str | None:
    """Return why a marketing message may not promote ``offer``, or ``None``.

    Tier and budget hold wherever the offer is redeemed; where (sales channel, store
    format, coffee corner, basket) is for the page or the till to check, and validity is
    checked at each channel's send time (:func:`features.channel.decide_channel`). Rules
    are named ``offer_<rule>`` (``offer_tier``, ``offer_budget``; ``offer_not_valid``).
    """
    if offer.tiers and tier not in offer.tiers:
        return "offer_tier"
    if over_budget(offer, spent):
        return "offer_budget"
    return None


def offer_rule(
    offer: Offer, ctx: OfferContext, spent: Mapping[str, float] | None = None
) -> str | None:
    """Return the first eligibility rule that excludes ``offer``, or ``None``."""
    if not offer.valid_at(ctx.now):
        return "not_valid"
    if offer.sales_channels and ctx.channel not in offer.sales_channels:
        return "sales_channel"
    if offer.store_formats or offer.requires_coffee_corner:
        store = ctx.store if ctx.channel == "store" else ctx.home_store
        if store is None:
            return "store_unknown"
        if offer.store_formats and store.format not in offer.store_formats:
            return "store_format"
        if offer.requires_coffee_corner and not store.coffee_corner:
            return "coffee_corner"
    if offer.tiers and ctx.tier not in offer.tiers:
        return "tier"
    if over_budget(offer, spent or {}):
        return "budget"
    if ctx.basket_value is not None and ctx.basket_value < offer.min_basket:
        return "min_basket"
    return None
