"""The running simulation: shared context, the day being simulated, and per-customer state.

Each customer owns two random streams seeded by ``(seed, index)``: one for behaviour and
one for noise, so changing a noise rate leaves the behaviour (and the ground truth) as is.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone

from features.catalog import Catalog, Product, Store
from features.decisions import Decision
from features.events import Event, Item
from simulator.emit import DAY, Clock, Emitter
from simulator.policy import Campaign, Table, campaigns_for_day, featured_offers
from simulator.truth import OfferFacts, offer_facts
from simulator.world import MESSAGE_CHANNELS, Customer, World

ABANDONED_MEMORY_S = 7 * DAY  # how long an abandoned cart can still be brought back


class Sim:
    """Everything one run shares: the world, catalog facts, the clock and the emitter."""

    def __init__(self, world: World, catalog: Catalog) -> None:
        self.world = world
        self.config = world.config
        self.catalog = catalog
        self.facts: dict[str, OfferFacts] = offer_facts(catalog)
        self.clock = Clock(world.config.start)
        self.emitter = Emitter(world.config)
        self.today = self.day(0)
        self.products: dict[str, list[Product]] = {
            category: catalog.products_in(category) for category in world.categories
        }
        self.category_names = {k: v.name.lower() for k, v in catalog.categories.items()}
        self.stores: dict[str, Store] = catalog.stores
        self.stores_by_zone: dict[str, list[str]] = {}
        for store_id in sorted(catalog.stores):
            zone = catalog.stores[store_id].timezone
            self.stores_by_zone.setdefault(zone, []).append(store_id)

    def day(self, day: int) -> Today:
        """Return the context of simulation day ``day`` (campaigns, featured offers).

        The run loop keeps the current one in :attr:`today`.
        """
        start_ts = self.emitter.start_ts + day * DAY
        start = self.clock.at("UTC", start_ts)
        seed = self.config.seed
        return Today(
            day=day,
            start_ts=start_ts,
            campaigns=campaigns_for_day(seed, day, start, self.facts),
            featured={
                ch: featured_offers(seed, day, ch, start, self.facts) for ch in ("web", "app")
            },
        )


@dataclass(frozen=True)
class Today:
    """The simulation day: its UTC window start and the day's campaigns and placements."""

    day: int
    start_ts: int
    campaigns: tuple[Campaign, ...]
    featured: dict[str, tuple[str, ...]]
    # Policy distributions already built today, by candidate-set key: most customers
    # share a few candidate sets, so each is scored once.
    tables: dict[tuple[object, ...], Table] = field(default_factory=dict)


class CustomerState:
    """What changes for one customer as the days go by, and its random streams."""

    __slots__ = (
        "_queue",
        "abandoned",
        "agenda",
        "card_seen",
        "category_cum",
        "consent_until",
        "customer",
        "day_start",
        "journeys",
        "known",
        "linked_devices",
        "n",
        "noise_rng",
        "offset",
        "points",
        "rng",
        "sim",
        "stop_ts",
        "tag",
        "tz",
        "zone",
    )

    def __init__(self, sim: Sim, customer: Customer) -> None:
        seed = sim.config.seed
        self.sim = sim
        self.customer = customer
        self.rng = random.Random(f"{seed}:{customer.index}:activity")
        self.noise_rng = random.Random(f"{seed}:{customer.index}:noise")
        self._queue = sim.emitter.event
        self.tag = f"{seed}-{customer.index:06d}-"
        self.n = 0
        self.zone = customer.timezone
        self.offset = 0
        self.day_start = -DAY
        self.tz: timezone = sim.clock.tz(self.zone, sim.emitter.start_ts)
        self.known = False
        self.card_seen = False
        self.linked_devices: set[str] = set()
        self.consent_until = {
            ch: (math.inf if customer.consent[ch] else -math.inf) for ch in MESSAGE_CHANNELS
        }
        weights = [customer.category_affinity[c] for c in sim.world.categories]
        self.category_cum = [sum(weights[: i + 1]) for i in range(len(weights))]
        self.stop_ts = sim.emitter.end_ts
        if customer.erasure_day is not None:
            self.stop_ts = sim.emitter.start_ts + (customer.erasure_day + 1) * DAY - 120
        self.agenda: list[tuple[int, int, str, object]] = []
        # Carts left without a planned return: cart id -> (channel, device, items, ts).
        self.abandoned: dict[str, tuple[str, str | None, list[Item], int]] = {}
        self.journeys: list[int] = []  # when journey messages were delivered (last 7 days)
        self.points, lots = _opening_balance(self.rng, customer, sim.emitter.start_ts)
        for expires, points in lots:
            if expires - 30 * DAY >= sim.emitter.start_ts:
                self.schedule(expires - 30 * DAY, "expiry_notice", (expires, points))
            self.schedule(expires, "expire", points)

    def schedule(self, ts: int, kind: str, payload: object = None) -> None:
        """Put something the customer will do (or that happens to them) on the agenda."""
        self.n += 1
        heapq.heappush(self.agenda, (ts, self.n, kind, payload))

    def receive(self, ts: int, sequence: int, kind: str, payload: object) -> None:
        """Put something from outside the simulation on the agenda (see ``SteppedRun``).

        ``sequence`` orders arrivals at the same second; it is negative, so the entry
        goes before the customer's own plans at that second, and the customer's id
        counter is left alone: an arrival that has no effect changes nothing else.
        """
        heapq.heappush(self.agenda, (ts, sequence, kind, payload))

    def due(self, end_ts: int) -> tuple[int, str, object] | None:
        """Pop the next agenda entry before ``end_ts``, or return ``None``."""
        if self.agenda and self.agenda[0][0] < end_ts:
            ts, _, kind, payload = heapq.heappop(self.agenda)
            return ts, kind, payload
        return None

    def next_id(self, prefix: str) -> str:
        """Return a new id, unique in the run and stable for the seed, e.g. ``ev7-000001-3``."""
        self.n += 1
        return f"{prefix}{self.tag}{self.n}"

    def at(self, ts: int) -> datetime:
        """Return ``ts`` as an aware datetime in the customer's UTC offset of that day."""
        if self.day_start <= ts < self.day_start + DAY:
            return datetime.fromtimestamp(ts, self.tz)
        return self.sim.clock.at(self.zone, ts)

    def start_day(self, day_start: int) -> None:
        """Cache the UTC offset of the day starting at epoch second ``day_start``."""
        self.day_start = day_start
        self.tz = self.sim.clock.tz(self.zone, day_start + DAY // 2)
        self.offset = self.sim.clock.offset_seconds(self.zone, day_start + DAY // 2)

    def between(self, low: int, high: int) -> int:
        """Draw an integer in ``[low, high]`` (faster than ``Random.randint``)."""
        return low + int(self.rng.random() * (high - low + 1))

    def emit(self, event: Event, ts: int) -> None:
        """Queue an event of this customer; nothing is emitted after an erasure request."""
        if ts < self.stop_ts:
            self._queue(self.noise_rng, event, ts)

    def log_decision(self, decision: Decision, ts: int) -> None:
        """Queue a decision about this customer."""
        if ts < self.stop_ts:
            self.sim.emitter.decision(decision, ts)

    def category(self) -> str:
        """Draw a category by the customer's affinities."""
        cum = self.category_cum
        i = bisect.bisect_right(cum, self.rng.random() * cum[-1])
        return self.sim.world.categories[min(i, len(cum) - 1)]

    def product(self, category: str | None = None) -> Product:
        """Draw a product, from ``category`` or from a category drawn by affinity."""
        products = self.sim.products[category or self.category()]
        return products[int(self.rng.random() * len(products))]

    def local_ts(self, day_start_ts: int, local_hour: float) -> int:
        """Return the epoch second of ``local_hour`` on the simulated (UTC) day."""
        seconds = int(local_hour * 3600) - self.offset
        return day_start_ts + seconds % DAY

    def local_hour(self, ts: int) -> float:
        """Return the customer's local hour of day at ``ts``."""
        return ((ts + self.offset) % DAY) / 3600

    def can_message(self, channel: str, ts: int) -> bool:
        """Return whether the CRM may send on ``channel`` at ``ts`` (consent, app installed)."""
        if channel == "push" and not self.linked_devices:
            return False
        return ts < self.consent_until[channel]

    def poisson(self, lam: float) -> int:
        """Draw a Poisson count (Knuth's method: rates here are small)."""
        limit = math.exp(-lam)
        k, p = 0, self.rng.random()
        while p > limit:
            k += 1
            p *= self.rng.random()
        return k


def _opening_balance(
    rng: random.Random, customer: Customer, start_ts: int
) -> tuple[int, list[tuple[int, int]]]:
    # Members join with points from before the simulation, some of which expire soon.
    if customer.anonymous_only:
        return 0, []
    cap = {"basic": 1500, "silver": 3000, "gold": 6000}[customer.tier]
    points = rng.randint(0, cap)
    lots = []
    if points >= 50 and rng.random() < 0.5:
        expires = start_ts + int(rng.uniform(20, 75) * DAY)
        lots.append((expires, min(points, rng.randint(50, 500))))
    return points, lots
