"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from omnioffer.services import KafkaBroker, RedisServer

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
def kafka_broker() -> Iterator[KafkaBroker]:
    """Yield a running throwaway Tansu (Kafka-protocol) broker."""
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture(scope="module")
def private_redis_server() -> Iterator[RedisServer]:
    """Yield a Redis server of the module's own, which its tests may stop and restart.

    Outage tests use it so that stopping Redis never disturbs the session server.
    """
    with RedisServer() as server:
        yield server
