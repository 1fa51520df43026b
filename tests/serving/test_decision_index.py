"""The eraser's owner index follows the decisions topic: incremental, exact, restartable."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from features.decisions import Choice, Decision, decision_key, encode_decision
from features.events import Identifiers
from features.kafka_log import (
    OffsetOutOfRangeError,
    TopicRecord,
    read_kafka_decisions,
    read_to_end,
)
from features.topics import DECISIONS
from omnioffer.services import create_topics
from serving import decision_index
from serving.decision_index import OwnerIndex, catch_up
from serving.decision_log import KafkaSink


def record(decision_id: str, **ids: str) -> bytes:
    profile = ids.pop("profile_id", None)
    return encode_decision(Decision(
        decision_id=decision_id, decided_at=datetime(2026, 3, 8, tzinfo=UTC), surface="offers",
        ids=Identifiers(**ids), policy="p", profile_id=profile,
        chosen=[Choice(offer_id="of-1", channel="web", propensity=1.0)],
    ))  # fmt: skip


def test_the_index_finds_records_by_profile_or_identifier_and_follows_tombstones(tmp_path):
    index = OwnerIndex(tmp_path / "owners.sqlite")
    decisions = index.apply([
        TopicRecord(0, 0, b"d-1", record("d-1", profile_id="p-1", customer_id="cu-1")),
        TopicRecord(1, 0, b"d-2", record("d-2", anonymous_id="a-1")),
        TopicRecord(1, 1, None, record("d-x", customer_id="cu-1")),  # no key: not indexed
        TopicRecord(0, 1, b"junk", b"not a decision"),
        TopicRecord(0, 2, b"d-3", record("d-3", customer_id="cu-2")),
    ])  # fmt: skip

    assert decisions == 2 + 1
    assert index.owned(["p-1"]) == {b"d-1": (0, 0)}
    assert index.owned(["customer_id:cu-1"]) == {b"d-1": (0, 0)}  # by identifier alone
    assert set(index.owned(["p-1", "anonymous_id:a-1"])) == {b"d-1", b"d-2"}
    assert index.owned(["customer_id:nobody"]) == {}
    assert index.next_offsets() == {0: 3, 1: 2}  # every record read counts, kept or not

    index.apply([TopicRecord(1, 2, b"d-2", None)])  # a tombstone read back
    assert index.owned(["anonymous_id:a-1"]) == {}
    index.forget([b"d-1"])
    assert index.owned(["p-1", "customer_id:cu-1"]) == {}
    assert index.drop_before(0, 3) == 1  # d-3 (its one owner entry) fell to retention
    assert index.size() == 0
    index.close()


def test_the_index_survives_a_restart_and_refuses_another_topics_file(tmp_path):
    path = tmp_path / "owners.sqlite"
    first = OwnerIndex(path)
    first.apply([TopicRecord(2, 41, b"d-1", record("d-1", card_id="k-1"))])
    first.close()

    again = OwnerIndex(path)
    assert again.next_offsets() == {2: 42}
    assert again.owned(["card_id:k-1"]) == {b"d-1": (2, 41)}
    again.reset(2)
    assert (again.next_offsets(), again.size()) == ({}, 0)
    again.close()
    with pytest.raises(ValueError, match="indexes topic 'decisions', not 'other'"):
        OwnerIndex(path, topic="other")


def test_catch_up_reads_only_new_records_and_matches_a_full_read(private_kafka_broker,
                                                                 tmp_path):  # fmt: skip
    bootstrap = private_kafka_broker.bootstrap
    create_topics(bootstrap, [DECISIONS], partitions=3)

    def write(numbers: range) -> None:
        batch = [
            Decision(decision_id=f"d-{n}", decided_at=datetime(2026, 3, 8, tzinfo=UTC),
                     surface="offers", ids=Identifiers(customer_id=f"cu-{n % 7}"), policy="p",
                     chosen=[])
            for n in numbers
        ]  # fmt: skip
        sink = KafkaSink(bootstrap)
        sink.send([(DECISIONS, decision_key(d), encode_decision(d)) for d in batch])
        sink.close()  # delivers them

    write(range(60))
    index = OwnerIndex(tmp_path / "owners.sqlite")

    first = catch_up(index, bootstrap, DECISIONS, timeout=20.0)
    nothing_new = catch_up(index, bootstrap, DECISIONS, timeout=20.0)
    write(range(60, 75))
    sink = KafkaSink(bootstrap)
    sink.tombstone({b"d-3": index.owned(["customer_id:cu-3"])[b"d-3"][0]})
    sink.close()
    more = catch_up(index, bootstrap, DECISIONS, timeout=20.0)

    assert (first.records, first.decisions) == (60, 60)
    assert (nothing_new.records, nothing_new.decisions) == (0, 0)
    assert (more.records, more.decisions) == (15 + 1, 15)  # the new ones and one tombstone
    live = read_kafka_decisions(bootstrap)
    for person in range(7):
        owner = f"customer_id:cu-{person}"
        expected = {d.decision_id.encode() for d in live if d.ids.customer_id == f"cu-{person}"}
        assert set(index.owned([owner])) == expected
    assert b"d-3" not in index.owned(["customer_id:cu-3"])
    index.close()


def test_an_index_ahead_of_its_topic_is_rebuilt_from_the_start(private_kafka_broker, tmp_path,
                                                               monkeypatch):  # fmt: skip
    bootstrap = private_kafka_broker.bootstrap
    create_topics(bootstrap, [DECISIONS], partitions=1)
    sink = KafkaSink(bootstrap)
    sink.send([(DECISIONS, f"d-{n}".encode(), record(f"d-{n}", customer_id="cu-1"))
               for n in range(3)])  # fmt: skip
    sink.close()
    index = OwnerIndex(tmp_path / "owners.sqlite")
    # As if read from an earlier topic of the same name, deleted since and created again.
    index.apply([TopicRecord(0, 99, b"old", record("old", customer_id="cu-1"))])
    # Kafka answers a fetch at offset 100 of a 3-record partition "offset out of range";
    # Tansu, the test broker, answers nothing, so the broker's answer is played here.
    answered: list[dict[int, int]] = []

    def out_of_range_first(consumer, topic, partitions, timeout):
        if not answered:
            answered.append(index.next_offsets())
            raise OffsetOutOfRangeError(topic, 0, "Broker: Offset out of range")
        yield from read_to_end(consumer, topic, partitions, timeout)

    monkeypatch.setattr(decision_index, "read_to_end", out_of_range_first)

    read = catch_up(index, bootstrap, DECISIONS, timeout=20.0)

    assert answered == [{0: 100}]  # the index asked for where it stopped, and was refused
    assert read.records == 3
    assert set(index.owned(["customer_id:cu-1"])) == {b"d-0", b"d-1", b"d-2"}
    assert index.next_offsets() == {0: 3}
    index.close()


class _Message:
    def __init__(self, code: int, partition: int) -> None:
        self._error, self._partition = _Error(code), partition

    def error(self) -> _Error:
        return self._error

    def partition(self) -> int:
        return self._partition


class _Error:
    def __init__(self, code: int) -> None:
        self._code = code

    def code(self) -> int:
        return self._code

    def __str__(self) -> str:
        return "Broker: Offset out of range"


def test_reading_past_a_partitions_end_says_which_partition():
    from confluent_kafka import KafkaError

    class Consumer:
        def consume(self, _n: int, _timeout: float) -> list[_Message]:
            return [_Message(KafkaError._PARTITION_EOF, 0),
                    _Message(KafkaError._AUTO_OFFSET_RESET, 2)]  # fmt: skip

    with pytest.raises(OffsetOutOfRangeError, match="partition 2: Broker: Offset") as raised:
        list(read_to_end(Consumer(), DECISIONS, [0, 2], 5.0))
    assert raised.value.partition == 2
