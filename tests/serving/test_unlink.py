"""Support staff undo a wrong identity link; the feature flow gives the identifier back."""

from __future__ import annotations

import functools
import shutil

import orjson
from bytewax.testing import run_main

from features.eventlog import read_topic
from features.profile import decode_profile
from features.store import open_store
from features.topics import CONSENT
from flows.features_flow import FlowConfig, build_flow
from omnioffer.settings import Settings
from tests.conftest import TEST_HASH_KEY

TOKEN = "staff-secret"


def test_an_unlink_from_the_api_moves_the_identifier_out_of_the_customers_profile(
    small_world, filled_store, make_client, customers, tmp_path
):
    events = tmp_path / "events"
    shutil.copytree(small_world, events)  # the API appends to the flow's own event log
    settings = Settings(data_dir=tmp_path / "data", events_dir=events, admin_token=TOKEN)
    client = make_client(filled_store, settings=settings)
    person = next(c for c in customers
                  if any(not i.startswith("customer_id:")
                         for i in filled_store.identifiers_of(f"customer_id:{c}")))  # fmt: skip
    weak = sorted(i for i in filled_store.identifiers_of(f"customer_id:{person}")
                  if not i.startswith("customer_id:"))[0]  # fmt: skip
    body = {"customer_id": person, "identifiers": [weak], "reason": "wrong_link"}

    assert client.post("/v1/identity/unlinks", json=body).status_code == 401
    staff = {"Authorization": f"Bearer {TOKEN}"}
    answer = client.post("/v1/identity/unlinks", json=body, headers=staff)

    assert answer.status_code == 202, answer.text
    [published] = answer.json()["events"]
    # With the erasures (same topic, same key): an unlink then an erasure keep their order.
    assert published["identifier"] == weak and answer.json()["topic"] == CONSENT
    client.app.state.engine.decisions.flush()
    [event] = [orjson.loads(v) for _, v in read_topic(events, CONSENT)
               if b'"identity_unlink"' in v]  # fmt: skip
    field, _, value = weak.partition(":")
    assert event["ids"] == {"customer_id": person, field: value}
    assert event["event_id"] == published["event_id"]

    # The feature flow (Bytewax, over the event log the API wrote to) applies it.
    db = tmp_path / "flow.sqlite3"
    config = FlowConfig(open_store=functools.partial(open_store, "sqlite", sqlite_path=db),
                        hash_key=TEST_HASH_KEY, event_log_dir=events, batch_size=200)  # fmt: skip
    run_main(build_flow(config, deadletter_path=tmp_path / "dl.jsonl"))
    with open_store("sqlite", sqlite_path=db) as store:
        assert store.resolve([weak]) == weak  # a profile of its own again
        own = decode_profile(store.read_profile(weak))
        theirs = decode_profile(store.read_profile(f"customer_id:{person}"))
        merges = store.merges_of(weak)
    assert weak not in theirs["fragments"] and own["fragments"] == [weak]
    assert [(m.rule, m.cause_event_id) for m in merges][-1] == ("unlinked", event["event_id"])
    assert not (tmp_path / "dl.jsonl").exists() or b"unlink" not in (
        tmp_path / "dl.jsonl").read_bytes()  # fmt: skip


def test_a_bad_unlink_request_names_the_field(filled_store, make_client, customers, tmp_path):
    client = make_client(filled_store, settings=Settings(data_dir=tmp_path / "data"))
    person = customers[0]
    cases = [
        ({"customer_id": person, "identifiers": []}, "identifiers"),
        ({"customer_id": person, "identifiers": ["a-1"]}, "identifiers[0]"),
        ({"customer_id": person, "identifiers": ["device_id:d-1", "tv_id:x"]}, "identifiers[1]"),
        ({"customer_id": person, "identifiers": ["customer_id:cu-2"]}, "identifiers[0]"),
        # what the flow would dead-letter is refused here: a hashed email is em: + 40 hex
        ({"customer_id": person, "identifiers": ["email_hash:not-a-hash"]}, "identifiers[0]"),
        ({"customer_id": person, "identifiers": ["device_id:" + "x" * 129]}, "identifiers[0]"),
        ({"identifiers": ["device_id:d-1"]}, "customer_id"),
        ({"customer_id": person, "identifiers": ["device_id:d-1"], "reason": "x"}, "reason"),
    ]
    for body, field in cases:
        answer = client.post("/v1/identity/unlinks", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["field"] == field, (body, answer.json())


def test_an_unlink_the_event_buffer_cannot_take_whole_answers_503_naming_what_is_left(
    filled_store, make_client, customers, tmp_path
):
    from serving.decision_log import DecisionLog

    class Stalled(DecisionLog):
        """A buffer with room for one record, whose writer never drains it."""

        def _run(self) -> None:
            self._stop.wait()

    class Nowhere:
        def send(self, records): ...
        def erase(self, erasures): return [0] * len(erasures)
        def close(self): ...

    log = Stalled(Nowhere(), max_queue=1)
    client = make_client(filled_store, settings=Settings(data_dir=tmp_path / "data"),
                         decision_log=log)  # fmt: skip
    body = {"customer_id": customers[0], "identifiers": ["device_id:d-1", "anonymous_id:a-9"]}

    answer = client.post("/v1/identity/unlinks", json=body)

    assert answer.status_code == 503
    assert "['anonymous_id:a-9'] were not published (1 of 2 were)" in answer.json()["error"]
