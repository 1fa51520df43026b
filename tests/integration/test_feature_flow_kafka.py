"""The feature flow on the real broker and real Redis: crash, recover, converge."""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from prometheus_client.parser import text_string_to_metric_families

from features.eventlog import read_topic
from features.events import decode_event
from features.pipeline import recompute
from features.profile import decode_profile
from features.store import open_store
from features.topics import DEADLETTER, EVENT_TOPICS, routing_key
from features.validation import Rejection, validate
from omnioffer.services import KafkaBroker, create_topics, free_port
from tests.conftest import TEST_HASH_KEY

pytestmark = pytest.mark.integration


def world_messages(small_world):
    """Every line of the world as (topic, key, value), in log order per topic."""
    messages = []
    for topic in EVENT_TOPICS:
        for _offset, raw in read_topic(small_world, topic):
            try:
                key = routing_key(decode_event(raw)).encode()
            except Exception:  # malformed lines travel unkeyed, as a broken client sends them
                key = None
            messages.append((topic, key, raw))
    return messages


def produce(bootstrap, messages):
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for topic, key, value in messages:
        producer.produce(topic, value=value, key=key)
        producer.poll(0)
    assert producer.flush(30) == 0


def start_flow(
    bootstrap, redis_url, recovery_dir, namespace, metrics_port=None, *, flow="features",
    env=None, cluster=False,
):  # fmt: skip
    env = {
        **os.environ,
        "OMNIOFFER_CONTACT_HASH_KEY": TEST_HASH_KEY.decode(),
        "OMNIOFFER_REDIS_NAMESPACE": namespace,
        **(env or {}),
    }
    command = [
        sys.executable, "-m", "omnioffer.cli", "flow", flow,
        "--source", "kafka", "--bootstrap", bootstrap,
        "--store", "redis", "--redis-url", redis_url,
        "--tail", "--recovery-dir", str(recovery_dir), "--snapshot-interval", "0.3",
    ]
    if metrics_port is not None:
        command += ["--metrics-port", str(metrics_port)]
    if cluster:
        command.append("--redis-cluster")
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)


def committed_epoch(recovery_dir):
    epochs = [0]
    for part in recovery_dir.glob("part-*.sqlite3"):
        with contextlib.closing(sqlite3.connect(part)) as db:
            epochs += [row[0] for row in db.execute("SELECT commit_epoch FROM commits")]
    return max(epochs)


def events_counted(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        families = text_string_to_metric_families(response.read().decode())
        return sum(
            sample.value
            for family in families
            if family.name == "omnioffer_flow_events"
            for sample in family.samples
            if sample.name.endswith("_total")
        )


def wait_until(predicate, proc, deadline_s=120.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode()[-4000:])
        time.sleep(0.2)
    raise AssertionError("the flow did not get there in time")


def converged_to(store, expected):
    """A predicate: the store holds exactly the recomputed profiles and identity map."""
    expected_profiles = {p: decode_profile(v) for p, v in expected.profiles.items()}

    def converged():
        raws = store.read_profiles(list(expected_profiles))
        pairs = zip(expected_profiles, raws, strict=True)
        got = {p: decode_profile(r) for p, r in pairs if r is not None}
        if got != expected_profiles:
            return False
        # Identity records travel beside the profiles, and may land a batch later.
        return all(store.resolve([i]) == p for i, p in expected.identity.items())

    return converged


def test_kill_and_recover_gives_the_same_store_as_an_uninterrupted_run(
    private_kafka_broker, private_redis_server, small_world, small_world_events, tmp_path
):
    bootstrap = private_kafka_broker.bootstrap
    create_topics(bootstrap, [*EVENT_TOPICS, DEADLETTER], partitions=3)
    messages = world_messages(small_world)
    half = len(messages) // 2
    expected = recompute(small_world_events)
    expected_profiles = {p: decode_profile(v) for p, v in expected.profiles.items()}
    namespace = "killtest"
    store = open_store("redis", redis_url=private_redis_server.url, namespace=namespace,
                       socket_timeout=2.0)

    def written():
        return sum(store.read_profile(p) is not None for p in list(expected_profiles)[:50])

    converged = converged_to(store, expected)
    produce(bootstrap, messages[:half])
    flow = start_flow(bootstrap, private_redis_server.url, tmp_path / "recovery", namespace)
    try:
        # Kill it mid-stream, once it has written profiles and committed a snapshot.
        wait_until(lambda: written() > 0 and committed_epoch(tmp_path / "recovery") > 1, flow)
        flow.send_signal(signal.SIGKILL)
        flow.wait(10)
        produce(bootstrap, messages[half:])
        port = free_port()
        flow = start_flow(
            bootstrap, private_redis_server.url, tmp_path / "recovery", namespace, port
        )
        wait_until(converged, flow)
        # It resumed from its snapshot instead of reading everything again: the first
        # half's history came back from recovered state, not from the topics.
        read_again = events_counted(port)
        assert 0 < read_again < len(small_world_events)
    finally:
        flow.send_signal(signal.SIGTERM)
        flow.wait(10)
        store.close()

    rejected = set()
    for _topic, _key, raw in messages:
        if isinstance(validate(raw, key=TEST_HASH_KEY), Rejection):
            rejected.add(raw)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dl-check",
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                         "heartbeat.interval.ms": 1000})
    consumer.subscribe([DEADLETTER])
    seen = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(seen) < len(rejected):
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        record = orjson.loads(msg.value())
        seen[(record["topic"], record["partition"], record["offset"])] = record
    consumer.close()
    assert len(seen) == len(rejected)
    assert all(r["reason"]["code"] and r["reason"]["message"] for r in seen.values())


def test_the_flow_fills_a_redis_cluster_as_it_fills_one_server(
    redis_cluster, small_world, small_world_events, tmp_path
):
    namespace = "flowcluster"
    store = open_store("redis", redis_url=redis_cluster.url, namespace=namespace,
                       socket_timeout=2.0, cluster=True)  # fmt: skip
    with KafkaBroker() as broker:  # its own topics: the module's broker has the world once
        create_topics(broker.bootstrap, [*EVENT_TOPICS, DEADLETTER], partitions=3)
        produce(broker.bootstrap, world_messages(small_world))
        flow = start_flow(
            broker.bootstrap, redis_cluster.url, tmp_path / "recovery", namespace, cluster=True
        )
        try:
            wait_until(converged_to(store, recompute(small_world_events)), flow)
        finally:
            flow.send_signal(signal.SIGTERM)
            flow.wait(10)
            store.close()
    nodes = set(redis_cluster.keys(f"{namespace}:*").values())
    assert nodes == {0, 1, 2}  # spread over the three nodes
