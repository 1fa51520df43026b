"""Model inputs: a customer's point-in-time features, an action (offer x channel) and context.

Rows are flat ``{feature name: float}`` dicts (missing values are NaN) in a fixed order,
:data:`NBO_FEATURES` for the next-best-offer model and :data:`CHANNEL_FEATURES` for the
channel model. Categorical features are small integer codes from fixed vocabularies, so a
code never depends on the data it was trained on. :data:`WORDS` says what each feature
means, for the reasons serving shows.

>>> from datetime import UTC, datetime
>>> from features.catalog import load_catalog
>>> offers = OfferTable.from_catalog(load_catalog())
>>> ctx = ActionContext(at=datetime(2026, 3, 2, 18, tzinfo=UTC), surface="channel")
>>> row = nbo_row(CustomerView.empty(), offers, "of-disc-dairy", "email", ctx)
>>> row["channel"], row["offer_kind"], row["local_hour"]
(0.0, 0.0, 18.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, get_args

import numpy as np

from features.catalog import STORE_FORMATS, Catalog, Offer, OfferKind
from features.events import Page
from features.profile import MESSAGE_CHANNELS, PERSONAS, SALES_CHANNELS

NAN = math.nan
CHANNELS = ("email", "push", "sms", "messenger", "web", "app")
OFFER_KINDS: tuple[str, ...] = get_args(OfferKind)
PAGES: tuple[str, ...] = get_args(Page)
SURFACES = ("offers", "channel", "journey")

# Scalar profile features used as they are (see features.profile.profile_features).
_PROFILE_SCALARS: tuple[str, ...] = (
    "tenure_days",
    "days_since_last_seen",
    "events_24h",
    "events_7d",
    "events_90d",
    *(f"recency_days_{c}" for c in (*SALES_CHANNELS, "all")),
    *(f"frequency_90d_{c}" for c in (*SALES_CHANNELS, "all")),
    *(f"frequency_30d_{c}" for c in (*SALES_CHANNELS, "all")),
    *(f"monetary_90d_{c}" for c in (*SALES_CHANNELS, "all")),
    "avg_basket_90d",
    "online_share_90d",
    "product_views_90d",
    "store_product_views_90d",
    "add_to_cart_90d",
    "views_per_purchase_90d",
    "purchase_per_view_90d",
    "open_cart_value",
    "hours_since_last_add",
    "cart_abandoned",
    "carts_closed",
    "carts_abandoned",
    "median_cart_to_purchase_h",
    *(
        f"{name}_{c}"
        for c in MESSAGE_CHANNELS
        for name in ("delivered_90d", "opened_90d", "clicked_90d", "open_rate", "consent")
    ),
    "offers_redeemed_90d",
    "points_balance",
    "points_expiring_30d",
    "points_earned_90d",
    "points_redeemed_90d",
    *(f"persona_{p}" for p in PERSONAS),
)
CUSTOMER_FEATURES: tuple[str, ...] = (*_PROFILE_SCALARS, "has_profile", "stores_visited_90d")
ACTION_FEATURES: tuple[str, ...] = (
    "offer_kind",
    "offer_value",
    "offer_cost",
    "offer_min_basket",
    "offer_store_only",
    "offer_online_only",
    "offer_tier_limited",
    "offer_category_affinity",
    "offer_category_is_top",
    "offer_seen_before",
    "offer_redeemed_before",
    "offer_dismissed_before",
    "offer_store_ok",
)
CHANNEL_ACTION_FEATURES: tuple[str, ...] = (
    "channel",
    "channel_open_rate",
    "channel_opened_90d",
    "channel_clicked_90d",
    "channel_delivered_90d",
    "hours_since_contact_channel",
)
CONTEXT_FEATURES: tuple[str, ...] = (
    "surface",
    "page",
    "store_format",
    "local_hour",
    "hours_from_active_hour",
    "weekday",
)
NBO_FEATURES: tuple[str, ...] = (
    *CUSTOMER_FEATURES,
    *ACTION_FEATURES,
    *CHANNEL_ACTION_FEATURES,
    *CONTEXT_FEATURES,
)
CHANNEL_FEATURES: tuple[str, ...] = (
    *CUSTOMER_FEATURES,
    *CHANNEL_ACTION_FEATURES,
    *CONTEXT_FEATURES,
)
CATEGORICAL = frozenset({"offer_kind", "channel", "surface", "page", "store_format"})

WORDS: dict[str, str] = {
    "tenure_days": "days since the customer was first seen",
    "days_since_last_seen": "days since the last visit",
    "events_24h": "activity in the last 24 hours",
    "events_7d": "activity in the last 7 days",
    "events_90d": "activity in the last 90 days",
    "avg_basket_90d": "average basket value",
    "online_share_90d": "share of purchases made online",
    "product_views_90d": "products viewed in 90 days",
    "store_product_views_90d": "products scanned in stores",
    "add_to_cart_90d": "products added to carts",
    "views_per_purchase_90d": "product views per purchase",
    "purchase_per_view_90d": "purchases per product view",
    "open_cart_value": "value of the open cart",
    "hours_since_last_add": "hours since something was added to the cart",
    "cart_abandoned": "an abandoned cart",
    "carts_closed": "carts checked out",
    "carts_abandoned": "carts abandoned",
    "median_cart_to_purchase_h": "typical hours from cart to purchase",
    "offers_redeemed_90d": "offers redeemed in 90 days",
    "points_balance": "loyalty points balance",
    "points_expiring_30d": "points expiring within 30 days",
    "points_earned_90d": "points earned in 90 days",
    "points_redeemed_90d": "points redeemed in 90 days",
    "has_profile": "a known profile",
    "stores_visited_90d": "stores visited",
    "offer_kind": "the kind of offer",
    "offer_value": "the offer's value",
    "offer_cost": "the offer's cost",
    "offer_min_basket": "the offer's minimum basket",
    "offer_store_only": "an offer redeemable only in stores",
    "offer_online_only": "an offer redeemable only online",
    "offer_tier_limited": "an offer for loyalty tiers",
    "offer_category_affinity": "affinity to the offer's category",
    "offer_category_is_top": "the offer is in the customer's favourite category",
    "offer_seen_before": "the offer was seen before",
    "offer_redeemed_before": "the offer was redeemed before",
    "offer_dismissed_before": "the offer was dismissed before",
    "offer_store_ok": "the offer is redeemable in the customer's store",
    "channel": "the channel",
    "channel_open_rate": "how often the customer opens this channel",
    "channel_opened_90d": "messages opened in this channel",
    "channel_clicked_90d": "messages clicked in this channel",
    "channel_delivered_90d": "messages received in this channel",
    "hours_since_contact_channel": "hours since the last message in this channel",
    "surface": "where the decision is made",
    "page": "the page",
    "store_format": "the store format",
    "local_hour": "the customer's local hour",
    "hours_from_active_hour": "hours away from the customer's most active hour",
    "weekday": "the day of the week",
}


def _fill_words() -> None:
    for channel in (*SALES_CHANNELS, "all"):
        where = "" if channel == "all" else f" ({channel})"
        WORDS[f"recency_days_{channel}"] = f"days since the last purchase{where}"
        WORDS[f"frequency_90d_{channel}"] = f"purchases in 90 days{where}"
        WORDS[f"frequency_30d_{channel}"] = f"purchases in 30 days{where}"
        WORDS[f"monetary_90d_{channel}"] = f"spend in 90 days{where}"
    for channel in MESSAGE_CHANNELS:
        WORDS[f"delivered_90d_{channel}"] = f"{channel} messages received"
        WORDS[f"opened_90d_{channel}"] = f"{channel} messages opened"
        WORDS[f"clicked_90d_{channel}"] = f"{channel} messages clicked"
        WORDS[f"open_rate_{channel}"] = f"{channel} open rate"
        WORDS[f"consent_{channel}"] = f"consent to {channel}"
    for persona in PERSONAS:
        WORDS[f"persona_{persona}"] = f"{persona.replace('_', ' ')} behaviour"


_fill_words()


def _num(value: Any) -> float:
    if value is None:
        return NAN
    return float(value)


@dataclass(frozen=True, slots=True)
class CustomerView:
    """What the models use of a profile as of one moment (plain values, no raw events)."""

    values: tuple[float, ...]
    affinity: Mapping[str, float]
    offers_seen: frozenset[str]
    offers_redeemed: frozenset[str]
    offers_dismissed: frozenset[str]
    top_category: str | None
    last_store: str | None
    tz_offset_min: int | None
    active_hour: int | None
    hours_since_contact: Mapping[str, float]

    @classmethod
    def empty(cls) -> CustomerView:
        """Return the view of a visitor nobody knows yet."""
        return cls.from_features(None)

    @classmethod
    def from_features(cls, features: Mapping[str, Any] | None) -> CustomerView:
        """Build a view from :func:`features.profile.profile_features` (``None``: no profile)."""
        if features is None:
            values = [NAN] * len(_PROFILE_SCALARS) + [0.0, 0.0]
            return cls(tuple(values), {}, frozenset(), frozenset(), frozenset(), None, None,
                       None, None, {})
        get = features.get
        values = [NAN if (v := get(name)) is None else float(v) for name in _PROFILE_SCALARS]
        values += [1.0, float(len(features.get("stores_visited_90d") or ()))]
        contact = {
            c: _num(features.get(f"hours_since_contact_{c}")) for c in MESSAGE_CHANNELS
        }
        return cls(
            values=tuple(values),
            affinity=dict(features.get("category_affinity") or {}),
            offers_seen=frozenset(features.get("offers_seen") or ()),
            offers_redeemed=frozenset(features.get("offers_redeemed") or ()),
            offers_dismissed=frozenset(features.get("offers_dismissed") or ()),
            top_category=features.get("top_category"),
            last_store=features.get("last_store"),
            tz_offset_min=features.get("tz_offset_min"),
            active_hour=features.get("active_hour"),
            hours_since_contact=contact,
        )

    def value(self, name: str) -> float:
        """Return one customer feature by name."""
        return self.values[_CUSTOMER_INDEX[name]]


_CUSTOMER_INDEX = {name: i for i, name in enumerate(CUSTOMER_FEATURES)}


@dataclass(frozen=True, slots=True)
class ActionContext:
    """Where and when a decision is asked: an aware time, the surface, page and store."""

    at: datetime
    surface: str = "offers"
    page: str | None = None
    store_id: str | None = None

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            message = f"at must be a timezone-aware datetime; got {self.at!r}"
            raise ValueError(message)


@dataclass(frozen=True, slots=True)
class OfferRow:
    """The catalog facts about one offer that the models use."""

    kind: float
    value: float
    cost: float
    min_basket: float
    store_only: float
    online_only: float
    tier_limited: float
    category: str | None
    store_formats: frozenset[str]
    needs_coffee_corner: bool


@dataclass(frozen=True)
class OfferTable:
    """Offers and stores from the catalog, as the rows need them."""

    offers: Mapping[str, OfferRow]
    store_formats: Mapping[str, str]
    coffee_corners: frozenset[str]

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> OfferTable:
        """Index the catalog's offers and stores."""
        offers = {offer_id: offer_row(offer) for offer_id, offer in sorted(catalog.offers.items())}
        formats = {s.id: s.format for s in catalog.stores.values()}
        corners = frozenset(s.id for s in catalog.stores.values() if s.coffee_corner)
        return cls(offers, formats, corners)

    def with_offers(self, offers: Iterable[Offer]) -> OfferTable:
        """Return this table with ``offers`` added (or replaced)."""
        return OfferTable(
            {**self.offers, **{o.id: offer_row(o) for o in offers}},
            self.store_formats,
            self.coffee_corners,
        )

    def offer(self, offer_id: str) -> OfferRow:
        """Return an offer's facts; ``KeyError`` names an unknown id."""
        try:
            return self.offers[offer_id]
        except KeyError:
            message = f"unknown offer {offer_id!r}"
            raise KeyError(message) from None

    @cached_property
    def columns(self) -> OfferColumns:
        """The offers' facts as arrays (built once per table; a table is never changed)."""
        return OfferColumns.of(self)

    def store_ok(self, last_store: str | None) -> np.ndarray:
        """Return ``offer_store_ok`` of every offer of the table for a customer's last store.

        The same values as :func:`offer_values` computes offer by offer; cached per store
        (a handful of stores: a request only gathers from the cached array).
        """
        cache = self._store_ok
        column = cache.get(last_store)
        if column is None:
            columns = self.columns
            column = np.ones(len(columns.ids), dtype=np.float64)
            fmt = self.store_formats.get(last_store) if last_store is not None else None
            for k in columns.limited:
                o = self.offers[columns.ids[k]]
                if last_store is None:
                    column[k] = NAN
                else:
                    column[k] = float(
                        (not o.store_formats or fmt in o.store_formats)
                        and (not o.needs_coffee_corner or last_store in self.coffee_corners)
                    )
            column.flags.writeable = False
            if len(cache) >= _STORE_CACHE_MAX:  # last stores are few; bound it anyway
                cache.clear()
            cache[last_store] = column
        return column

    @cached_property
    def _store_ok(self) -> dict[str | None, np.ndarray]:
        return {}


_STORE_CACHE_MAX = 4096
# ACTION_FEATURES that depend on the offer only (kind … tier_limited), then the per-customer ones.
_OFFER_STATIC = 7


@dataclass(frozen=True, slots=True)
class OfferColumns:
    """An :class:`OfferTable` as arrays, so many candidate rows are built with numpy.

    ``static`` holds the customer-independent :data:`ACTION_FEATURES` (``offer_kind`` to
    ``offer_tier_limited``) per offer; ``category`` the offer's index in ``categories``
    (-1 without one); ``limited`` the offers limited to store formats or coffee corners.
    """

    ids: tuple[str, ...]
    index: Mapping[str, int]
    static: np.ndarray
    category: np.ndarray
    categories: tuple[str, ...]
    limited: tuple[int, ...]

    @classmethod
    def of(cls, table: OfferTable) -> OfferColumns:
        """Index a table's offers."""
        ids = tuple(table.offers)
        rows = [table.offers[i] for i in ids]
        categories = tuple(sorted({o.category for o in rows if o.category is not None}))
        code = {c: k for k, c in enumerate(categories)}
        static = np.array(
            [[o.kind, o.value, o.cost, o.min_basket, o.store_only, o.online_only, o.tier_limited]
             for o in rows],
            dtype=np.float64,
        ).reshape(len(rows), _OFFER_STATIC)
        category = np.array(
            [code[o.category] if o.category is not None else -1 for o in rows], dtype=np.intp
        )
        limited = tuple(k for k, o in enumerate(rows) if o.store_formats or o.needs_coffee_corner)
        for array in (static, category):
            array.flags.writeable = False
        return cls(ids, {i: k for k, i in enumerate(ids)}, static, category, categories, limited)

    def positions(self, offer_ids: Sequence[str]) -> np.ndarray:
        """Return the table rows of ``offer_ids``; ``KeyError`` names an unknown id."""
        index = self.index
        try:
            return np.fromiter(map(index.__getitem__, offer_ids), np.intp, len(offer_ids))
        except KeyError:
            missing = next(i for i in offer_ids if i not in index)
            message = f"unknown offer {missing!r}"
            raise KeyError(message) from None


def local_hour(view: CustomerView, at: datetime) -> float:
    """Return the hour at ``at`` in the customer's time zone (from the profile's offset).

    Without a known offset, the decision time's own offset is used.
    """
    offset = view.tz_offset_min
    if offset is None:
        delta = at.utcoffset()
        offset = int(delta.total_seconds()) // 60 if delta is not None else 0
    minutes = (int(at.timestamp()) // 60 + offset) % (24 * 60)
    return float(minutes // 60)


def _weekday(view: CustomerView, at: datetime) -> float:
    offset = view.tz_offset_min or 0
    return float(((int(at.timestamp()) + offset * 60) // 86400 + 3) % 7)  # 1970-01-01: Thu


def context_values(view: CustomerView, ctx: ActionContext, offers: OfferTable) -> list[float]:
    """Return the :data:`CONTEXT_FEATURES` of a decision."""
    hour = local_hour(view, ctx.at)
    if view.active_hour is None:
        distance = NAN
    else:
        d = abs(hour - view.active_hour) % 24
        distance = min(d, 24 - d)
    fmt = offers.store_formats.get(ctx.store_id or "")
    return [
        float(SURFACES.index(ctx.surface)) if ctx.surface in SURFACES else NAN,
        float(PAGES.index(ctx.page)) if ctx.page in PAGES else NAN,
        float(STORE_FORMATS.index(fmt)) if fmt is not None else NAN,
        hour,
        distance,
        _weekday(view, ctx.at),
    ]


def channel_values(view: CustomerView, channel: str) -> list[float]:
    """Return the :data:`CHANNEL_ACTION_FEATURES` of sending on (or showing in) ``channel``."""
    code = float(CHANNELS.index(channel)) if channel in CHANNELS else NAN
    if channel not in MESSAGE_CHANNELS:
        return [code, NAN, NAN, NAN, NAN, NAN]
    return [
        code,
        view.value(f"open_rate_{channel}"),
        view.value(f"opened_90d_{channel}"),
        view.value(f"clicked_90d_{channel}"),
        view.value(f"delivered_90d_{channel}"),
        view.hours_since_contact.get(channel, NAN),
    ]


def offer_values(view: CustomerView, offers: OfferTable, offer_id: str) -> list[float]:
    """Return the :data:`ACTION_FEATURES` of an offer for this customer."""
    o = offers.offer(offer_id)
    if o.category is None:
        affinity, top = NAN, NAN
    else:
        affinity = view.affinity.get(o.category, 0.0) if view.affinity else NAN
        top = float(view.top_category == o.category) if view.top_category else NAN
    if not o.store_formats and not o.needs_coffee_corner:
        store_ok = 1.0
    elif view.last_store is None:
        store_ok = NAN
    else:
        fmt = offers.store_formats.get(view.last_store)
        store_ok = float(
            (not o.store_formats or fmt in o.store_formats)
            and (not o.needs_coffee_corner or view.last_store in offers.coffee_corners)
        )
    return [
        o.kind,
        o.value,
        o.cost,
        o.min_basket,
        o.store_only,
        o.online_only,
        o.tier_limited,
        affinity,
        top,
        float(offer_id in view.offers_seen),
        float(offer_id in view.offers_redeemed),
        float(offer_id in view.offers_dismissed),
        store_ok,
    ]


def nbo_vector(
    view: CustomerView, offers: OfferTable, offer_id: str, channel: str, ctx: ActionContext
) -> list[float]:
    """Return one next-best-offer row as values in :data:`NBO_FEATURES` order."""
    return [
        *view.values,
        *offer_values(view, offers, offer_id),
        *channel_values(view, channel),
        *context_values(view, ctx, offers),
    ]


def channel_vector(view: CustomerView, channel: str, ctx: ActionContext) -> list[float]:
    """Return one channel-model row as values in :data:`CHANNEL_FEATURES` order."""
    return [*view.values, *channel_values(view, channel), *context_values(view, ctx, _NO_OFFERS)]


_NO_OFFERS = OfferTable({}, {}, frozenset())


def nbo_row(
    view: CustomerView, offers: OfferTable, offer_id: str, channel: str, ctx: ActionContext
) -> dict[str, float]:
    """Return one next-best-offer row as ``{feature: value}`` (what serving passes in)."""
    return dict(zip(NBO_FEATURES, nbo_vector(view, offers, offer_id, channel, ctx), strict=True))


def channel_row(view: CustomerView, channel: str, ctx: ActionContext) -> dict[str, float]:
    """Return one channel-model row as ``{feature: value}``."""
    return dict(zip(CHANNEL_FEATURES, channel_vector(view, channel, ctx), strict=True))


def channel_matrix(view: CustomerView, channels: Sequence[str], ctx: ActionContext) -> np.ndarray:
    """Return the channel-model rows of several channels (the :func:`channel_vector` values).

    Straight into a matrix in :data:`CHANNEL_FEATURES` order: no dict per row, and the
    customer and context parts computed once.
    """
    out = np.empty((len(channels), len(CHANNEL_FEATURES)), dtype=np.float64)
    customer_end = len(CUSTOMER_FEATURES)
    channel_end = customer_end + len(CHANNEL_ACTION_FEATURES)
    out[:, :customer_end] = view.values
    for i, channel in enumerate(channels):
        out[i, customer_end:channel_end] = channel_values(view, channel)
    out[:, channel_end:] = context_values(view, ctx, _NO_OFFERS)
    return out


def candidate_matrix(
    view: CustomerView,
    offers: OfferTable,
    actions: Sequence[tuple[str, str]],
    ctx: ActionContext,
) -> np.ndarray:
    """Return the next-best-offer rows of several ``(offer_id, channel)`` actions.

    The same rows as :func:`nbo_vector`, built column block by block: the customer and
    context parts are one row for all, the offer facts are gathered from the table's
    arrays (:attr:`OfferTable.columns`), and the per-customer offer columns are computed
    once per category, per seen offer and per store rather than once per candidate.
    """
    channels = [channel for _, channel in actions]
    offer_ids = [offer_id for offer_id, _ in actions]
    if not channels or channels.count(channels[0]) == len(channels):
        return offer_matrix(view, offers, offer_ids, channels[0] if channels else "web", ctx)
    out = offer_matrix(view, offers, offer_ids, channels[0], ctx)
    action_end = len(CUSTOMER_FEATURES) + len(ACTION_FEATURES)
    channel_end = action_end + len(CHANNEL_ACTION_FEATURES)
    by_channel: dict[str, list[float]] = {}
    for i, channel in enumerate(channels):
        if channel not in by_channel:
            by_channel[channel] = channel_values(view, channel)
        out[i, action_end:channel_end] = by_channel[channel]
    return out


def offer_matrix(
    view: CustomerView,
    offers: OfferTable,
    offer_ids: Sequence[str],
    channel: str,
    ctx: ActionContext,
    positions: np.ndarray | None = None,
) -> np.ndarray:
    """Return :func:`candidate_matrix` for offers all shown in one ``channel`` (a page load).

    ``positions`` (optional) are the ids' rows in ``offers.columns``, when known already.
    """
    out = np.empty((len(offer_ids), len(NBO_FEATURES)), dtype=np.float64)
    customer_end = len(CUSTOMER_FEATURES)
    action_end = customer_end + len(ACTION_FEATURES)
    channel_end = action_end + len(CHANNEL_ACTION_FEATURES)
    out[:, :customer_end] = view.values
    if offer_ids:
        offer_columns(view, offers, offer_ids, out[:, customer_end:action_end], positions)
    out[:, action_end:channel_end] = channel_values(view, channel)
    out[:, channel_end:] = context_values(view, ctx, offers)
    return out


def offer_columns(
    view: CustomerView,
    offers: OfferTable,
    offer_ids: Sequence[str],
    out: np.ndarray,
    positions: np.ndarray | None = None,
) -> None:
    """Fill ``out`` (one row per id) with the :data:`ACTION_FEATURES` of :func:`offer_values`."""
    columns = offers.columns
    at = columns.positions(offer_ids) if positions is None else positions
    out[:, :_OFFER_STATIC] = columns.static[at]
    # Affinity and favourite category per category (NaN for offers without one: index -1).
    categories = columns.categories
    affinity = np.full(len(categories) + 1, NAN)
    top = np.full(len(categories) + 1, NAN)
    if view.affinity:
        affinity[:-1] = [view.affinity.get(c, 0.0) for c in categories]
    if view.top_category:
        top[:-1] = [float(view.top_category == c) for c in categories]
    category = columns.category[at]
    out[:, _OFFER_STATIC] = affinity[category]
    out[:, _OFFER_STATIC + 1] = top[category]
    # Seen, redeemed, dismissed: a customer's sets are small, the candidates many.
    for j, ids in enumerate(
        (view.offers_seen, view.offers_redeemed, view.offers_dismissed), start=_OFFER_STATIC + 2
    ):
        if not ids:
            out[:, j] = 0.0
            continue
        flags = np.zeros(len(columns.ids), dtype=np.float64)
        for offer_id in ids:
            k = columns.index.get(offer_id)
            if k is not None:
                flags[k] = 1.0
        out[:, j] = flags[at]
    out[:, _OFFER_STATIC + 5] = offers.store_ok(view.last_store)[at]


def to_matrix(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> np.ndarray:
    """Stack ``{feature: value}`` rows into a matrix in ``names`` order (missing: NaN)."""
    out = np.full((len(rows), len(names)), NAN, dtype=np.float64)
    for i, row in enumerate(rows):
        for j, name in enumerate(names):
            value = row.get(name)
            if value is not None:
                out[i, j] = float(value)
    return out


def offer_row(offer: Offer) -> OfferRow:
    """Return the facts of one catalog offer that the rows use."""
    sales = set(offer.sales_channels)
    return OfferRow(
        kind=float(OFFER_KINDS.index(offer.kind)),
        value=offer.value,
        cost=offer.cost,
        min_basket=offer.min_basket,
        store_only=float(sales == {"store"}),
        online_only=float(bool(sales) and "store" not in sales),
        tier_limited=float(bool(offer.tiers)),
        category=offer.category,
        store_formats=frozenset(offer.store_formats),
        needs_coffee_corner=offer.requires_coffee_corner,
    )
