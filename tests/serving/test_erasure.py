"""Erasure removes every trace of a person: store, identity map, contacts, decision log."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from features.attribution import LabelledExample, Labels, decode_example, encode_example
from features.decisions import Choice, Decision
from features.eventlog import read_topic, topic_path
from features.events import Identifiers
from features.journeys import Entered
from features.journeys import encode_record as encode_journey_record
from features.topics import CONSENT, DECISION_ERASURES, DECISIONS, MESSAGES_OUTBOUND, TRIGGERS
from omnioffer.services import create_topics
from omnioffer.settings import Settings
from serving.decision_log import read_decisions
from tests.serving.conftest import channel_body, offers_body


def test_erasure_removes_every_trace(filled_store, make_client, customers, tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    client = make_client(filled_store, settings=settings)
    person, other = customers[0], customers[1]
    profile_id = f"customer_id:{person}"
    identifiers = filled_store.identifiers_of(profile_id)
    weak = next(i for i in identifiers if not i.startswith("customer_id:"))
    field, _, value = weak.partition(":")
    for ids in ({"customer_id": person}, {field: value}, {"customer_id": other}):
        assert client.post("/v1/offers", json=offers_body(**ids)).status_code == 200
    for customer in (person, other):
        client.post("/v1/channel", json=channel_body(customer, kind="transactional"))
    assert filled_store.contacts_of(profile_id)

    # Labelled examples the outcome join wrote (logged training data) for both people.
    examples = settings.data_dir / "examples.jsonl"
    examples.parent.mkdir(parents=True, exist_ok=True)
    examples.write_bytes(b"".join(
        encode_example(LabelledExample(
            decision=Decision(decision_id=f"d-{c}", decided_at=datetime(2026, 3, 8, tzinfo=UTC),
                              surface="offers", ids=Identifiers(customer_id=c), policy="p",
                              chosen=[Choice(offer_id="of-1", channel="web", propensity=0.5)]),
            labels=Labels(converted=True), complete=True, propensity=0.5,
        )) + b"\n"
        for c in (person, other)
    ))

    # What the journeys logged about both people (messages.outbound and triggers).
    journey_logs = [topic_path(settings.event_log_dir, t) for t in (MESSAGES_OUTBOUND, TRIGGERS)]
    for path in journey_logs:
        path.write_bytes(b"".join(
            encode_journey_record(Entered(journey="cart_abandonment", profile_id=f"customer_id:{c}",
                                          entry_id="e-1", at=datetime(2026, 3, 8, tzinfo=UTC)))
            + b"\n"
            for c in (person, other)
        ))  # fmt: skip

    response = client.delete(f"/v1/customers/{person}")
    assert response.status_code == 200
    report = response.json()
    assert report["profile_id"] == profile_id
    removed = report["removed"]
    assert removed["profiles"] == 1
    assert removed["identifiers"] == len(identifiers)
    assert removed["contacts"] >= 1
    assert removed["decisions"] == 3  # two offers decisions (by customer and weak id), one channel
    assert removed["training_examples"] == 1
    assert removed["journey_records"] == 2
    for path in journey_logs:
        assert person not in path.read_text() and other in path.read_text()
    left = [decode_example(line) for line in examples.read_bytes().splitlines()]
    assert [e.decision.ids.customer_id for e in left] == [other]

    assert filled_store.read_profile(profile_id) is None
    assert all(filled_store.resolve([i]) is None for i in identifiers)
    assert filled_store.contacts_of(profile_id) == []
    assert filled_store.identifiers_of(profile_id) == []
    traces = set(identifiers) | {profile_id}
    logged = list(read_decisions(settings.event_log_dir))
    assert logged, "the other customer's decisions stay"
    for decision in logged:
        assert decision.profile_id not in traces
        assert not {f"{k}:{v}" for k, v in decision.ids.present().items()} & traces
    assert client.get(f"/v1/profiles/{person}").status_code == 404

    client.app.state.engine.decisions.flush()
    events = [orjson.loads(v) for _, v in read_topic(settings.event_log_dir, CONSENT)]
    assert events[-1]["kind"] == "erasure_request"
    assert events[-1]["ids"] == {"customer_id": person}

    again = client.delete(f"/v1/customers/{person}").json()["removed"]
    assert again == {
        "profiles": 0, "identifiers": 0, "merges": 0, "contacts": 0, "decisions": 0,
        "training_examples": 0, "journey_records": 0,
    }


def test_erasure_by_a_weak_identifier_names_the_person_for_the_flow(
    filled_store, make_client, customers, tmp_path
):
    settings = Settings(data_dir=tmp_path / "data")
    client = make_client(filled_store, settings=settings)
    person = customers[2]
    weak = next(
        i for i in filled_store.identifiers_of(f"customer_id:{person}")
        if not i.startswith("customer_id:")
    )
    assert client.delete(f"/v1/customers/{weak}").status_code == 200
    client.app.state.engine.decisions.flush()
    events = [orjson.loads(v) for _, v in read_topic(settings.event_log_dir, CONSENT)]
    field, _, value = weak.partition(":")
    # The flow routes an erasure with a customer id through its person index, which
    # reaches every identifier linked to them, not only the one given here.
    assert events[-1]["ids"] == {"customer_id": person, field: value}


@pytest.mark.parametrize("mode", ["inline", "queued"])
def test_erasure_with_the_broker_down_answers_503_and_erases_nothing_so_a_retry_is_whole(
    private_kafka_broker, filled_store, make_client, customers, tmp_path, mode
):
    create_topics(private_kafka_broker.bootstrap, [DECISIONS, CONSENT, DECISION_ERASURES])
    settings = Settings(data_dir=tmp_path / "data", decision_log="kafka",
                        kafka_bootstrap=private_kafka_broker.bootstrap,
                        decision_log_timeout_s=2.0, decision_erasure=mode)  # fmt: skip
    client = make_client(filled_store, settings=settings)
    person = customers[3]
    profile_id = f"customer_id:{person}"
    identifiers = filled_store.identifiers_of(profile_id)
    assert client.post("/v1/offers", json=offers_body(customer_id=person)).status_code == 200
    assert client.app.state.engine.decisions.flush()
    private_kafka_broker.stop()

    response = client.delete(f"/v1/customers/{person}")
    assert response.status_code == 503
    assert "decision log unavailable, nothing was erased" in response.json()["error"]
    # Nothing was erased, so a retry still finds every identifier the person had.
    assert filled_store.read_profile(profile_id) is not None
    assert filled_store.identifiers_of(profile_id) == identifiers
    assert client.get(f"/v1/profiles/{person}").status_code == 200
    metrics = client.get("/metrics").text
    assert 'errors_total{endpoint="/v1/customers/{id}",kind="server"}' in metrics
