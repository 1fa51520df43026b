"""The real Redis and Kafka-protocol broker started by the test harness."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from redis.backoff import NoBackoff
from redis.retry import Retry

from omnioffer.services import KafkaBroker, RedisServer, create_topics

pytestmark = pytest.mark.integration

PARTITIONS = 3
# Only a bound on how long to wait for delivery, never a performance assertion.
DELIVERY_DEADLINE_S = 60.0
# Tansu answers JoinGroup only after half the session timeout: ~23 s with librdkafka's
# default of 45 s. 6 s is also the smallest value a stock Kafka broker accepts.
FAST_GROUP_JOIN = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}

Event = tuple[str, str, dict[str, Any]]  # topic, key, payload
Position = tuple[int, int]  # partition, offset


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_events(topic: str, count: int, users: int) -> list[Event]:
    events = []
    for seq in range(count):
        user = f"user-{seq % users}"
        events.append((topic, user, {"user_id": user, "seq": seq, "kind": "page_view"}))
    return events


def produce(bootstrap: str, events: list[Event]) -> dict[tuple[str, int], Position]:
    """Produce with an idempotent producer; return where each (topic, seq) landed."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    landed: dict[tuple[str, int], Position] = {}
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(str(err))
            return
        seq = orjson.loads(msg.value())["seq"]
        landed[(msg.topic(), seq)] = (msg.partition(), msg.offset())

    for topic, key, payload in events:
        producer.produce(topic, key=key, value=orjson.dumps(payload), on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0, "messages still queued after flush"
    assert errors == []
    assert len(landed) == len(events)
    return landed


def consume(consumer: Consumer, expected: int) -> list[Message]:
    """Poll until ``expected`` messages arrived or the deadline passed."""
    received: list[Message] = []
    deadline = time.monotonic() + DELIVERY_DEADLINE_S
    while len(received) < expected and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                continue
            pytest.fail(f"consumer error: {error}")
        received.append(msg)
    return received


def test_keyed_events_round_trip_through_a_consumer_group(kafka_broker: KafkaBroker) -> None:
    topics = [unique("clicks"), unique("orders")]
    create_topics(kafka_broker.bootstrap, topics, partitions=PARTITIONS)
    sent = [event for topic in topics for event in make_events(topic, count=40, users=5)]
    landed = produce(kafka_broker.bootstrap, sent)

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "group.id": unique("group"),
            "auto.offset.reset": "earliest",
            **FAST_GROUP_JOIN,
        }
    )
    try:
        consumer.subscribe(topics)
        received = consume(consumer, expected=len(sent))
    finally:
        consumer.close()

    got = [(m.topic(), m.key().decode(), orjson.loads(m.value())) for m in received]
    assert sorted((t, k, p["seq"]) for t, k, p in got) == sorted(
        (t, k, p["seq"]) for t, k, p in sent
    )
    assert {
        (m.topic(), p["seq"]): (m.partition(), m.offset())
        for m, (_, _, p) in zip(received, got, strict=True)
    } == landed

    partitions_by_key: dict[tuple[str, str], set[int]] = defaultdict(set)
    seqs_by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    for msg, (topic, key, payload) in zip(received, got, strict=True):
        partitions_by_key[(topic, key)].add(msg.partition())
        seqs_by_key[(topic, key)].append(payload["seq"])
    sent_seqs_by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    for topic, key, payload in sent:
        sent_seqs_by_key[(topic, key)].append(payload["seq"])

    assert {k: p for k, p in partitions_by_key.items() if len(p) != 1} == {}
    assert seqs_by_key == sent_seqs_by_key


def test_assigned_partitions_read_from_chosen_offsets(kafka_broker: KafkaBroker) -> None:
    topic = unique("assigned")
    create_topics(kafka_broker.bootstrap, [topic], partitions=PARTITIONS)
    sent = make_events(topic, count=30, users=4)
    landed = produce(kafka_broker.bootstrap, sent)

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "group.id": unique("reader"),  # required by the client, unused with assign()
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        everything = consume(consumer, expected=len(sent))
        assert len(everything) == len(sent)
        assert {
            (m.topic(), orjson.loads(m.value())["seq"]): (m.partition(), m.offset())
            for m in everything
        } == landed

        # Re-read the second half of one partition from an explicit offset.
        partition = landed[(topic, 0)][0]
        offsets = sorted(o for p, o in landed.values() if p == partition)
        start = offsets[len(offsets) // 2]
        consumer.assign([TopicPartition(topic, partition, start)])
        tail = consume(consumer, expected=len(offsets) - len(offsets) // 2)
        assert [(m.partition(), m.offset()) for m in tail] == [
            (partition, o) for o in offsets if o >= start
        ]
    finally:
        consumer.close()


def test_redis_pipeline_hash_and_expiry(redis_server: RedisServer) -> None:
    client = redis_server.client(decode_responses=True)
    key, plain_key = unique("profile"), unique("plain")
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hset(key, mapping={"segment": "gold", "visits": 3, "last_sku": "SKU-42"})
        pipe.expire(key, 120)
        assert pipe.execute() == [3, True]

        assert client.hgetall(key) == {"segment": "gold", "visits": "3", "last_sku": "SKU-42"}
        assert 0 < client.ttl(key) <= 120
        client.set(plain_key, "x")
        assert client.ttl(plain_key) == -1  # exists, no expiry
        assert client.ttl(unique("missing")) == -2  # does not exist

        client.pexpire(key, 50)
        deadline = time.monotonic() + 10
        while client.exists(key) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.hgetall(key) == {}
    finally:
        client.delete(key, plain_key)
        client.close()


def test_redis_server_restarts_on_the_same_port() -> None:
    with RedisServer() as server:
        # Without retries the outage shows at once instead of after redis-py's backoff.
        client = server.client(retry=Retry(NoBackoff(), 0))
        try:
            client.set("k", "v")
            port = server.port

            server.stop()
            assert not server.running
            with pytest.raises(redis.ConnectionError):
                client.ping()

            server.start()
            assert server.port == port
            assert client.ping() is True
            assert client.get("k") is None  # nothing persisted across the outage
        finally:
            client.close()
