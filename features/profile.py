"""One live profile: the merge of its fragments, its stored form, and its features.

The stored value is the merged :class:`~features.aggregate.Aggregate` of every fragment in
the profile (JSON, absolute). Features are computed from it *as of* a time, by
:func:`profile_features`, so the same code serves page loads ("now"), training sets
("as of the decision time") and batch recomputation.

Persona scores are interpretable numbers in ``[0, 1]`` (formulas in :func:`persona_scores`
and ``docs/features.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from features.aggregate import (
    DAY,
    HORIZON_DAYS,
    HOUR,
    Aggregate,
    Applied,
    Contribution,
    Counters,
    Small,
)

SALES_CHANNELS = ("web", "app", "store")
MESSAGE_CHANNELS = ("email", "push", "sms", "messenger")
PERSONAS = ("discount_hunter", "newcomer", "toucher", "social", "procrastinator")
ABANDON_AFTER_S = HOUR
DAY_PARTS = {"night": range(0, 6), "morning": range(6, 12), "afternoon": range(12, 18)}


@dataclass(slots=True)
class ProfileState:
    """A profile as the flow keeps it: merged counters plus each fragment's small state.

    Counters are kept merged (sums are exact integers, so adding and subtracting fragments
    is exact); registers, carts and expiry notices are kept per fragment and merged when the
    profile is written, because a fragment that leaves must take exactly its own with it.
    """

    profile_id: str
    merged: Aggregate = field(default_factory=Aggregate)
    fragments: dict[str, Small] = field(default_factory=dict)

    def apply(self, fragment: str, c: Contribution, applied: Applied) -> None:
        """Mirror one event applied by ``fragment`` (and what it evicted)."""
        self.merged.mirror(c, applied)
        small = self.fragments.get(fragment)
        if small is None:
            small = self.fragments[fragment] = Small()
        small.apply(c)
        if applied.evicted_days:
            small.prune((small.last_seen // DAY - HORIZON_DAYS + 1) * DAY)

    def join(self, fragment: str, state: Aggregate) -> None:
        """Take in a fragment's whole history (a merge)."""
        self.merged.add_buckets(state.days, state.hours, 1)
        self.fragments[fragment] = _copy_small(state.small)

    def leave(self, fragment: str, state: Aggregate) -> None:
        """Give a fragment's whole history back (a split, an erasure)."""
        self.merged.add_buckets(state.days, state.hours, -1)
        self.fragments.pop(fragment, None)

    @property
    def empty(self) -> bool:
        """Whether no fragment is left in the profile."""
        return not self.fragments

    def to_record(self) -> dict[str, Any]:
        """Return the stored form: merged buckets and registers, fragments, time span.

        The buckets are the live dicts, keyed by day / hour number: encode or copy them
        before the state changes again.
        """
        if len(self.fragments) == 1:
            [small] = self.fragments.values()
        else:
            small = Small()
            for fragment in sorted(self.fragments):
                small.merge(self.fragments[fragment])
        return {
            "profile_id": self.profile_id,
            "fragments": sorted(self.fragments),
            "first_seen": small.first_seen,
            "last_seen": small.last_seen,
            "days": self.merged.days,
            "hours": self.merged.hours,
            "registers": small.registers,
            "carts": small.carts,
            "expiries": small.expiries,
        }

    def encode(self) -> bytes:
        """Serialize :meth:`to_record` for the online store (bucket numbers become strings)."""
        return orjson.dumps(self.to_record(), option=orjson.OPT_NON_STR_KEYS)


def _copy_small(small: Small) -> Small:
    copy = Small()
    copy.merge(small)
    return copy


def decode_profile(raw: bytes) -> dict[str, Any]:
    """Decode a stored profile value."""
    return orjson.loads(raw)


def canonical(record: dict[str, Any]) -> dict[str, Any]:
    """Return a stored profile with its fragment-dependent parts normalized for comparison."""
    return orjson.loads(orjson.dumps(record, option=orjson.OPT_SORT_KEYS))


# --- features as of a time ----------------------------------------------------------------


def _window(buckets: dict[str, Counters], start: int, end: int) -> Counters:
    total: Counters = {}
    for key, counters in buckets.items():
        if start <= int(key) <= end:
            for name, value in counters.items():
                total[name] = total.get(name, 0) + value
    return total


def _day_windows(days: dict[str, Counters], day: int) -> tuple[Counters, Counters, Counters]:
    """Return the 7-, 30- and 90-day windows ending on ``day`` in one pass over the buckets.

    Each bucket is added once, to the narrowest window holding it; the wider windows are
    then the narrower ones plus their own buckets (counters are integers, so the order of
    the additions does not change a sum).
    """
    parts: list[Counters | None] = [None, None, None]  # ages 0-6, 7-29, 30-89
    for key, counters in days.items():
        age = day - int(key)
        if 0 <= age < HORIZON_DAYS:
            part = 0 if age < 7 else 1 if age < 30 else 2
            total = parts[part]
            if total is None:
                parts[part] = dict(counters)  # a copy: the sums must not touch the record
                continue
            for name, value in counters.items():
                total[name] = total.get(name, 0) + value
    d7 = parts[0] or {}
    d30 = _plus(d7, parts[1])
    return d7, d30, _plus(d30, parts[2])


def _plus(base: Counters, more: Counters | None) -> Counters:
    total = base.copy()
    for name, value in (more or {}).items():
        total[name] = total.get(name, 0) + value
    return total


def _register(record: dict[str, Any], name: str, default: Any = None) -> Any:
    value = record["registers"].get(name)
    return default if value is None else value[2]


def _grouped(counters: Counters, *groups: str) -> list[dict[str, int]]:
    """Return, per group, its counters by what follows ``group:``, in one pass.

    >>> _grouped({"vw_cat:tea": 2, "visit:st-1": 1, "ev": 3}, "vw_cat", "visit")
    [{'tea': 2}, {'st-1': 1}]
    """
    found: dict[str, dict[str, int]] = {group: {} for group in groups}
    for key, value in counters.items():
        group, colon, rest = key.partition(":")
        if colon and (members := found.get(group)) is not None:
            members[rest] = value
    return [found[group] for group in groups]


def profile_features(record: dict[str, Any], as_of: int) -> dict[str, Any]:
    """Compute the feature dict of a stored profile as of ``as_of`` (epoch seconds).

    Windows end at ``as_of``; only buckets inside them count, so a profile read long after
    its last event shows empty windows rather than stale ones.
    """
    day, hour = as_of // DAY, as_of // HOUR
    d7, d30, d90 = _day_windows(record["days"], day)
    h24 = _window(record["hours"], hour - 23, hour)
    f: dict[str, Any] = {}
    last_seen = record["last_seen"]
    f["tenure_days"] = max(0.0, (as_of - record["first_seen"]) / DAY) if last_seen else 0.0
    f["days_since_last_seen"] = (as_of - last_seen) / DAY if last_seen else float(HORIZON_DAYS)
    f["events_24h"], f["events_7d"], f["events_90d"] = (
        h24.get("ev", 0),
        d7.get("ev", 0),
        d90.get("ev", 0),
    )
    _rfm(f, record, d30, d90, as_of)
    _interest(f, d90)
    _cart(f, record, as_of)
    _engagement(f, record, d90, as_of)
    _loyalty(f, record, d90, as_of)
    _activity(f, d90)
    f.update(persona_scores(f, d90))
    return f


def _rfm(
    f: dict[str, Any], record: dict[str, Any], d30: Counters, d90: Counters, as_of: int
) -> None:
    for channel in (*SALES_CHANNELS, "all"):
        suffix = "" if channel == "all" else f":{channel}"
        last = _register(record, f"last_purchase{suffix}")
        f[f"recency_days_{channel}"] = (as_of - last) / DAY if last else float(HORIZON_DAYS)
        if channel == "all":
            f["frequency_90d_all"] = sum(d90.get(f"pur:{c}", 0) for c in SALES_CHANNELS)
            f["frequency_30d_all"] = sum(d30.get(f"pur:{c}", 0) for c in SALES_CHANNELS)
            f["monetary_90d_all"] = sum(d90.get(f"rev:{c}", 0) for c in SALES_CHANNELS) / 100
        else:
            f[f"frequency_90d_{channel}"] = d90.get(f"pur:{channel}", 0)
            f[f"frequency_30d_{channel}"] = d30.get(f"pur:{channel}", 0)
            f[f"monetary_90d_{channel}"] = d90.get(f"rev:{channel}", 0) / 100
    f["refunds_90d"] = sum(d90.get(f"ref:{c}", 0) for c in SALES_CHANNELS)
    f["refunded_90d"] = sum(d90.get(f"ref_amt:{c}", 0) for c in SALES_CHANNELS) / 100
    purchases = f["frequency_90d_all"]
    f["avg_basket_90d"] = f["monetary_90d_all"] / purchases if purchases else 0.0
    f["online_share_90d"] = (
        (f["frequency_90d_web"] + f["frequency_90d_app"]) / purchases if purchases else 0.0
    )


def _interest(f: dict[str, Any], d90: Counters) -> None:
    views, bought, visits = _grouped(d90, "vw_cat", "spend_cat", "visit")
    total_views, total_spend = sum(views.values()), sum(bought.values())
    categories = set(views) | set(bought)
    # Affinity mixes what is looked at and what is paid for, both as shares in [0, 1].
    f["category_affinity"] = {
        c: round(
            0.5 * (views.get(c, 0) / total_views if total_views else 0.0)
            + 0.5 * (bought.get(c, 0) / total_spend if total_spend else 0.0),
            6,
        )
        for c in sorted(categories)
    }
    f["top_category"] = max(f["category_affinity"], key=f["category_affinity"].get, default=None)
    product_views = sum(d90.get(f"vw:{s}", 0) for s in SALES_CHANNELS)
    f["product_views_90d"] = product_views
    f["store_product_views_90d"] = d90.get("vw:store", 0)
    f["add_to_cart_90d"] = sum(d90.get(f"atc:{s}", 0) for s in SALES_CHANNELS)
    purchases = f["frequency_90d_all"]
    f["views_per_purchase_90d"] = product_views / purchases if purchases else float(product_views)
    f["purchase_per_view_90d"] = purchases / product_views if product_views else 0.0
    f["stores_visited_90d"] = sorted(visits)


def _cart(f: dict[str, Any], record: dict[str, Any], as_of: int) -> None:
    open_value, last_add, delays, abandoned = 0, 0, [], 0
    for added, removed, first_add, last, closed in record["carts"].values():
        if closed and first_add and closed >= first_add:
            delays.append(closed - first_add)
        if not closed and last and last <= as_of:
            open_value += max(0, added - removed)
            last_add = max(last_add, last)
            abandoned += as_of - last >= ABANDON_AFTER_S
    f["open_cart_value"] = open_value / 100
    f["hours_since_last_add"] = (as_of - last_add) / HOUR if last_add else None
    f["cart_abandoned"] = bool(open_value and last_add and as_of - last_add >= ABANDON_AFTER_S)
    f["carts_closed"] = len(delays)
    f["carts_abandoned"] = abandoned
    f["median_cart_to_purchase_h"] = sorted(delays)[len(delays) // 2] / HOUR if delays else None


_OFFER_KINDS = frozenset({"offer_seen", "offer_clicked", "offer_dismissed", "offer_redeemed"})


def _engagement(f: dict[str, Any], record: dict[str, Any], d90: Counters, as_of: int) -> None:
    for channel in MESSAGE_CHANNELS:
        delivered = d90.get(f"eng:{channel}:delivered", 0)
        opened = d90.get(f"eng:{channel}:opened", 0)
        clicked = d90.get(f"eng:{channel}:clicked", 0)
        f[f"delivered_90d_{channel}"] = delivered
        f[f"opened_90d_{channel}"] = opened
        f[f"clicked_90d_{channel}"] = clicked
        f[f"converted_90d_{channel}"] = d90.get(f"eng:{channel}:converted", 0)
        f[f"unsubscribed_90d_{channel}"] = d90.get(f"eng:{channel}:unsubscribed", 0)
        # Laplace-smoothed so a channel never tried is neither 0 nor 1.
        f[f"open_rate_{channel}"] = (opened + 1) / (delivered + 2)
        last = _register(record, f"last_contact:{channel}")
        f[f"hours_since_contact_{channel}"] = (as_of - last) / HOUR if last else None
        f[f"consent_{channel}"] = _register(record, f"consent:{channel}")
    offers: dict[str, dict[str, int]] = {}
    for name, (ts, _event, value) in record["registers"].items():
        kind, _, offer = name.partition(":")
        # ``None`` is a refund's void: the latest of a redemption and a void decides.
        if kind in _OFFER_KINDS and value is not None:
            offers.setdefault(kind, {})[offer] = ts
    f["offers_seen"] = sorted(offers.get("offer_seen", {}))
    f["offers_redeemed"] = sorted(offers.get("offer_redeemed", {}))
    f["offers_dismissed"] = sorted(offers.get("offer_dismissed", {}))


def _loyalty(f: dict[str, Any], record: dict[str, Any], d90: Counters, as_of: int) -> None:
    f["points_balance"] = _register(record, "points_balance", 0)
    f["tier"] = _register(record, "tier")
    f["points_expiring_30d"] = sum(
        points
        for expires, points in record["expiries"].values()
        if as_of <= expires <= as_of + 30 * DAY
    )
    f["points_earned_90d"] = d90.get("pts_earned", 0)
    f["points_redeemed_90d"] = d90.get("pts_redeemed", 0)
    f["offers_redeemed_90d"] = d90.get("redeemed", 0)
    f["last_store"] = _register(record, "last_store")
    f["tz_offset_min"] = _register(record, "tz_offset_min", 0)
    # 0 above is also "never seen": contact policy then uses its default zone instead.
    f["tz_known"] = _register(record, "tz_offset_min") is not None


def _activity(f: dict[str, Any], d90: Counters) -> None:
    hours = [d90.get(f"hr:{h}", 0) for h in range(24)]
    total = sum(hours)
    f["active_hour"] = max(range(24), key=hours.__getitem__) if total else None
    parts = {name: sum(hours[h] for h in span) for name, span in DAY_PARTS.items()}
    parts["evening"] = sum(hours[18:])
    f["preferred_day_part"] = max(parts, key=parts.get) if total else None  # type: ignore[arg-type]
    f["hour_histogram"] = [round(h / total, 4) if total else 0.0 for h in hours]


def persona_scores(f: dict[str, Any], d90: Counters) -> dict[str, float]:
    """Return the five persona scores, each in ``[0, 1]``.

    * ``discount_hunter`` = purchases that redeemed an offer / (purchases + 2);
    * ``newcomer`` = max(0, 1 - tenure_days / 60) × 1 / (1 + purchases in 90 days);
    * ``toucher`` = in-store product views / (all product views + 2) × online share of purchases;
    * ``social`` = (push + messenger opens) / (all message opens + 2);
    * ``procrastinator`` = d / (d + 24) for the median cart-to-purchase delay d in hours
      (0 without a closed cart), raised to the share of carts abandoned (open an hour
      after their last add) when that is larger and there were three carts or more.

    The ``+ 2`` terms shrink scores of customers with little history toward 0.
    """
    purchases = f["frequency_90d_all"]
    with_offer = d90.get("pur_with_offer", 0)
    views = f["product_views_90d"]
    opens = sum(f[f"opened_90d_{c}"] for c in MESSAGE_CHANNELS)
    social_opens = f["opened_90d_push"] + f["opened_90d_messenger"]
    delay = f["median_cart_to_purchase_h"] or 0.0
    carts = f["carts_closed"] + f["carts_abandoned"]
    abandon_share = f["carts_abandoned"] / carts if carts else 0.0
    scores = {
        "discount_hunter": with_offer / (purchases + 2),
        "newcomer": max(0.0, 1 - f["tenure_days"] / 60) / (1 + purchases),
        "toucher": f["store_product_views_90d"] / (views + 2) * f["online_share_90d"],
        "social": social_opens / (opens + 2),
        "procrastinator": max(delay / (delay + 24), abandon_share if carts >= 3 else 0.0),
    }
    return {f"persona_{name}": round(min(1.0, max(0.0, v)), 6) for name, v in scores.items()}
