"""Serving on a Redis Cluster: the same answers as on one store, erasure on every node."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from features.pipeline import Recomputed
from features.store import OnlineStore, open_store
from flows.rebuild import write_to_store
from omnioffer.services import RedisClusterServers
from omnioffer.settings import Settings
from tests.serving.conftest import AppFactory, channel_body

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster_store(
    redis_cluster: RedisClusterServers, recomputed: Recomputed
) -> Iterator[OnlineStore]:
    store = open_store(
        "redis", redis_url=redis_cluster.url, namespace=f"s{uuid.uuid4().hex[:10]}", cluster=True
    )
    write_to_store(recomputed, store)
    yield store
    store.close()


def _ranked(answer: dict) -> list[tuple[str, float]]:
    return [(offer["offer_id"], offer["score"]) for offer in answer["offers"]]


def test_offers_and_channel_on_a_cluster_equal_those_on_sqlite(
    cluster_store, filled_store, make_client: AppFactory, recomputed: Recomputed,
    customers: list[str], tmp_path: Path, redis_cluster: RedisClusterServers,
) -> None:  # fmt: skip
    settings = Settings(data_dir=tmp_path / "data", explore_epsilon=0.0)
    on_cluster = make_client(cluster_store, settings=settings)
    on_sqlite = make_client(filled_store, settings=settings)
    # Visitors merged into a customer: their identity key and the customer's profile
    # usually sit on different nodes.
    visitors = sorted(
        (identifier, owner)
        for identifier, owner in recomputed.identity.items()
        if identifier.startswith("anonymous_id:") and owner.startswith("customer_id:")
    )[:5]
    holder = redis_cluster.keys(f"{cluster_store.namespace}:*")  # type: ignore[attr-defined]
    assert any(
        holder[cluster_store.identity_key(v)] != holder[cluster_store.profile_key(owner)]  # type: ignore[attr-defined]
        for v, owner in visitors
    ), "some visitor's identity key is on another node than the customer's profile"
    bodies = [{"customer_id": c} for c in customers[:8]]
    bodies += [{"anonymous_id": v.split(":", 1)[1]} for v, _owner in visitors]
    for ids in bodies:
        body = {**ids, "context": {"channel": "web", "page": "home"}, "limit": 5}
        cluster_answer = on_cluster.post("/v1/offers", json=body).json()
        sqlite_answer = on_sqlite.post("/v1/offers", json=body).json()
        assert cluster_answer["degraded"] is False and cluster_answer["cold_start"] is False
        assert _ranked(cluster_answer), ids
        assert _ranked(cluster_answer) == _ranked(sqlite_answer), ids
    for customer in customers[:8]:
        cluster_answer = on_cluster.post("/v1/channel", json=channel_body(customer)).json()
        sqlite_answer = on_sqlite.post("/v1/channel", json=channel_body(customer)).json()
        assert cluster_answer["degraded"] is False
        for key in ("channel", "suppressed_by", "alternatives"):
            assert cluster_answer[key] == sqlite_answer[key], (customer, key)
    assert on_cluster.get("/readyz").status_code == 200


def test_erasure_on_a_cluster_leaves_no_key_of_the_person_on_any_node(
    cluster_store, make_client: AppFactory, redis_cluster: RedisClusterServers,
    recomputed: Recomputed, customers: list[str],
) -> None:  # fmt: skip
    client = make_client(cluster_store)
    customer = customers[0]
    profile_id = f"customer_id:{customer}"
    identifiers = [i for i, owner in recomputed.identity.items() if owner == profile_id]
    namespace = cluster_store.namespace  # type: ignore[attr-defined]

    def naming(needle: str) -> list[str]:
        return [key for key in redis_cluster.keys(f"{namespace}:*") if needle in key]

    assert naming(profile_id)
    erased = client.delete(f"/v1/customers/{customer}")
    assert erased.status_code == 200, erased.text
    assert naming(profile_id) == []
    for identifier in identifiers:
        assert naming(identifier) == []
    answer = client.post(
        "/v1/offers", json={"customer_id": customer, "context": {"channel": "web"}}
    )
    assert answer.json()["cold_start"] is True
