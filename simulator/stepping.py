"""Run the simulation in steps, in a closed loop with a system that sends messages.

:class:`SteppedRun` lives every customer's days in steps of any length (an hour, say):
:meth:`~SteppedRun.advance` returns the clean events that happened up to a time, and
:meth:`~SteppedRun.deliver` hands a customer a message (:class:`Delivery`) that they react
to in later steps (see :mod:`simulator.journey_response`). Without deliveries the events
and the lines written to the sink are exactly those of :func:`simulator.run.simulate`.

>>> from datetime import UTC, datetime
>>> from features.catalog import load_catalog
>>> from simulator.world import SimulationConfig
>>> run = SteppedRun(SimulationConfig(customers=20, days=2, seed=3), load_catalog())
>>> first = run.advance(run.start_ts + 3600)
>>> all(e.event_time.timestamp() < run.start_ts + 3600 for e in first)
True
>>> at = datetime.fromtimestamp(run.now, UTC)
>>> run.deliver(Delivery("cu-000004", "email", at, "de-1", "journey:test", "how_to"))
>>> later = run.advance(run.end_ts)
>>> stats = run.close()
"""

from __future__ import annotations

import gc
import heapq
import time
from collections import Counter
from operator import itemgetter
from pathlib import Path

from features.catalog import Catalog
from features.events import Event
from features.topics import DECISIONS
from simulator.activity import advance_to, begin_day
from simulator.emit import DAY, Line
from simulator.journey_response import Delivery
from simulator.run import SimulationStats, write_ground_truth
from simulator.sinks import EventSink
from simulator.state import CustomerState, Sim
from simulator.world import SimulationConfig, World, make_world

__all__ = ["Delivery", "SteppedRun"]

_ORDER = itemgetter(0, 1)  # (ts, event id): unique, so events are never compared
_FIRST_DELIVERY = -(1 << 62)  # agenda order of deliveries: before own plans at a second


class SteppedRun:
    """The seeded simulation, advanced step by step, taking messages between steps.

    ``start_ts`` and ``end_ts`` are the simulated window in epoch seconds; ``now`` is how
    far it has run. The same config and the same deliveries in the same order give the
    same events. Events are returned when a step passes their event time; a sink, if
    given, gets every line (with noise and decisions) day by day, as ``simulate`` writes.
    """

    def __init__(
        self, config: SimulationConfig, catalog: Catalog, sink: EventSink | None = None
    ) -> None:
        self.config = config
        self.world: World = make_world(config, catalog)
        self.sim = Sim(self.world, catalog)
        self.states = [CustomerState(self.sim, c) for c in self.world.customers]
        self._by_id = {st.customer.customer_id: st for st in self.states}
        self.start_ts: int = self.sim.emitter.start_ts
        self.end_ts: int = self.sim.emitter.end_ts
        self.now = self.start_ts
        self.stats = SimulationStats(customers=config.customers, days=config.days)
        self._sink = sink
        self._day = -1  # the last day begun
        self._active: list[CustomerState] = []  # customers not gone on that day
        self._tap: list[tuple[int, Event]] = []
        self.sim.emitter.tap = self._tap
        self.sim.emitter.tap_only = sink is None  # nobody reads the lines: skip making them
        self._pending: list[tuple[int, str, Event]] = []  # heap of events not returned yet
        self._deliveries = 0
        self._closed = False
        self._started = time.perf_counter()

    def state(self, customer_id: str) -> CustomerState:
        """Return a customer's running state (ground truth, e.g. their abandoned carts)."""
        try:
            return self._by_id[customer_id]
        except KeyError:
            message = f"unknown customer {customer_id!r}; expected a world id like 'cu-000012'"
            raise KeyError(message) from None

    def advance(self, until_ts: int) -> list[Event]:
        """Simulate every customer up to epoch second ``until_ts`` (exclusive).

        Returns the clean events (no duplicate or malformed noise) with an event time
        before ``until_ts`` that were not returned before, sorted by (event time, id).
        Nothing happens after ``end_ts``.
        """
        self._check_open()
        target = min(until_ts, self.end_ts)
        # As in simulate(): the simulator makes no reference cycles, so the cyclic GC
        # would only rescan its many live objects.
        collecting = gc.isenabled()
        gc.disable()
        try:
            while self.now < target:
                day = (self.now - self.start_ts) // DAY
                if day > self._day:
                    self._begin(day)
                day_end = self.start_ts + (day + 1) * DAY
                step_end = min(target, day_end)
                for st in self._active:
                    agenda = st.agenda
                    if agenda and agenda[0][0] < step_end:
                        advance_to(st, step_end)
                self.now = step_end
                if step_end == day_end:
                    self._flush(self.sim.emitter.drain(day))
            return self._ready(until_ts)
        finally:
            if collecting:
                gc.enable()

    def deliver(self, delivery: Delivery) -> None:
        """Put the message on the customer's agenda at ``max(send_at, now)``."""
        self._check_open()
        st = self.state(delivery.customer_id)
        if delivery.offer_id is not None and delivery.offer_id not in self.sim.facts:
            message = f"unknown offer {delivery.offer_id!r}"
            raise KeyError(message)
        ts = max(int(delivery.send_at.timestamp()), self.now)
        st.receive(ts, _FIRST_DELIVERY + self._deliveries, "journey_message", delivery)
        self._deliveries += 1

    def close(self) -> SimulationStats:
        """Write the remaining lines and the ground truth to the sink, close it, and report.

        Days not simulated yet stay unsimulated; lines already queued for them are written.
        """
        if self._closed:
            return self.stats
        self._closed = True
        self.sim.emitter.tap = None
        try:
            self._flush(self.sim.emitter.drain_all())
            truth_path = getattr(self._sink, "ground_truth_path", None)
            if truth_path is not None:
                write_ground_truth(self.world, Path(truth_path))
        finally:
            if self._sink is not None:
                self._sink.close()
        stats = self.stats
        noise = self.sim.emitter.noise
        stats.decisions = stats.by_topic.get(DECISIONS, 0)
        stats.duplicates = noise.duplicates
        stats.late = noise.late
        stats.malformed = noise.malformed
        stats.malformed_by_kind = dict(noise.malformed_by_kind)
        stats.elapsed_s = time.perf_counter() - self._started
        return stats

    def _check_open(self) -> None:
        if self._closed:
            message = "the stepped run is closed"
            raise RuntimeError(message)

    def _begin(self, day: int) -> None:
        # Plan the day of everyone still there.
        self._day = day
        self.sim.today = today = self.sim.day(day)
        self._active = [st for st in self.states if begin_day(st, today)]

    def _flush(self, lines: list[Line]) -> None:
        # Write a batch of lines in log order (or drop them without a sink), and count them.
        if self._sink is not None:
            write = self._sink.write
            for _arrival, _sort_id, topic, key, value in lines:
                write(topic, key, value)
        by_topic = self.stats.by_topic
        for topic, count in Counter(map(itemgetter(2), lines)).items():
            by_topic[topic] = by_topic.get(topic, 0) + count
        self.stats.messages += len(lines)

    def _ready(self, until_ts: int) -> list[Event]:
        # Take the tapped and pending events before until_ts; keep later ones pending.
        pending = self._pending
        ready: list[tuple[int, str, Event]] = []
        for ts, event in self._tap:
            if ts < until_ts:
                ready.append((ts, event.event_id, event))
            else:
                heapq.heappush(pending, (ts, event.event_id, event))
        self._tap.clear()
        while pending and pending[0][0] < until_ts:
            ready.append(heapq.heappop(pending))
        ready.sort(key=_ORDER)
        return [entry[2] for entry in ready]
