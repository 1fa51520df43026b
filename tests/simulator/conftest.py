"""A small simulated world shared by the simulator tests (simulated once per session)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from features.catalog import Catalog, load_catalog
from features.events import Event
from features.topics import EVENT_TOPICS
from features.validation import validate
from simulator import FileSink, SimulationConfig, SimulationStats, simulate

CONFIG = SimulationConfig(customers=500, days=7, seed=11)


@dataclass(frozen=True)
class Simulated:
    directory: Path
    config: SimulationConfig
    stats: SimulationStats

    def lines(self, topic: str) -> list[bytes]:
        return (self.directory / f"{topic}.jsonl").read_bytes().splitlines()

    def truth(self) -> list[dict]:
        return [orjson.loads(line) for line in self.lines("ground_truth")]

    def events(self) -> list[Event]:
        """Every valid event once (duplicates dropped), in event-time order."""
        found: dict[str, Event] = {}
        for topic in EVENT_TOPICS:
            for line in self.lines(topic):
                event = validate(line, key=self.config.contact_hash_key)
                if isinstance(event, Event):
                    found.setdefault(event.event_id, event)
        return sorted(found.values(), key=lambda e: (e.event_time, e.event_id))


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def simulated(tmp_path_factory: pytest.TempPathFactory, catalog: Catalog) -> Iterator[Simulated]:
    directory = tmp_path_factory.mktemp("sim")
    stats = simulate(CONFIG, catalog, FileSink(directory))
    yield Simulated(directory, CONFIG, stats)


@pytest.fixture(scope="session")
def events(simulated: Simulated) -> list[Event]:
    return simulated.events()


@pytest.fixture(scope="session")
def truth(simulated: Simulated) -> dict[str, dict]:
    return {row["customer_id"]: row for row in simulated.truth()}


@pytest.fixture(scope="session")
def owners(truth: dict[str, dict]) -> dict[str, set[str]]:
    """Which ground-truth customers each identifier belongs to."""
    found: dict[str, set[str]] = {}
    for customer_id, row in truth.items():
        ids = [customer_id, *row["cookies"], *row["devices"]]
        ids += [row[k] for k in ("card_id", "email_hash", "phone_hash") if row[k]]
        for identifier in ids:
            found.setdefault(identifier, set()).add(customer_id)
    return found
