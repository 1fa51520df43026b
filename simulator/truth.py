r"""The ground-truth response model: how likely a customer opens, clicks and redeems.

Pure functions of a customer's hidden traits, an offer and the context. The conversion
probability (redeeming the offer within 7 days of a message) is a product of factors,

.. math::

    p = \min\bigl(p_{max},\; b \cdot f_{aff} \cdot f_{price} \cdot f_{persona}
        \cdot f_{channel} \cdot f_{hour} \cdot f_{store}\bigr)

with :math:`f_{aff} = 0.25 + 0.75 \min(n_{cat} a_{cat}, 5)` (the affinity to the offer's
category relative to uniform), :math:`f_{price} = 1 + 5 s \delta` (price sensitivity ×
discount depth), :math:`f_{persona} = \sum_p w_p m_p` (persona multipliers, see
:func:`persona_factor`), :math:`f_{channel} = 0.15 + 1.7 r_c` (responsiveness to the
channel), :math:`f_{hour} = 0.6 + 0.8 e^{-d^2 / 2 \cdot 2.5^2}` (distance of the local send
hour to the customer's peak hour) and :math:`f_{store}` = 0.25 when the offer can only be
redeemed in stores that are not the customer's home store. Without consent for the
channel, or outside the offer's tiers or validity, :math:`p = 0`.

>>> hour_match(20, 20), round(hour_match(8, 20), 4)
(1.0, 0.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from features.catalog import Catalog, Offer
from simulator.world import Customer

BASE_CONVERSION = 0.022
BASE_ONSITE_CONVERSION = 0.012
MAX_CONVERSION = 0.5
MAX_OPEN = 0.95
OPEN_BASE = {"email": 0.22, "push": 0.12, "sms": 0.35, "messenger": 0.3}
ONSITE_FACTOR = {"web": 0.8, "app": 1.0}
HOUR_WIDTH = 2.5
_STORE_ELSEWHERE = 0.25


@dataclass(frozen=True)
class OfferFacts:
    """What the truth model and the logging policy need to know about one offer.

    ``depth`` is the offer's worth as a fraction of a typical basket (a 10 % discount is
    0.1; 200 bonus points, worth 2.00, on a 30.00 basket are about 0.067).
    ``redeemable_stores`` are the stores where it can be used in person.
    """

    offer: Offer
    valid_from_ts: float
    valid_to_ts: float
    depth: float
    store_only: bool
    app_only: bool
    web_only: bool
    redeemable_stores: frozenset[str]

    def valid_at(self, ts: float) -> bool:
        """Return whether the offer is valid at epoch second ``ts``."""
        return self.valid_from_ts <= ts < self.valid_to_ts

    @property
    def offer_id(self) -> str:
        """The offer's id."""
        return self.offer.id


def offer_depth(offer: Offer) -> float:
    """Return the offer's worth as a fraction of a typical 30.00 basket.

    >>> from features.catalog import load_catalog
    >>> offer_depth(load_catalog().offers["of-disc-dairy"])
    0.1
    """
    if offer.kind == "discount":
        return offer.value / 100
    if offer.kind == "bonus_points":
        # Small values are multipliers ("double points"), large ones a number of points.
        return (offer.value - 1) * 0.04 if offer.value < 10 else offer.value / 100 / 30
    if offer.kind == "free_delivery":
        return offer.value / 40
    return offer.value / 30


def offer_facts(catalog: Catalog) -> dict[str, OfferFacts]:
    """Precompute :class:`OfferFacts` for every offer of the catalog, in id order."""
    facts: dict[str, OfferFacts] = {}
    for offer_id in sorted(catalog.offers):
        offer = catalog.offers[offer_id]
        stores = frozenset(
            s.id
            for s in catalog.stores.values()
            if (not offer.store_formats or s.format in offer.store_formats)
            and (s.coffee_corner or not offer.requires_coffee_corner)
        )
        channels = set(offer.sales_channels)
        facts[offer_id] = OfferFacts(
            offer=offer,
            valid_from_ts=offer.valid_from.timestamp(),
            valid_to_ts=offer.valid_to.timestamp(),
            depth=offer_depth(offer),
            store_only=channels == {"store"},
            app_only=channels == {"app"},
            web_only=channels == {"web"},
            redeemable_stores=stores,
        )
    return facts


def hour_match(local_hour: float, peak_hour: float) -> float:
    """Return 1 at the customer's peak hour, falling off with the circular distance."""
    distance = abs(local_hour - peak_hour) % 24
    distance = min(distance, 24 - distance)
    value = math.exp(-(distance**2) / (2 * HOUR_WIDTH**2))
    return 0.0 if value < 1e-9 else value


def persona_factor(customer: Customer, facts: OfferFacts, channel: str) -> float:
    """Return the persona-weighted appeal of an offer in a channel (about 1 on average).

    Discount hunters love deep discounts, newcomers app and bonus-point offers and push,
    touchers offers for the store (and web delivery), social shoppers messenger and push;
    procrastinators are neutral here but answer late (see :func:`response_delay_hours`).
    """
    kind = facts.offer.kind
    mix = customer.persona_mix
    hunter = 1.6 + 6 * facts.depth if kind == "discount" else 1.3 if kind == "bonus_points" else 0.7
    newcomer = 3.0 if facts.app_only else 1.6 if kind == "bonus_points" else 0.8
    if channel == "push":
        newcomer *= 1.3
    toucher = 3.0 if facts.store_only else 1.5 if facts.web_only else 0.8
    social = {"messenger": 2.5, "push": 1.8, "app": 1.2, "web": 1.0}.get(channel, 0.6)
    return (
        mix["discount_hunter"] * hunter
        + mix["newcomer"] * newcomer
        + mix["toucher"] * toucher
        + mix["social"] * social
        + mix["procrastinator"] * 1.0
    )


def offer_appeal(customer: Customer, facts: OfferFacts, channel: str) -> float:
    """Return the channel-independent part of the conversion odds, times the persona factor.

    Zero when the customer's tier may not use the offer.
    """
    offer = facts.offer
    if offer.tiers and customer.tier not in offer.tiers:
        return 0.0
    if offer.category is None:
        affinity = 1.0
    else:
        relative = customer.category_affinity[offer.category] * len(customer.category_affinity)
        affinity = 0.25 + 0.75 * min(relative, 5.0)
    price = 1.0 + 5.0 * customer.price_sensitivity * facts.depth
    store = 1.0
    if facts.store_only and customer.home_store not in facts.redeemable_stores:
        store = _STORE_ELSEWHERE
    return affinity * price * store * persona_factor(customer, facts, channel)


def conversion_probability(
    customer: Customer, facts: OfferFacts, channel: str, local_hour: float
) -> float:
    """Return the probability a message in ``channel`` makes the customer redeem the offer.

    ``channel`` is a message channel (email, push, sms, messenger); ``local_hour`` is the
    send time in the customer's time zone. Zero without consent for the channel.
    """
    if not customer.consent.get(channel, False):
        return 0.0
    channel_factor = 0.15 + 1.7 * customer.responsiveness[channel]
    hour = 0.6 + 0.8 * hour_match(local_hour, customer.peak_hour)
    p = BASE_CONVERSION * offer_appeal(customer, facts, channel) * channel_factor * hour
    return min(MAX_CONVERSION, p)


def onsite_conversion_probability(customer: Customer, facts: OfferFacts, channel: str) -> float:
    """Return the probability an offer shown on the web or in the app is redeemed there.

    The visitor is present, so the hour does not matter; offers limited to another sales
    channel cannot be redeemed on the spot.
    """
    sales = facts.offer.sales_channels
    if channel not in ONSITE_FACTOR or (sales and channel not in sales):
        return 0.0
    p = BASE_ONSITE_CONVERSION * offer_appeal(customer, facts, channel) * ONSITE_FACTOR[channel]
    return min(MAX_CONVERSION, p)


def open_probability(customer: Customer, channel: str, local_hour: float) -> float:
    """Return the probability a delivered message is opened (0 without consent)."""
    if not customer.consent.get(channel, False):
        return 0.0
    responsiveness = 0.3 + 1.4 * customer.responsiveness[channel]
    hour = 0.5 + 0.8 * hour_match(local_hour, customer.peak_hour)
    return min(MAX_OPEN, OPEN_BASE[channel] * responsiveness * hour)


def click_probability(customer: Customer, facts: OfferFacts) -> float:
    """Return the probability an opened message is clicked (without converting)."""
    if facts.offer.category is None:
        relative = 1.0
    else:
        relative = customer.category_affinity[facts.offer.category] * len(
            customer.category_affinity
        )
    return min(0.8, 0.12 + 0.08 * min(relative, 5.0))


def response_delay_hours(customer: Customer) -> float:
    """Return the mean delay from message to redemption: procrastinators answer late."""
    return 8.0 + 64.0 * customer.persona_mix["procrastinator"]


def message_probabilities(
    customer: Customer, facts: OfferFacts, channel: str, when: datetime
) -> tuple[float, float]:
    """Return ``(open, convert)`` probabilities for a message sent at an aware time.

    Both are zero outside the offer's validity window. The open probability is raised
    to the conversion probability when needed, because a redemption follows an open.
    """
    if not facts.offer.valid_at(when):
        return 0.0, 0.0
    hour = local_hour(customer, when)
    convert = conversion_probability(customer, facts, channel, hour)
    return max(open_probability(customer, channel, hour), convert), convert


def local_hour(customer: Customer, when: datetime) -> float:
    """Return the fractional local hour of an aware time in the customer's time zone."""
    local = when.astimezone(ZoneInfo(customer.timezone))
    return local.hour + local.minute / 60
