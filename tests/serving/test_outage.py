"""Store outage against a real Redis: degraded answers, never a 5xx, recovery after restart."""

from __future__ import annotations

import pytest

from features.store import open_store
from flows.rebuild import write_to_store
from omnioffer.settings import Settings
from tests.serving.conftest import channel_body, offers_body


@pytest.fixture
def redis_store(private_redis_server, recomputed):
    private_redis_server.start()  # an earlier test may have left it stopped
    store = open_store("redis", redis_url=private_redis_server.url, namespace="outage")
    write_to_store(recomputed, store)
    yield store
    store.close()
    private_redis_server.start()


def test_stopping_redis_mid_test_degrades_answers_and_restarting_recovers(
    private_redis_server, redis_store, recomputed, make_client, customers, tmp_path
):
    # Every request tries the store here; the breaker has a test of its own below.
    settings = Settings(data_dir=tmp_path / "data", store_breaker_failures=100)
    client = make_client(redis_store, settings=settings)
    customer = customers[0]
    healthy = client.post("/v1/offers", json=offers_body(customer_id=customer)).json()
    assert healthy["degraded"] is False and healthy["cold_start"] is False

    private_redis_server.stop()
    for _ in range(3):
        offers = client.post("/v1/offers", json=offers_body(customer_id=customer))
        assert offers.status_code == 200
        body = offers.json()
        assert body["degraded"] is True
        assert body["offers"], "context-only answer: popular eligible offers"
        channel = client.post("/v1/channel", json=channel_body(customer))
        assert channel.status_code == 200
        assert channel.json()["degraded"] is True
        assert channel.json()["channel"] == "none"
        assert channel.json()["suppressed_by"] == "store_unavailable"
    assert client.get("/readyz").status_code == 503
    assert client.get(f"/v1/profiles/{customer}").status_code == 503
    metrics = client.get("/metrics").text
    assert 'omnioffer_serve_fallbacks_total{cause="store_unavailable"} 6.0' in metrics
    for endpoint in ("/v1/offers", "/v1/channel"):
        assert f'errors_total{{endpoint="{endpoint}",kind="server"}}' not in metrics

    private_redis_server.start()  # empty again: no persistence
    write_to_store(recomputed, redis_store)
    recovered = client.post("/v1/offers", json=offers_body(customer_id=customer)).json()
    assert recovered["degraded"] is False and recovered["cold_start"] is False
    assert client.get("/readyz").status_code == 200


def test_after_repeated_store_failures_decisions_skip_the_store_until_it_answers_again(
    private_redis_server, redis_store, recomputed, make_client, customers, tmp_path
):
    settings = Settings(data_dir=tmp_path / "data", store_breaker_failures=3,
                        store_breaker_reset_s=3600)  # fmt: skip
    client = make_client(redis_store, settings=settings)
    customer = customers[0]
    private_redis_server.stop()
    for _ in range(3):  # each waits for the store, and fails
        assert client.post("/v1/offers", json=offers_body(customer_id=customer)).json()["degraded"]
    assert client.get("/readyz").json()["store_breaker"] == "open"
    offers = client.post("/v1/offers", json=offers_body(customer_id=customer))
    channel = client.post("/v1/channel", json=channel_body(customer))
    assert offers.status_code == 200 and offers.json()["degraded"] and offers.json()["offers"]
    assert channel.status_code == 200 and channel.json()["channel"] == "none"
    assert channel.json()["suppressed_by"] == "store_unavailable"
    metrics = client.get("/metrics").text
    assert 'omnioffer_serve_fallbacks_total{cause="store_unavailable"} 3.0' in metrics
    assert 'omnioffer_serve_fallbacks_total{cause="store_breaker_open"} 2.0' in metrics
    assert "omnioffer_serve_store_breaker_open 1.0" in metrics
    # The store is back but the breaker is still open: answers stay degraded until it
    # lets one decision try the store (after store_breaker_reset_s; here, at once).
    private_redis_server.start()
    write_to_store(recomputed, redis_store)
    assert client.post("/v1/offers", json=offers_body(customer_id=customer)).json()["degraded"]
    client.app.state.engine.breaker.half_open()
    recovered = client.post("/v1/offers", json=offers_body(customer_id=customer)).json()
    assert recovered["degraded"] is False and recovered["cold_start"] is False
    assert client.get("/readyz").json()["store_breaker"] == "closed"
    assert "omnioffer_serve_store_breaker_open 0.0" in client.get("/metrics").text


def test_only_store_errors_count_toward_opening_the_breaker():
    from pybreaker import CircuitBreakerError

    from features.store import StoreError, StoreUnavailableError
    from serving.engine import store_breaker
    from serving.metrics import ServingMetrics

    breaker = store_breaker(ServingMetrics(), failures=2, reset_s=3600)

    def bug() -> None:
        raise ValueError("a bug, not an outage")

    def one_bad_key() -> None:
        raise StoreError("redis store read_resolved failed: WRONGTYPE")

    def down() -> None:
        raise StoreUnavailableError("redis read: timed out")

    for _ in range(3):
        with pytest.raises(ValueError):
            breaker.call(bug)
        with pytest.raises(StoreError):
            breaker.call(one_bad_key)
    assert breaker.current_state == "closed"
    for _ in range(2):  # the failure that opens it is raised as itself
        with pytest.raises(StoreUnavailableError):
            breaker.call(down)
    assert breaker.current_state == "open"
    with pytest.raises(CircuitBreakerError):
        breaker.call(lambda: None)
