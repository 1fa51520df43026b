import time

import pytest

from features.catalog import load_catalog
from features.eventlog import read_topic
from features.topics import DECISIONS, EVENT_TOPICS
from omnioffer.services import create_topics
from simulator import FileSink, KafkaSink, SimulationConfig, simulate

TINY = SimulationConfig(customers=30, days=2, seed=4)
TOPICS = (*EVENT_TOPICS, DECISIONS)


def test_file_sink_writes_one_file_per_topic_and_truncates(tmp_path):
    sink = FileSink(tmp_path)
    sink.write("events.consent", "k", b'{"a":1}')
    sink.close()
    sink = FileSink(tmp_path)
    sink.write("events.consent", "k", b'{"a":2}')
    sink.write("decisions", "k", b'{"d":1}')
    sink.close()
    sink.close()  # idempotent
    assert list(read_topic(tmp_path, "events.consent")) == [(0, b'{"a":2}')]
    assert sink.counts == {"events.consent": 1, "decisions": 1}
    assert sink.ground_truth_path == tmp_path / "ground_truth.jsonl"


def test_file_sink_refuses_multi_line_values(tmp_path):
    sink = FileSink(tmp_path)
    with pytest.raises(ValueError, match="single-line"):
        sink.write("events.consent", "k", b"a\nb")
    sink.close()


def test_kafka_sink_rejects_a_negative_rate():
    with pytest.raises(ValueError, match="rate must be >= 0"):
        KafkaSink("127.0.0.1:9", rate=-1)


def consume_all(bootstrap, topics, expected):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "sim-test", "enable.auto.commit": False}
    )
    # Assigned partitions, not a subscription: no group rebalance to wait for.
    metadata = consumer.list_topics(timeout=10)
    consumer.assign(
        [
            TopicPartition(topic, partition, OFFSET_BEGINNING)
            for topic in topics
            for partition in metadata.topics[topic].partitions
        ]
    )
    got: dict[str, list[tuple[bytes, bytes]]] = {t: [] for t in topics}
    deadline = time.monotonic() + 60
    while sum(map(len, got.values())) < expected and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        got[message.topic()].append((message.key(), message.value()))
    consumer.close()
    return got


@pytest.mark.integration
def test_kafka_sink_delivers_what_the_file_sink_writes(private_kafka_broker, tmp_path):
    kafka_broker = private_kafka_broker  # the event topics must hold this world only
    catalog = load_catalog()
    create_topics(kafka_broker.bootstrap, TOPICS)
    files = simulate(TINY, catalog, FileSink(tmp_path / "files"))
    sink = KafkaSink(kafka_broker.bootstrap, rate=0, ground_truth_path=tmp_path / "gt.jsonl")
    sent = simulate(TINY, catalog, sink)
    assert sink.sent == sent.messages == files.messages
    assert (tmp_path / "gt.jsonl").read_bytes() == (
        tmp_path / "files/ground_truth.jsonl"
    ).read_bytes()
    got = consume_all(kafka_broker.bootstrap, TOPICS, sent.messages)
    for topic in TOPICS:
        values = sorted(v for _, v in got[topic])
        expected = sorted(v for _, v in read_topic(tmp_path / "files", topic))
        assert values == expected, topic
        assert all(key for key, _ in got[topic])


@pytest.mark.integration
def test_kafka_sink_keeps_to_its_rate(kafka_broker, monkeypatch):
    # A fake clock: the sink must ask to sleep until each message is due at the rate.
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    monkeypatch.setattr(time, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))
    create_topics(kafka_broker.bootstrap, ["sim-rate"])
    sink = KafkaSink(kafka_broker.bootstrap, rate=400)
    for i in range(200):
        sink.write("sim-rate", "k", b"%d" % i)
    sink.close()
    assert now[0] - 1000.0 == pytest.approx((200 - 1) / 400)
