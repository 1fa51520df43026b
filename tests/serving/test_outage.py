"""Store outage against a real Redis: degraded answers, never a 5xx, recovery after restart."""

from __future__ import annotations

import pytest

from features.store import open_store
from flows.rebuild import write_to_store
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
    private_redis_server, redis_store, recomputed, make_client, customers
):
    client = make_client(redis_store)
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
