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
    # Erased lines are blanked in place (same length): writers and readers keep their place.
    left = [decode_example(line) for line in examples.read_bytes().splitlines() if line.strip()]
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


def _pushed_then_logged_in(make_client, path):
    """A store where device d-7 got a push as its own profile, then logged in as cu-7.

    Returns the store and a client on it (clock: the login's time).
    """
    from datetime import timedelta

    from features.events import Consent, IdentityLink, PageView
    from features.pipeline import recompute
    from features.store import open_store
    from flows.rebuild import write_to_store

    now = datetime(2026, 3, 8, 12, tzinfo=UTC)
    device, day = Identifiers(device_id="d-7"), now - timedelta(days=1)
    before = [
        PageView(event_id="pv", event_time=day, source="app", ids=device, page="home"),
        Consent(event_id="c", event_time=day, source="app", ids=device, channel="push",
                granted=True),
    ]  # fmt: skip
    store = open_store("sqlite", sqlite_path=path)
    write_to_store(recompute(before), store)
    client = make_client(store, clock=lambda: now)
    push = {"device_id": "d-7", "message": {"campaign": "welcome", "kind": "marketing",
                                            "allowed_channels": ["push"]}}  # fmt: skip
    answer = client.post("/v1/channel", json=push).json()
    assert answer["channel"] == "push" and answer["profile_id"] == "device_id:d-7"
    login = IdentityLink(event_id="l", event_time=now, source="app", reason="login",
                         ids=Identifiers(device_id="d-7", customer_id="cu-7"))  # fmt: skip
    write_to_store(recompute([*before, login]), store)
    assert store.resolve(["device_id:d-7"]) == "customer_id:cu-7"
    return store, client


def test_erasure_removes_contacts_logged_before_a_login_and_for_unknown_recipients(
    make_client, tmp_path
):
    store, client = _pushed_then_logged_in(make_client, tmp_path / "people.sqlite3")
    # A receipt to a visitor no profile knows: logged under the cookie itself.
    receipt = {"anonymous_id": "an-42", "message": {"campaign": "receipt",
                                                    "kind": "transactional"}}  # fmt: skip
    assert client.post("/v1/channel", json=receipt).json()["channel"] != "none"
    assert store.contacts_of("anonymous_id:an-42") and store.contacts_of("device_id:d-7")

    erased = client.delete("/v1/customers/cu-7").json()
    assert store.contacts_of("device_id:d-7") == [] and erased["removed"]["contacts"] >= 1
    assert client.delete("/v1/customers/anonymous_id:an-42").json()["removed"]["contacts"] == 1
    assert store.contacts_of("anonymous_id:an-42") == []


def test_an_unreadable_line_in_a_log_does_not_stop_an_erasure(make_client, tmp_path):
    from features.store import open_store

    settings = Settings(data_dir=tmp_path / "data")
    settings.examples_path.parent.mkdir(parents=True, exist_ok=True)
    settings.examples_path.write_bytes(b'{"decision": {"decision_id": "d-1"\n')  # cut off
    journeys = topic_path(settings.event_log_dir, TRIGGERS)
    journeys.parent.mkdir(parents=True, exist_ok=True)
    journeys.write_bytes(b"not json\n")
    store = open_store("sqlite", sqlite_path=tmp_path / "empty.sqlite3")
    response = make_client(store, settings=settings).delete("/v1/customers/cu-1")
    assert response.status_code == 200, response.text
    assert settings.examples_path.read_bytes() == b'{"decision": {"decision_id": "d-1"\n'


def test_lines_a_running_flow_appends_after_an_erasure_are_kept(make_client, tmp_path):
    from features.store import open_store
    from flows.journey_flow import _file_writer

    def entered(profile: str, n: int) -> tuple[bytes, bytes]:
        record = Entered(journey="cart_abandonment", profile_id=profile, entry_id=f"e-{n}",
                         at=datetime(2026, 3, 8, tzinfo=UTC))  # fmt: skip
        return b"k", encode_journey_record(record)

    settings = Settings(data_dir=tmp_path / "data")
    path = topic_path(settings.event_log_dir, MESSAGES_OUTBOUND)
    write = _file_writer(path)()  # what the running journey flow holds open
    write([entered("customer_id:cu-other", 1), entered("customer_id:cu-gone", 2)])
    size = path.stat().st_size
    store = open_store("sqlite", sqlite_path=tmp_path / "empty.sqlite3")
    erased = make_client(store, settings=settings).delete("/v1/customers/cu-gone").json()
    assert erased["removed"]["journey_records"] == 1 and path.stat().st_size == size
    write([entered("customer_id:cu-other", 3)])  # the flow goes on
    kept = [orjson.loads(raw)["entry_id"] for _offset, raw in read_topic(path.parent,
                                                                          MESSAGES_OUTBOUND)]
    assert kept == ["e-1", "e-3"] and b"cu-gone" not in path.read_bytes()


def test_an_erasure_the_flow_would_refuse_is_a_422_and_erases_nothing(
    filled_store, make_client, customers
):
    client = make_client(filled_store)
    response = client.delete("/v1/customers/email_hash:foo")  # not "em:" and 40 hex
    assert response.status_code == 422 and response.json()["field"] == "id"
    assert "'email_hash:foo' is not a valid email_hash" in response.json()["error"]
    assert filled_store.read_profile(f"customer_id:{customers[0]}") is not None


def test_erasing_a_shared_device_or_a_customer_spares_the_others(make_client, tmp_path):
    from datetime import timedelta

    from features.events import IdentityLink, IdentityUnlink, PageView
    from features.pipeline import recompute
    from features.store import open_store
    from flows.rebuild import write_to_store

    now = datetime(2026, 3, 8, 12, tzinfo=UTC)
    day = now - timedelta(days=1)

    def seen(n, **ids):
        return PageView(event_id=f"pv-{n}", event_time=day, source="web", page="home",
                        ids=Identifiers(**ids))  # fmt: skip

    def linked(n, device, customer, hours, kind=IdentityLink, reason="login"):
        return kind(event_id=f"{reason}-{n}", event_time=day + timedelta(hours=hours),
                    source="app", reason=reason,
                    ids=Identifiers(device_id=device, customer_id=customer))  # fmt: skip

    events = [
        seen("a", customer_id="cu-a"), seen("b", customer_id="cu-b"),
        seen("d1", device_id="d-1"), seen("d2", device_id="d-2"),
        linked(1, "d-1", "cu-a", 1), linked(2, "d-1", "cu-b", 2),  # d-1 is shared
        linked(3, "d-2", "cu-b", 3),
        linked(4, "d-2", "cu-b", 4, IdentityUnlink, "wrong_link"),  # d-2 is not cu-b's
    ]  # fmt: skip
    store = open_store("sqlite", sqlite_path=tmp_path / "shared.sqlite3")
    write_to_store(recompute(events), store)
    assert store.resolve(["device_id:d-1"]) == "device_id:d-1"
    assert store.resolve(["device_id:d-2"]) == "device_id:d-2"
    client = make_client(store, clock=lambda: now)

    assert client.delete("/v1/customers/device_id:d-1").status_code == 200
    assert store.read_profile("customer_id:cu-a") and store.read_profile("customer_id:cu-b")
    assert client.delete("/v1/customers/cu-b").status_code == 200
    assert store.read_profile("device_id:d-2") is not None
    assert store.resolve(["device_id:d-2"]) == "device_id:d-2"


def test_an_erasure_that_fails_part_way_is_finished_by_its_retry(
    make_client, tmp_path, monkeypatch
):
    from features.store import StoreUnavailableError

    store, client = _pushed_then_logged_in(make_client, tmp_path / "retry.sqlite3")

    erase = type(store).erase

    def failing_on_the_device(self, key):
        if key == "device_id:d-7":
            raise StoreUnavailableError("sqlite store erase: timed out")
        return erase(self, key)

    monkeypatch.setattr(type(store), "erase", failing_on_the_device)
    assert client.delete("/v1/customers/cu-7").status_code == 503
    monkeypatch.setattr(type(store), "erase", erase)
    retry = client.delete("/v1/customers/cu-7").json()
    assert "device_id:d-7" in retry["identifiers"]
    assert store.contacts_of("device_id:d-7") == [] == store.contacts_of("customer_id:cu-7")


def test_an_unwritable_log_file_is_a_503_and_the_retry_finishes(make_client, tmp_path):
    from features.store import open_store

    settings = Settings(data_dir=tmp_path / "data")
    settings.examples_path.mkdir(parents=True)  # not a file: cannot be opened for rewriting
    store = open_store("sqlite", sqlite_path=tmp_path / "unwritable.sqlite3")
    client = make_client(store, settings=settings)
    failed = client.delete("/v1/customers/cu-1")
    assert failed.status_code == 503, failed.text
    assert "the person's decisions are erased, the rest is not yet" in failed.json()["error"]
    settings.examples_path.rmdir()
    assert client.delete("/v1/customers/cu-1").status_code == 200
