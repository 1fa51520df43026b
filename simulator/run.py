"""Run the simulation day by day and write every message to a sink in arrival order.

After all customers have lived day ``d`` nothing can still arrive on day ``d`` (later
activity only moves forward in time), so that day's lines are sorted by
``(arrival, id)`` and written. Output is byte-identical for the same config.
"""

from __future__ import annotations

import gc
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

import orjson

from features.catalog import Catalog
from features.topics import DECISIONS
from simulator.emit import Line
from simulator.shards import ParallelRun, ShardRun
from simulator.sinks import EventSink
from simulator.world import SimulationConfig, World, make_world

Progress = Callable[[int, int], None]
PARALLEL_FROM = 50_000  # customer-days from which worker processes pay off


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
    write = sink.write
    for _arrival, _sort_id, topic, key, value in lines:
        write(topic, key, value)
    for topic, count in Counter(map(itemgetter(2), lines)).items():
        stats.by_topic[topic] = stats.by_topic.get(topic, 0) + count
    stats.messages += len(lines)


def write_ground_truth(world: World, path: Path) -> None:
    """Write one JSON line per customer with its hidden traits and identifiers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for customer in world.customers:
            handle.write(orjson.dumps(customer.ground_truth()) + b"\n")


def default_workers(config: SimulationConfig) -> int:
    """Return how many processes to use: one for small worlds, else up to 4 cores.

    Worker processes cost about a second to start, which pays off from a few hundred
    thousand events on.
    """
    if config.customers * config.days < PARALLEL_FROM:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def simulate(
    config: SimulationConfig,
    catalog: Catalog,
    sink: EventSink,
    progress: Progress | None = None,
    *,
    ground_truth: Path | str | None = None,
    workers: int | None = None,
) -> SimulationStats:
    """Simulate ``config.days`` days of ``config.customers`` customers into ``sink``.

    Writes the ground truth to ``ground_truth`` (default: the sink's
    ``ground_truth_path``, if any), calls ``progress(days_done, days)`` after each day,
    and closes the sink at the end. ``workers`` processes share the customers (default:
    :func:`default_workers`); the output is the same for any number of workers.
    """
    started = time.perf_counter()
    workers = default_workers(config) if workers is None else workers
    if workers < 1:
        message = f"workers must be >= 1; got {workers}"
        raise ValueError(message)
    stats = SimulationStats(customers=config.customers, days=config.days)
    # Millions of queued lines would make the cyclic GC rescan them over and over, and
    # the simulator makes no reference cycles: reference counting frees everything.
    collecting = gc.isenabled()
    gc.disable()
    parallel = ParallelRun(config, catalog, workers) if workers > 1 else None
    try:
        world = make_world(config, catalog)
        serial = None if parallel else ShardRun(config, catalog, world=world)
        batches = parallel.batches(config.days) if parallel else serial.batches()  # type: ignore[union-attr]
        for day, batch in enumerate(batches, start=1):
            _write(sink, batch, stats)
            if progress is not None and day <= config.days:
                progress(day, config.days)
        truth_path = ground_truth or getattr(sink, "ground_truth_path", None)
        if truth_path is not None:
            write_ground_truth(world, Path(truth_path))
    finally:
        if parallel is not None:
            parallel.close()
        if collecting:
            gc.enable()
        sink.close()
    noise = parallel.noise if parallel else serial.noise  # type: ignore[union-attr]
    stats.decisions = stats.by_topic.get(DECISIONS, 0)
    stats.duplicates = noise.duplicates
    stats.late = noise.late
    stats.malformed = noise.malformed
    stats.malformed_by_kind = dict(noise.malformed_by_kind)
    stats.elapsed_s = time.perf_counter() - started
    return stats
