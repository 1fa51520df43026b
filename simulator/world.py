"""The simulated population: configuration and each customer's latent traits.

Every customer is drawn from its own random stream, seeded by ``(seed, index)``, so a
customer's traits never depend on how many others exist or in which order they are made.

>>> from features.catalog import load_catalog
>>> world = make_world(SimulationConfig(customers=3, days=2, seed=1), load_catalog())
>>> [c.customer_id for c in world.customers]
['cu-000000', 'cu-000001', 'cu-000002']
>>> abs(sum(world.customers[0].persona_mix.values()) - 1.0) < 1e-9
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from features.catalog import Catalog
from features.contacts import DEV_CONTACT_HASH_KEY, hash_email, hash_phone

PERSONAS = ("discount_hunter", "newcomer", "toucher", "social", "procrastinator")
MESSAGE_CHANNELS = ("email", "push", "sms", "messenger")
TIER_MULTIPLIER = {"basic": 1.0, "silver": 1.25, "gold": 1.5}

DEFAULT_START = datetime(2026, 3, 2, tzinfo=UTC)
DEFAULT_CONTACT_HASH_KEY = DEV_CONTACT_HASH_KEY

# How often each persona dominates a customer's mix.
_DOMINANT_SHARES = (0.25, 0.15, 0.2, 0.2, 0.2)
_DOMINANT_WEIGHT = 0.55  # > 1/2, so the dominant persona always has the largest weight
_TIERS = ("basic", "silver", "gold")
_TIER_SHARES = (0.65, 0.25, 0.10)
_PEAK_HOURS = (8, 9, 12, 13, 18, 19, 20, 21)
_LATE_PEAK_HOURS = (21, 22, 23)


@dataclass(frozen=True)
class SimulationConfig:
    """How big the world is, how long it runs, and how noisy its event stream is.

    >>> SimulationConfig(customers=0)
    Traceback (most recent call last):
    ...
    ValueError: customers must be >= 1; got 0
    """

    customers: int = 1000
    days: int = 7
    seed: int = 7
    start: datetime = DEFAULT_START
    duplicate_rate: float = 0.01
    late_rate: float = 0.02
    max_late_hours: float = 6.0
    malformed_rate: float = 0.002
    anonymous_only_share: float = 0.15
    shared_device_share: float = 0.02
    # Share of orders refunded later (returns, cancellations). 0 by default, so the default
    # worlds (and every figure measured on them) stay as they were before refunds existed.
    refund_rate: float = 0.0
    contact_hash_key: bytes = field(default=DEFAULT_CONTACT_HASH_KEY, repr=False)

    def __post_init__(self) -> None:
        for name in ("customers", "days"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                message = f"{name} must be >= 1; got {value!r}"
                raise ValueError(message)
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            message = f"start must be a timezone-aware datetime; got {self.start!r}"
            raise ValueError(message)
        for name in (
            "duplicate_rate",
            "late_rate",
            "malformed_rate",
            "anonymous_only_share",
            "shared_device_share",
            "refund_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                message = f"{name} must be within [0, 1]; got {value!r}"
                raise ValueError(message)
        if self.max_late_hours <= 0:
            message = f"max_late_hours must be > 0; got {self.max_late_hours!r}"
            raise ValueError(message)
        if not self.contact_hash_key:
            message = "contact_hash_key must not be empty"
            raise ValueError(message)


@dataclass(frozen=True)
class Customer:
    """One person's hidden traits and identifiers; mappings are read-only by convention.

    ``persona_mix`` weights sum to 1 and ``dominant_persona`` has the largest weight;
    ``category_affinity`` sums to 1 over the catalog categories. ``peak_hour`` is local
    to ``timezone``. ``signup_day`` is the simulation day the customer becomes known
    (``None`` for anonymous-only visitors, who never log in).
    """

    index: int
    customer_id: str
    persona_mix: dict[str, float]
    dominant_persona: str
    category_affinity: dict[str, float]
    price_sensitivity: float
    responsiveness: dict[str, float]
    consent: dict[str, bool]
    peak_hour: int
    timezone: str
    home_store: str
    tier: str
    anonymous_only: bool
    app_user: bool
    signup_day: int | None
    erasure_day: int | None
    cookies: tuple[str, ...]
    devices: tuple[str, ...]
    card_id: str | None
    email_hash: str | None
    phone_hash: str | None
    shared_devices: tuple[str, ...] = ()

    def weight(self, persona: str) -> float:
        """Return the weight of ``persona`` in this customer's mix."""
        return self.persona_mix[persona]

    def identifiers(self) -> set[str]:
        """Return every identifier that belongs to this customer."""
        found = {self.customer_id, *self.cookies, *self.devices}
        found.update(x for x in (self.card_id, self.email_hash, self.phone_hash) if x)
        return found

    def ground_truth(self) -> dict[str, object]:
        """Return the customer as a plain dict for ``ground_truth.jsonl``."""
        return {
            "customer_id": self.customer_id,
            "index": self.index,
            "dominant_persona": self.dominant_persona,
            "persona_mix": self.persona_mix,
            "category_affinity": self.category_affinity,
            "price_sensitivity": self.price_sensitivity,
            "responsiveness": self.responsiveness,
            "consent": self.consent,
            "peak_hour": self.peak_hour,
            "timezone": self.timezone,
            "home_store": self.home_store,
            "tier": self.tier,
            "anonymous_only": self.anonymous_only,
            "app_user": self.app_user,
            "signup_day": self.signup_day,
            "erasure_day": self.erasure_day,
            "card_id": self.card_id,
            "email_hash": self.email_hash,
            "phone_hash": self.phone_hash,
            "cookies": list(self.cookies),
            "devices": list(self.devices),
            "shared_devices": list(self.shared_devices),
        }


@dataclass(frozen=True)
class World:
    """The customers of one simulation and the catalog facts they were drawn against."""

    config: SimulationConfig
    customers: tuple[Customer, ...]
    categories: tuple[str, ...]
    by_id: dict[str, Customer] = field(repr=False)

    def customer(self, customer_id: str) -> Customer:
        """Return a customer by id; ``KeyError`` names the id when unknown."""
        try:
            return self.by_id[customer_id]
        except KeyError:
            message = f"unknown customer {customer_id!r}"
            raise KeyError(message) from None


def synthetic_contacts(seed: int, index: int, namespace: str = "") -> tuple[str, str]:
    """Return the raw (email, phone) a customer would type; only their hashes are kept.

    >>> synthetic_contacts(7, 42)
    ('user42.s7@example.test', '+44 7700 000042')
    """
    tag = f"{namespace}s{seed}"
    return f"user{index}.{tag}@example.test", f"+44 7700 {index % 1_000_000:06d}"


def _dirichlet(rng: random.Random, n: int, alpha: float) -> list[float]:
    draws = [rng.gammavariate(alpha, 1.0) for _ in range(n)]
    total = sum(draws) or 1.0
    return [d / total for d in draws]


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def make_customer(
    config: SimulationConfig,
    catalog: Catalog,
    index: int,
    *,
    namespace: str = "",
    customer_id: str | None = None,
) -> Customer:
    """Draw one customer from the world distribution, seeded by ``(seed, namespace, index)``."""
    rng = random.Random(f"{config.seed}:{namespace}:{index}:traits")
    dominant = rng.choices(PERSONAS, weights=_DOMINANT_SHARES)[0]
    noise = _dirichlet(rng, len(PERSONAS), 0.6)
    mix = {
        p: (_DOMINANT_WEIGHT if p == dominant else 0.0) + (1 - _DOMINANT_WEIGHT) * w
        for p, w in zip(PERSONAS, noise, strict=True)
    }
    categories = sorted(catalog.categories)
    affinity = dict(zip(categories, _dirichlet(rng, len(categories), 0.4), strict=True))
    price_sensitivity = _clip(0.8 * rng.betavariate(2.0, 2.5) + 0.4 * mix["discount_hunter"])
    responsiveness = {c: rng.betavariate(2.0, 3.0) for c in MESSAGE_CHANNELS}
    responsiveness["messenger"] = _clip(responsiveness["messenger"] + 0.45 * mix["social"])
    responsiveness["push"] = _clip(
        responsiveness["push"] + 0.3 * mix["social"] + 0.3 * mix["newcomer"]
    )

    anonymous_only = rng.random() < config.anonymous_only_share
    app_user = not anonymous_only and rng.random() < _clip(
        0.45 + 0.4 * mix["newcomer"] + 0.2 * mix["social"]
    )
    stores = sorted(catalog.stores)
    home_store = rng.choice(stores)
    late = dominant == "procrastinator"
    peak_hour = rng.choice(_LATE_PEAK_HOURS if late else _PEAK_HOURS)
    tier = rng.choices(_TIERS, weights=_TIER_SHARES)[0]

    consent = {
        "email": rng.random() < 0.8,
        "push": app_user and rng.random() < 0.6 + 0.3 * mix["social"],
        "sms": rng.random() < 0.3,
        "messenger": rng.random() < 0.25 + 0.5 * mix["social"],
    }
    if anonymous_only:
        consent = dict.fromkeys(MESSAGE_CHANNELS, False)

    cookies = tuple(f"an-{rng.getrandbits(64):016x}" for _ in range(1 + (rng.random() < 0.4)))
    devices: tuple[str, ...] = ()
    if app_user:
        devices = tuple(f"dv-{rng.getrandbits(64):016x}" for _ in range(1 + (rng.random() < 0.2)))

    signup_day: int | None = 0
    if anonymous_only:
        signup_day = None
    elif dominant == "newcomer" and config.days > 1 and rng.random() < 0.7:
        signup_day = rng.randrange(1, config.days)
    erasure_day = None
    if not anonymous_only and rng.random() < 0.003:
        erasure_day = rng.randrange(config.days)
        if signup_day is not None and erasure_day < signup_day:
            erasure_day = None

    email, phone = synthetic_contacts(config.seed, index, namespace)
    known = not anonymous_only
    has_phone = known and rng.random() < 0.6
    return Customer(
        index=index,
        customer_id=customer_id or f"cu-{index:06d}",
        persona_mix=mix,
        dominant_persona=dominant,
        category_affinity=affinity,
        price_sensitivity=price_sensitivity,
        responsiveness=responsiveness,
        consent=consent,
        peak_hour=peak_hour,
        timezone=catalog.store(home_store).timezone,
        home_store=home_store,
        tier=tier,
        anonymous_only=anonymous_only,
        app_user=app_user,
        signup_day=signup_day,
        erasure_day=erasure_day,
        cookies=cookies,
        devices=devices,
        card_id=f"ca-{rng.randrange(10**12):012d}" if known else None,
        email_hash=hash_email(email, key=config.contact_hash_key) if known else None,
        phone_hash=hash_phone(phone, key=config.contact_hash_key) if has_phone else None,
    )


def _share_devices(config: SimulationConfig, customers: list[Customer]) -> None:
    # Households are consecutive pairs; the draw is per pair so it ignores iteration order.
    for first in range(0, len(customers) - 1, 2):
        owner, partner = customers[first], customers[first + 1]
        rng = random.Random(f"{config.seed}:household:{first // 2}")
        if rng.random() >= config.shared_device_share:
            continue
        if not owner.devices or partner.anonymous_only:
            continue
        device = owner.devices[0]
        customers[first] = replace(owner, shared_devices=(device,))
        customers[first + 1] = replace(
            partner,
            app_user=True,
            devices=(*partner.devices, device),
            shared_devices=(device,),
        )


def make_world(config: SimulationConfig, catalog: Catalog) -> World:
    """Draw ``config.customers`` customers; a few households share one app device."""
    customers = [make_customer(config, catalog, i) for i in range(config.customers)]
    _share_devices(config, customers)
    return World(
        config=config,
        customers=tuple(customers),
        categories=tuple(sorted(catalog.categories)),
        by_id={c.customer_id: c for c in customers},
    )
