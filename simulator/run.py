"""Run the simulation day by day and write every message to a sink in arrival order.

After all customers have lived day ``d`` nothing can still arrive on day ``d`` (later
activity only moves forward in time), so that day's lines are sorted by
``(arrival, id)`` and written. Output is byte-identical for the same config.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from features.catalog import Catalog
from features.topics import DECISIONS
from simulator.activity import run_day
from simulator.emit import Line
from simulator.sinks import EventSink
from simulator.state import CustomerState, Sim
from simulator.world import SimulationConfig, World, make_world

Progress = Callable[[int, int], None]


@dataclass
class SimulationStats:
    """What a run wrote: messages per topic, noise counts and speed.

    ``messages`` counts every line written (events, duplicates, malformed lines and
    decisions); ``events_per_second`` is ``messages`` over the wall time.
    """

    customers: int = 0
    days: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    decisions: int = 0
    duplicates: int = 0
    late: int = 0
    malformed: int = 0
    malformed_by_kind: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def events(self) -> int:
        """Lines written to the ``events.*`` topics (including noise)."""
        return self.messages - self.decisions

    @property
    def events_per_second(self) -> float:
        """Messages written per second of wall time."""
        return self.messages / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        """Return the stats as plain values (for JSON)."""
        return {
            "customers": self.customers,
            "days": self.days,
            "messages": self.messages,
            "events": self.events,
            "decisions": self.decisions,
            "duplicates": self.duplicates,
            "late": self.late,
            "malformed": self.malformed,
            "malformed_by_kind": dict(sorted(self.malformed_by_kind.items())),
            "by_topic": dict(sorted(self.by_topic.items())),
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_second": round(self.events_per_second, 1),
        }


def _write(sink: EventSink, lines: list[Line], stats: SimulationStats) -> None:
    counts = stats.by_topic
    write = sink.write
    for _arrival, _sort_id, topic, key, value in lines:
        write(topic, key, value)
        counts[topic] = counts.get(topic, 0) + 1
    stats.messages += len(lines)


def write_ground_truth(world: World, path: Path) -> None:
    """Write one JSON line per customer with its hidden traits and identifiers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for customer in world.customers:
            handle.write(orjson.dumps(customer.ground_truth()) + b"\n")


def simulate(
    config: SimulationConfig,
    catalog: Catalog,
    sink: EventSink,
    progress: Progress | None = None,
    *,
    ground_truth: Path | str | None = None,
) -> SimulationStats:
    """Simulate ``config.days`` days of ``config.customers`` customers into ``sink``.

    Writes the ground truth to ``ground_truth`` (default: the sink's
    ``ground_truth_path``, if any), calls ``progress(days_done, days)`` after each day,
    and closes the sink at the end.
    """
    started = time.perf_counter()
    world = make_world(config, catalog)
    sim = Sim(world, catalog)
    states = [CustomerState(sim, customer) for customer in world.customers]
    stats = SimulationStats(customers=len(states), days=config.days)
    try:
        for day in range(config.days):
            sim.today = today = sim.day(day)
            for st in states:
                run_day(st, today)
            _write(sink, sim.emitter.drain(day), stats)
            if progress is not None:
                progress(day + 1, config.days)
        _write(sink, sim.emitter.drain_all(), stats)
        truth_path = ground_truth or getattr(sink, "ground_truth_path", None)
        if truth_path is not None:
            write_ground_truth(world, Path(truth_path))
    finally:
        sink.close()
    noise = sim.emitter.noise
    stats.decisions = stats.by_topic.get(DECISIONS, 0)
    stats.duplicates = noise.duplicates
    stats.late = noise.late
    stats.malformed = noise.malformed
    stats.malformed_by_kind = dict(noise.malformed_by_kind)
    stats.elapsed_s = time.perf_counter() - started
    return stats
