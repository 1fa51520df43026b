"""The Bytewax feature flow over the file event log, against batch recomputation."""

import functools
import os
import subprocess
import sys
from collections import Counter

import orjson
from bytewax.testing import run_main

from features.catalog import load_catalog
from features.eventlog import read_topic
from features.pipeline import recompute
from features.profile import decode_profile
from features.store import open_store
from features.topics import EVENT_TOPICS
from features.validation import Rejection, validate
from flows.features_flow import FlowConfig, build_flow, run
from tests.conftest import TEST_HASH_KEY


def config_for(events_dir, db_path):
    return FlowConfig(
        open_store=functools.partial(open_store, "sqlite", sqlite_path=db_path),
        hash_key=TEST_HASH_KEY,
        event_log_dir=events_dir,
        batch_size=200,
    )


OFFER_IDS = sorted(load_catalog().offers)


def store_content(store, profile_ids, identifiers):
    profiles = {}
    for profile_id in profile_ids:
        raw = store.read_profile(profile_id)
        profiles[profile_id] = None if raw is None else decode_profile(raw)
    identity = {i: store.resolve([i]) for i in identifiers}
    return profiles, identity, store.redemptions(OFFER_IDS)


def expected_content(events):
    result = recompute(events)
    profiles = {p: decode_profile(v) for p, v in result.profiles.items()}
    redeemed = Counter(r.offer_id for r in result.redemptions)
    return profiles, dict(result.identity), {o: redeemed[o] for o in OFFER_IDS}


def test_stream_equals_batch_recomputation(small_world, small_world_events, tmp_path):
    db = tmp_path / "online.sqlite3"
    run_main(build_flow(config_for(small_world, db), deadletter_path=tmp_path / "dl.jsonl"))
    expected = expected_content(small_world_events)
    with open_store("sqlite", sqlite_path=db) as store:
        got = store_content(store, expected[0], expected[1])
    assert len(expected[0]) > 100
    assert sum(expected[2].values()) > 20  # offers were redeemed: budgets are spent
    assert got == expected
    # A replay of the whole log (a restart without a checkpoint) counts no order twice.
    run_main(build_flow(config_for(small_world, db), deadletter_path=tmp_path / "dl2.jsonl"))
    with open_store("sqlite", sqlite_path=db) as store:
        assert store_content(store, expected[0], expected[1]) == expected


def test_redemptions_are_counted_per_order_and_refunds_void_them(tmp_path):
    from datetime import UTC, datetime, timedelta

    from features.eventlog import EventLogWriter
    from features.events import Identifiers, Item, Purchase, Refund, encode_event
    from features.profile import decode_profile, profile_features
    from features.topics import topic_for

    at = datetime(2026, 3, 2, 9, tzinfo=UTC)

    def purchase(event_id, order_id, customer, offers):
        return Purchase(
            event_id=event_id, event_time=at, source="store",
            ids=Identifiers(customer_id=customer), order_id=order_id, channel="store",
            payment_channel="store", store_id="st-1", total=4.5,
            items=[Item(product_id="p-1", category="coffee_tea", price=4.5)],
            offers_redeemed=offers,
        )  # fmt: skip

    def refund(event_id, order_id, customer, offers):
        return Refund(event_id=event_id, event_time=at + timedelta(seconds=30), source="store",
                      ids=Identifiers(customer_id=customer), order_id=order_id,
                      channel="store", amount=4.5, offers_voided=offers)  # fmt: skip

    events = [
        purchase("e-1", "o-1", "cu-1", ["of-spring-produce", "of-xsell-baby"]),
        purchase("e-2", "o-2", "cu-2", ["of-spring-produce"]),
        purchase("e-2", "o-2", "cu-2", ["of-spring-produce"]),  # delivered twice
        purchase("e-4", "o-2", "cu-2", ["of-spring-produce"]),  # the order sent again
        purchase("e-5", "o-5", "cu-3", ["of-xsell-baby", "of-xsell-baby"]),  # listed twice
        purchase("e-3", "o-3", "cu-1", []),
        refund("r-1", "o-1", "cu-1", ["of-xsell-baby"]),  # one of the order's two offers
        refund("r-9", "o-9", "cu-4", ["of-spring-produce"]),  # before its purchase
        purchase("e-9", "o-9", "cu-4", ["of-spring-produce"]),
    ]
    log_dir = tmp_path / "events"
    with EventLogWriter(log_dir) as writer:
        for event in events:
            writer.append(topic_for(event.kind), encode_event(event))
    db = tmp_path / "budget.sqlite3"
    run_main(build_flow(config_for(log_dir, db), deadletter_path=tmp_path / "dl.jsonl"))
    with open_store("sqlite", sqlite_path=db) as store:
        counts = store.redemptions(["of-spring-produce", "of-xsell-baby", "of-pts-web-pay"])
        cu1 = decode_profile(store.read_profile("customer_id:cu-1"))
    assert counts == {"of-spring-produce": 2, "of-xsell-baby": 1, "of-pts-web-pay": 0}
    features = profile_features(cu1, int(at.timestamp()) + 60)
    assert (features["refunds_90d"], features["refunded_90d"]) == (1, 4.5)
    assert features["frequency_90d_all"] == 2  # the refunded order still happened
    # The voided offer is no longer redeemed for the customer (serving may offer it again).
    assert features["offers_redeemed"] == ["of-spring-produce"]


def test_an_erased_customer_leaves_no_profile_identity_or_merge_record(tmp_path):
    import sqlite3
    from datetime import UTC, datetime, timedelta

    from features.eventlog import EventLogWriter
    from features.events import (
        ErasureRequest,
        Identifiers,
        IdentityLink,
        ProductView,
        encode_event,
    )
    from features.topics import topic_for

    start = datetime(2026, 3, 2, 9, tzinfo=UTC)

    def view(n, minute, **ids):
        return ProductView(event_id=f"v{n}", event_time=start + timedelta(minutes=minute),
                           source="web", ids=Identifiers(**ids), product_id="p",
                           category="dairy", price=2.0)  # fmt: skip

    def link(n, minute, **ids):
        return IdentityLink(event_id=f"l{n}", event_time=start + timedelta(minutes=minute),
                            source="web", ids=Identifiers(**ids), reason="login")  # fmt: skip

    events = [
        view(1, 0, anonymous_id="a-1"), view(2, 1, device_id="d-tab"),
        link(1, 2, anonymous_id="a-1", customer_id="cu-1"),
        link(2, 3, device_id="d-tab", customer_id="cu-1"),
        view(3, 4, customer_id="cu-2"), link(3, 5, device_id="d-tab", customer_id="cu-2"),
        view(4, 6, customer_id="cu-1"),
        ErasureRequest(event_id="er-1", event_time=start + timedelta(minutes=10), source="web",
                       ids=Identifiers(customer_id="cu-1")),
    ]  # fmt: skip
    log_dir = tmp_path / "events"
    with EventLogWriter(log_dir) as writer:
        for event in events:
            writer.append(topic_for(event.kind), encode_event(event))
    db = tmp_path / "erase.sqlite3"
    run_main(build_flow(config_for(log_dir, db), deadletter_path=tmp_path / "dl.jsonl"))
    with sqlite3.connect(db) as con:
        rows = {t: [repr(r) for r in con.execute(f"select * from {t}")]
                for (t,) in con.execute("select name from sqlite_master where type='table'")}
    traces = [(t, r) for t, held in rows.items() for r in held
              if any(x in r for x in ("cu-1", "a-1", "d-tab"))]  # fmt: skip
    assert traces == []
    with open_store("sqlite", sqlite_path=db) as store:
        assert store.read_profile("customer_id:cu-2") is not None  # the other customer stays
    # Batch recomputation (what `omnioffer features rebuild` writes) forgets them too.
    batch = recompute(events)
    assert [m for m in batch.moves if m.fragment in {"anonymous_id:a-1", "device_id:d-tab"}] == []
    assert set(batch.identity) == {"customer_id:cu-2"}


def test_malformed_events_reach_the_deadletter_and_the_rest_is_processed(small_world, tmp_path):
    rejected = {}
    valid = 0
    for topic in EVENT_TOPICS:
        for offset, raw in read_topic(small_world, topic):
            result = validate(raw, key=TEST_HASH_KEY)
            if isinstance(result, Rejection):
                rejected[(topic, offset)] = result.reason.code
            else:
                valid += 1
    assert len(set(rejected.values())) >= 5
    dead = tmp_path / "dl.jsonl"
    run_main(build_flow(config_for(small_world, tmp_path / "s.sqlite3"), deadletter_path=dead))
    records = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert {(r["topic"], r["offset"]): r["reason"]["code"] for r in records} == rejected
    assert all(r["reason"]["message"] and r["raw"] for r in records)
    from flows import metrics

    samples = metrics.EVENTS_IN.collect()[0].samples
    processed = sum(s.value for s in samples if s.name.endswith("_total"))
    assert processed >= valid


def test_a_kafka_consumer_error_is_dead_lettered_as_such_and_the_batch_goes_on(tmp_path):
    from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
    from confluent_kafka import KafkaError as ClientError

    from flows.features_flow import _DEADLETTER, _ingester

    valid = orjson.dumps({
        "kind": "page_view", "event_id": "e-1", "event_time": "2026-03-01T10:00:00Z",
        "source": "web", "ids": {"anonymous_id": "a-1"}, "page": "home",
    })  # fmt: skip
    broken = KafkaSourceMessage(None, None, topic="clickstream", partition=2, offset=-1001)
    error = KafkaError(ClientError(ClientError._MSG_TIMED_OUT), broken)
    good = KafkaSourceMessage(None, valid, topic="clickstream", partition=2, offset=7)
    out = _ingester(config_for(tmp_path, tmp_path / "s.sqlite3"))([error, good])
    dead = [orjson.loads(item) for target, item in out if target == _DEADLETTER]
    assert len(dead) == 1
    record = dead[0]
    assert record["reason"]["code"] == "consumer_error"
    assert "_MSG_TIMED_OUT" in record["reason"]["message"]
    assert (record["topic"], record["partition"]) == ("clickstream", 2)
    assert any(target != _DEADLETTER for target, _ in out)  # the valid message went on


def test_two_workers_give_the_same_store_as_one(small_world, small_world_events, tmp_path):
    db = tmp_path / "two.sqlite3"
    run(config_for(small_world, db), workers=2, deadletter_path=tmp_path / "dl.jsonl")
    expected = expected_content(small_world_events)
    with open_store("sqlite", sqlite_path=db) as store:
        assert store_content(store, expected[0], expected[1]) == expected


def test_two_processes_give_the_same_store_as_one(small_world, small_world_events, tmp_path):
    from omnioffer.services import free_port

    db = tmp_path / "procs.sqlite3"
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "OMNIOFFER_SOURCE": "files",
        "OMNIOFFER_STORE": "sqlite",
        "OMNIOFFER_SQLITE_PATH": str(db),
        "OMNIOFFER_DATA_DIR": str(small_world.parent),
        "OMNIOFFER_EVENTS_DIR": str(small_world),
        "OMNIOFFER_CONTACT_HASH_KEY": TEST_HASH_KEY.decode(),
    }
    command = [sys.executable, "-m", "bytewax.run", "flows.features_flow:flow", "-a", addresses]
    procs = [
        subprocess.Popen([*command, "-i", str(i)], env=env, stderr=subprocess.PIPE)
        for i in range(2)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()[-3000:]
    expected = expected_content(small_world_events)
    with open_store("sqlite", sqlite_path=db) as store:
        assert store_content(store, expected[0], expected[1]) == expected


def test_file_sources_skip_erased_lines_and_keep_their_offsets(tmp_path):
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow

    from features.eventlog import erase_lines, topic_path
    from flows.sources import EventLogSource, MergedEventLogSource

    path = topic_path(tmp_path, "events.clickstream")
    lines = [b'{"n": %d, "event_time":"2026-03-02T09:00:0%dZ"}' % (n, n) for n in range(6)]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    # Erase a whole batch's worth (2 lines) and one more: nothing else may be skipped.
    assert erase_lines(path, lambda line: line in (lines[1], lines[2], lines[4])) == 3
    for source in (EventLogSource(tmp_path, ["events.clickstream"], batch_size=2),
                   MergedEventLogSource(tmp_path, ["events.clickstream"], batch_size=2)):
        flow = Dataflow("erased")
        seen: list = []
        stream = op.input("in", flow, source)
        op.inspect("keep", stream, lambda _step, m, seen=seen: seen.append((m.offset, m.value)))
        run_main(flow)
        assert seen == [(0, lines[0]), (3, lines[3]), (5, lines[5])]


def test_contacts_sent_before_a_login_count_for_the_customer_after_it(tmp_path):
    from datetime import UTC, datetime, timedelta

    from features.eventlog import EventLogWriter
    from features.events import Identifiers, IdentityLink, IdentityUnlink, PageView, encode_event
    from features.store import ContactRecord, StoreBatch
    from features.topics import topic_for

    at = datetime(2026, 3, 2, 9, tzinfo=UTC)
    device = Identifiers(device_id="d-7")
    db = tmp_path / "contacts.sqlite3"

    def run_events(*events, name):
        log_dir = tmp_path / name
        with EventLogWriter(log_dir) as writer:
            for event in events:
                writer.append(topic_for(event.kind), encode_event(event))
        run_main(build_flow(config_for(log_dir, db), deadletter_path=tmp_path / f"{name}.dl"))

    visit = PageView(event_id="pv", event_time=at, source="app", ids=device, page="home")
    run_events(visit, name="visit")
    pushed = ContactRecord(profile_id="device_id:d-7", decision_id="de-1", channel="push",
                           sent_at=at + timedelta(minutes=5), kind="marketing",
                           campaign="welcome")  # fmt: skip
    mailed = ContactRecord(profile_id="customer_id:cu-7", decision_id="de-2", channel="email",
                           sent_at=at + timedelta(minutes=6), kind="marketing",
                           campaign="spring")  # fmt: skip
    with open_store("sqlite", sqlite_path=db) as store:
        store.write(StoreBatch(contacts=[pushed, mailed]))  # as serving logs them

    ids = Identifiers(device_id="d-7", customer_id="cu-7")
    login = IdentityLink(event_id="login", event_time=at + timedelta(hours=1), source="app",
                         ids=ids, reason="login")  # fmt: skip
    run_events(visit, login, name="login")
    with open_store("sqlite", sqlite_path=db) as store:
        assert store.resolve(["device_id:d-7"]) == "customer_id:cu-7"
        customer = {(c.decision_id, c.profile_id) for c in store.contacts_of("customer_id:cu-7")}
        assert customer == {("de-1", "customer_id:cu-7"), ("de-2", "customer_id:cu-7")}

    # Undoing the link gives the device its own profile back, not the customer's log.
    unlink = IdentityUnlink(event_id="unlink", event_time=at + timedelta(hours=2),
                            source="contact_center", ids=ids, reason="wrong_link")
    run_events(visit, login, unlink, name="unlink")
    with open_store("sqlite", sqlite_path=db) as store:
        assert store.resolve(["device_id:d-7"]) == "device_id:d-7"
        assert [c.decision_id for c in store.contacts_of("device_id:d-7")] == ["de-1"]
        # ... and the copy leaves the customer's log: it was someone else's message.
        assert [c.decision_id for c in store.contacts_of("customer_id:cu-7")] == ["de-2"]
