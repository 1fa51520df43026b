"""Fixtures for the serving tests: a store filled from the small world, an app factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from features.pipeline import Recomputed, recompute
from features.store import OnlineStore, open_store
from flows.rebuild import write_to_store
from omnioffer.settings import Settings
from serving.app import create_app

# The small world runs from 2026-03-02 for 6 days: decide as of its last day.
WORLD_NOW = datetime(2026, 3, 8, 12, tzinfo=UTC)


@pytest.fixture(scope="session")
def recomputed(small_world_events) -> Recomputed:
    """The small world's profiles and identity map, as the feature flow would write them."""
    return recompute(small_world_events)


@pytest.fixture
def filled_store(recomputed: Recomputed, tmp_path: Path) -> Iterator[OnlineStore]:
    """A SQLite store holding the small world's profiles."""
    with open_store("sqlite", sqlite_path=tmp_path / "online.sqlite3") as store:
        write_to_store(recomputed, store)
        yield store


@pytest.fixture
def customers(recomputed: Recomputed) -> list[str]:
    """Customer ids with a profile, sorted."""
    return sorted(p.split(":", 1)[1] for p in recomputed.profiles if p.startswith("customer_id:"))


AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[AppFactory]:
    """Return a factory of started TestClients; every one is closed at the end of the test."""
    clients: list[TestClient] = []

    def make(store: OnlineStore, *, settings: Settings | None = None, **kwargs) -> TestClient:
        settings = settings or Settings(data_dir=tmp_path / "data")
        kwargs.setdefault("clock", lambda: WORLD_NOW)
        client = TestClient(create_app(settings, store=store, **kwargs))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def offers_body(**ids: str) -> dict:
    return {**ids, "context": {"channel": "web", "page": "home"}, "limit": 3}


def channel_body(customer_id: str, **message) -> dict:
    message.setdefault("campaign", "spring")
    message.setdefault("kind", "marketing")
    return {"customer_id": customer_id, "message": message}
