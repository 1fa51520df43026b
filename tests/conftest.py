"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from features.events import Event
from omnioffer.services import KafkaBroker, RedisClusterServers, RedisServer

# ---------------------------------------------------------------------------
# Real local services (one per test session).
# A service that cannot start raises ServiceError, so the tests that need it
# error out with the reason and the server's log tail; they are never skipped.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Yield a running throwaway Redis server."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """Yield a running throwaway Redis Cluster of three masters."""
    with RedisClusterServers() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """Yield a running throwaway Tansu (Kafka-protocol) broker."""
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture
def private_kafka_broker() -> Iterator[KafkaBroker]:
    """Yield a broker of the test's own, for tests that fill the fixed ``events.*`` topics."""
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture(scope="module")
def private_redis_server() -> Iterator[RedisServer]:
    """Yield a Redis server of the module's own, which its tests may stop and restart.

    Outage tests use it so that stopping Redis never disturbs the session server.
    """
    with RedisServer() as server:
        yield server


# ---------------------------------------------------------------------------
# A small simulated world, shared by the pipeline and flow tests.
# ---------------------------------------------------------------------------
TEST_HASH_KEY = b"omnioffer-test-key"


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Simulate 120 customers over 6 days into a file event log; return its folder."""
    from features.catalog import load_catalog
    from simulator import FileSink, SimulationConfig, simulate

    out = tmp_path_factory.mktemp("small_world")
    config = SimulationConfig(customers=120, days=6, seed=11, contact_hash_key=TEST_HASH_KEY)
    simulate(config, load_catalog(), FileSink(out))
    return out


@pytest.fixture(scope="session")
def small_world_events(small_world: Path) -> list[Event]:
    """The valid events of :func:`small_world`, in log order."""
    from features.eventlog import load_events

    return load_events(small_world, key=TEST_HASH_KEY)
