"""The journey flow on the real broker and real Redis: a crash never sends a message twice."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from features.pipeline import recompute
from features.profile import decode_profile
from features.store import open_store
from features.topics import DEADLETTER, EVENT_TOPICS, MESSAGES_OUTBOUND, TRIGGERS
from omnioffer.services import create_topics, free_port
from tests.conftest import TEST_HASH_KEY
from tests.integration.test_feature_flow_kafka import (
    committed_epoch,
    events_counted,
    produce,
    wait_until,
    world_messages,
)

pytestmark = pytest.mark.integration

QUIET_S = 5.0  # the topics must not grow for this long before a run counts as finished


def start_journey_flow(bootstrap, redis_url, recovery_dir, namespace, metrics_port=None):
    env = {
        **os.environ,
        "OMNIOFFER_CONTACT_HASH_KEY": TEST_HASH_KEY.decode(),
        "OMNIOFFER_REDIS_NAMESPACE": namespace,
    }
    command = [
        sys.executable, "-m", "omnioffer.cli", "flow", "journeys",
        "--source", "kafka", "--bootstrap", bootstrap,
        "--store", "redis", "--redis-url", redis_url,
        "--tail", "--recovery-dir", str(recovery_dir), "--snapshot-interval", "0.3",
    ]
    if metrics_port is not None:
        command += ["--metrics-port", str(metrics_port)]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)


def _consumer(bootstrap):
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"journey-check-{time.monotonic_ns()}",  # fresh; partitions are assigned
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })


def _assign_from_start(consumer, topics):
    partitions = [
        (topic, p)
        for topic in topics
        for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ]
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in partitions])
    return set(partitions)


def read_topics(bootstrap, topics, deadline_s=60.0):
    """Return every message value of each topic, read from the beginning to its end.

    The end is where each partition reports EOF (the fetch's high watermark): Tansu answers
    ListOffsets with the start of the last batch, so watermark queries undercount.
    """
    consumer = _consumer(bootstrap)
    try:
        pending = _assign_from_start(consumer, topics)
        values = {topic: [] for topic in topics}
        deadline = time.monotonic() + deadline_s
        while pending:
            assert time.monotonic() < deadline, f"could not read {topics} to their end"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard((msg.topic(), msg.partition()))
                continue
            values[msg.topic()].append(msg.value())
        return values
    finally:
        consumer.close()


def outbound_decisions(bootstrap):
    """Return (decision_id, profile_id) of every message on messages.outbound."""
    values = read_topics(bootstrap, [MESSAGES_OUTBOUND])[MESSAGES_OUTBOUND]
    return [(r["decision_id"], r["profile_id"]) for r in map(orjson.loads, values)]


def wait_quiet(bootstrap, proc, caught_up, deadline_s=90.0):
    """Wait until ``caught_up()`` holds and neither output topic has grown for QUIET_S."""
    last = None
    since = time.monotonic()

    def quiet():
        nonlocal last, since
        if not caught_up():
            return False
        values = read_topics(bootstrap, [MESSAGES_OUTBOUND, TRIGGERS])
        counts = {topic: len(v) for topic, v in values.items()}
        if counts != last:
            last, since = counts, time.monotonic()
            return False
        return time.monotonic() - since >= QUIET_S

    wait_until(quiet, proc, deadline_s)


def kill_once_sent_and_snapshotted(bootstrap, proc, recovery_dir, deadline_s=120.0):
    """SIGKILL the flow as soon as a message is on messages.outbound and a snapshot is in.

    One consumer watches the topic, so the kill lands soon after the first sends, while
    later ones may not be in a snapshot yet (a restart then replays them).
    """
    consumer = _consumer(bootstrap)
    try:
        _assign_from_start(consumer, [MESSAGES_OUTBOUND])
        sent = False
        deadline = time.monotonic() + deadline_s
        while not (sent and committed_epoch(recovery_dir) > 1):
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode()[-4000:])
            assert time.monotonic() < deadline, "the flow sent nothing in time"
            msg = consumer.poll(0.05)
            sent = sent or (msg is not None and not msg.error())
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        consumer.close()


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def metric_total(port, family_name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        families = text_string_to_metric_families(response.read().decode())
        return sum(
            sample.value
            for family in families
            if family.name == family_name
            for sample in family.samples
            if sample.name.endswith("_total")
        )


def halves(messages):
    """Split the world in two, each topic at its middle: the first half ends in event time."""
    by_topic = {}
    for message in messages:
        by_topic.setdefault(message[0], []).append(message)
    first = [m for ms in by_topic.values() for m in ms[: len(ms) // 2]]
    rest = [m for ms in by_topic.values() for m in ms[len(ms) // 2 :]]
    return first, rest


def assert_sent_once_and_logged(bootstrap, store):
    """Check messages.outbound: no decision twice, each in its profile's contact log."""
    sent = outbound_decisions(bootstrap)
    repeated = sorted(d for d, n in Counter(d for d, _p in sent).items() if n > 1)
    assert not repeated, f"sent twice: {repeated[:10]}"
    logged = {c.decision_id for p in {p for _d, p in sent} for c in store.contacts_of(p)}
    missing = sorted({d for d, _p in sent} - logged)
    assert not missing, f"not in the contact log: {missing[:10]}"
    return {d for d, _p in sent}


def test_kill_and_recover_sends_no_message_twice(
    private_kafka_broker, private_redis_server, small_world, small_world_events, tmp_path
):
    bootstrap = private_kafka_broker.bootstrap
    redis_url = private_redis_server.url
    create_topics(
        bootstrap, [*EVENT_TOPICS, DEADLETTER, MESSAGES_OUTBOUND, TRIGGERS], partitions=3
    )
    first, rest = halves(world_messages(small_world))
    expected = {p: decode_profile(v) for p, v in recompute(small_world_events).profiles.items()}
    namespace = "journeykill"
    store = open_store("redis", redis_url=redis_url, namespace=namespace, socket_timeout=2.0)

    def converged():
        raws = store.read_profiles(list(expected))
        return all(
            r is not None and decode_profile(r) == v
            for v, r in zip(expected.values(), raws, strict=True)
        )

    T0 = time.monotonic()
    produce(bootstrap, first)
    recovery = tmp_path / "recovery"
    flow = start_journey_flow(bootstrap, redis_url, recovery, namespace)
    try:
        # Kill it mid-stream, once it has sent something and committed a snapshot.
        kill_once_sent_and_snapshotted(bootstrap, flow, recovery)
        before_kill = {d for d, _p in outbound_decisions(bootstrap)}
        produce(bootstrap, rest)

        # Restart from the snapshot (same contact log) and let it finish the world.
        print("T killed", time.monotonic()-T0, len(before_kill))
        port2 = free_port()
        flow = start_journey_flow(bootstrap, redis_url, recovery, namespace, port2)
        wait_quiet(bootstrap, flow, converged)
        print("T run2", time.monotonic()-T0, metric_total(port2, "omnioffer_journey_duplicates_skipped"))
        stop(flow)
        sent = assert_sent_once_and_logged(bootstrap, store)
        assert len(sent) > 0
        assert before_kill <= sent

        # From scratch (new recovery dir) on the same contact log: it decides again every
        # step the first runs sent, finds each claimed already, and sends none of them again.
        port = free_port()

        def read_every_event():
            try:
                return events_counted(port) >= len(small_world_events)
            except OSError:  # its metrics server is not up yet
                return False

        flow = start_journey_flow(bootstrap, redis_url, tmp_path / "fresh", namespace, port)
        wait_quiet(bootstrap, flow, read_every_event)
        skipped = metric_total(port, "omnioffer_journey_duplicates_skipped")
        stop(flow)
        print("T run3", time.monotonic()-T0, skipped, len(sent), len(outbound_decisions(bootstrap)))
        assert skipped > 0
        assert sent <= assert_sent_once_and_logged(bootstrap, store)
    finally:
        stop(flow)
        store.close()
