"""The journey flow on the real broker and real Redis: a crash never sends a message twice."""

import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections import Counter

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from features.kafka_log import scan_topic
from features.pipeline import recompute
from features.profile import decode_profile
from features.store import open_store
from features.topics import DEADLETTER, EVENT_TOPICS, MESSAGES_OUTBOUND, TRIGGERS
from omnioffer.cli import app as cli
from omnioffer.services import create_topics, free_port
from tests.integration.test_feature_flow_kafka import (
    committed_epoch,
    produce,
    start_flow,
    wait_until,
    world_messages,
)

pytestmark = pytest.mark.integration

QUIET_S = 5.0  # the topics must not grow for this long before a run counts as finished


def start_journey_flow(bootstrap, redis_url, recovery_dir, namespace, metrics_port=None):
    # No promoted model (a pointer that is not there): the heuristic scorer, not whatever
    # model this machine's data dir has promoted.
    no_model = {"OMNIOFFER_MODEL_POINTER": str(recovery_dir.parent / "no-promoted-model")}
    return start_flow(
        bootstrap, redis_url, recovery_dir, namespace, metrics_port, flow="journeys", env=no_model
    )


def resume_epoch(recovery_dir):
    """Return the epoch a restart would resume from (0 while the recovery store is made)."""
    try:
        return committed_epoch(recovery_dir)
    except sqlite3.OperationalError:  # its tables are not there yet
        return 0


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
    """Return (decision_id, profile_id) of every message on messages.outbound.

    Each message is keyed by its profile, so one person's messages share a partition.
    """
    sent = []
    for record in scan_topic(bootstrap, MESSAGES_OUTBOUND):
        message = orjson.loads(record.value)
        assert record.key == message["profile_id"].encode(), record
        sent.append((message["decision_id"], message["profile_id"]))
    return sent


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


def slices(messages, n):
    """Cut the world into n slices in log order, each with the next n-th of every topic."""
    by_topic = {}
    for message in messages:
        by_topic.setdefault(message[0], []).append(message)
    return [
        [m for ms in by_topic.values() for m in ms[len(ms) * i // n : len(ms) * (i + 1) // n]]
        for i in range(n)
    ]


def drip_and_kill(bootstrap, proc, recovery_dir, port, chunks, deadline_s=120.0):
    """Feed ``chunks`` to the running flow one by one, as it reads; SIGKILL it mid-stream.

    The kill comes with the first message on messages.outbound after a snapshot is in, so
    the sends of the epoch in flight are likely not in a snapshot yet: the restart replays
    them. Returns the chunks not produced yet.
    """
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"journey-watch-{time.monotonic_ns()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 10,
    })
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    try:
        _assign_from_start(consumer, [MESSAGES_OUTBOUND])
        deadline = time.monotonic() + deadline_s
        while resume_epoch(recovery_dir) < 1 or events_read(port) < 0:  # the flow is up
            _alive(proc)
            assert time.monotonic() < deadline, "the flow did not start in time"
            time.sleep(0.05)
        chunks = list(chunks)
        seen = False  # something was sent
        armed = False  # ... and a snapshot committed
        fed_at = 0.0
        read = -1.0  # events the flow had read when the last chunk went out
        while True:
            _alive(proc)
            assert time.monotonic() < deadline, "the flow sent nothing in time"
            if chunks and time.monotonic() - fed_at >= 0.1 and events_read(port) > read:
                read = events_read(port)
                for topic, key, value in chunks.pop(0):
                    producer.produce(topic, value=value, key=key)
                producer.poll(0)
                fed_at = time.monotonic()
            msg = consumer.poll(0.01)
            sent = msg is not None and not msg.error()
            if sent and armed:
                break
            seen = seen or sent
            armed = armed or (seen and resume_epoch(recovery_dir) > 1)
            if armed and not chunks and time.monotonic() - fed_at > 2.0:
                break  # all fed and nothing more sent: kill it anyway
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert producer.flush(30) == 0
        return chunks
    finally:
        consumer.close()


def events_read(port):
    """Return the valid events the flow has read, or -1 while its metrics do not answer."""
    try:
        return metric_total(port, "omnioffer_flow_events")
    except OSError:  # not up yet, or going down
        return -1.0


def _alive(proc):
    if proc.poll() is not None:
        raise AssertionError(proc.stderr.read().decode()[-4000:])


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def metric_total(port, family_name):
    """Return the sum of a counter's samples on the flow's metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        families = text_string_to_metric_families(response.read().decode())
        return sum(
            sample.value
            for family in families
            if family.name == family_name
            for sample in family.samples
            if sample.name.endswith("_total")
        )


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
    chunks = slices(world_messages(small_world), 24)
    expected = {p: decode_profile(v) for p, v in recompute(small_world_events).profiles.items()}
    namespace = "journeykill"
    store = open_store("redis", redis_url=redis_url, namespace=namespace, socket_timeout=2.0)

    def converged():
        raws = store.read_profiles(list(expected))
        return all(
            r is not None and decode_profile(r) == v
            for v, r in zip(expected.values(), raws, strict=True)
        )

    recovery = tmp_path / "recovery"
    port = free_port()
    flow = start_journey_flow(bootstrap, redis_url, recovery, namespace, port)
    try:
        # Feed it the first half of the world as it runs, and kill it mid-stream. (With the
        # whole world produced up front it would be done, and snapshotted, before the kill.)
        unfed = drip_and_kill(bootstrap, flow, recovery, port, chunks[:12])
        before_kill = {d for d, _p in outbound_decisions(bootstrap)}
        produce(bootstrap, [m for chunk in unfed + chunks[12:] for m in chunk])

        # Restart from the snapshot (same contact log) and let it finish the world.
        flow = start_journey_flow(bootstrap, redis_url, recovery, namespace)
        wait_quiet(bootstrap, flow, converged)
        stop(flow)
        sent = assert_sent_once_and_logged(bootstrap, store)
        assert len(sent) > 0
        assert before_kill <= sent
        report = CliRunner().invoke(cli, ["journeys", "report", "--source", "kafka",
                                          "--bootstrap", bootstrap])  # fmt: skip
        assert report.exit_code == 0, report.output
        assert "journey records in the triggers topic" in report.output
        assert "sent: " in report.output

        # From scratch (new recovery dir) on the same contact log: it decides again the
        # steps the first runs sent, finds each claimed already, and sends none again.
        # (It may send steps the first runs did not: read as a backlog, the topics'
        # partitions interleave otherwise than when fed live, and facts that arrive later
        # than the allowed lateness change journeys. So the count may grow; no id repeats.)
        fresh_port = free_port()
        flow = start_journey_flow(bootstrap, redis_url, tmp_path / "fresh", namespace, fresh_port)
        wait_quiet(bootstrap, flow, lambda: events_read(fresh_port) >= len(small_world_events))
        skipped = metric_total(fresh_port, "omnioffer_journey_duplicates_skipped")
        stop(flow)
        assert skipped > 0
        assert sent <= assert_sent_once_and_logged(bootstrap, store)
    finally:
        stop(flow)
        store.close()


def test_two_runs_over_a_kafka_backlog_send_the_same_messages(
    private_kafka_broker, private_redis_server, small_world, small_world_events, tmp_path
):
    # The journey flow reads all partitions as one stream in event-time order, so a backlog
    # replays like the file log: the same events give the same messages, run after run.
    bootstrap = private_kafka_broker.bootstrap
    redis_url = private_redis_server.url
    create_topics(
        bootstrap, [*EVENT_TOPICS, DEADLETTER, MESSAGES_OUTBOUND, TRIGGERS], partitions=3
    )
    produce(bootstrap, world_messages(small_world))
    runs = []
    for name in ("first", "second"):
        port = free_port()
        flow = start_journey_flow(bootstrap, redis_url, tmp_path / name, f"replay{name}", port)
        try:
            wait_quiet(bootstrap, flow, lambda p=port: events_read(p) >= len(small_world_events))
        finally:
            stop(flow)
        runs.append(read_topics(bootstrap, [MESSAGES_OUTBOUND])[MESSAGES_OUTBOUND])
    first, both = runs  # the topic holds both runs' messages after the second
    assert len(first) > 0
    assert Counter(both) == Counter({value: 2 for value in first})
