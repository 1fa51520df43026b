"""The eraser's index of the Kafka ``decisions`` topic: which records each person owns.

The topic is keyed by decision id, so erasing a person means finding the keys of their
records; without an index that is a read of the whole topic per pass (a day of decisions
at 500 requests/s is about an hour). :class:`OwnerIndex` keeps, in a SQLite file, each
record's key, partition and offset under every owner it names (profile id and identifier
fragment ids, :func:`features.decisions.owner_ids`), and how far it has read each
partition. :func:`catch_up` reads only what was added since, decoding just the owner
fields; an erasure is then a lookup and a tombstone per record.

The index follows the topic: a tombstone read back removes its key, records that
retention removed (below a partition's low watermark) are dropped, and a partition that
ends before where the index stopped (the topic was deleted and created again) is read
again from its start. Deleting the file rebuilds it on the next pass, in one full read;
do that when the topic is created again with as many records as before, which offsets
alone cannot tell.

>>> import tempfile
>>> from features.kafka_log import TopicRecord
>>> with tempfile.TemporaryDirectory() as folder:
...     index = OwnerIndex(f"{folder}/owners.sqlite")
...     index.apply([TopicRecord(0, 7, b"d-1", b'{"profile_id":"p-1","ids":{}}'),
...                  TopicRecord(1, 3, b"d-2", b'{"ids":{"card_id":"k-1"}}')])
...     found = index.owned(["p-1", "card_id:k-1"])
...     index.close()
2
>>> dict(sorted(found.items()))
{b'd-1': (0, 7), b'd-2': (1, 3)}
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from features.decisions import decode_owner, owner_ids
from features.kafka_log import (
    READ_FETCH_WAIT_MS,
    OffsetOutOfRangeError,
    TopicRecord,
    read_to_end,
)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS owned (
    owner TEXT NOT NULL, key BLOB NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (owner, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS owned_by_key ON owned (key);
CREATE INDEX IF NOT EXISTS owned_by_position ON owned (partition, offset);
CREATE TABLE IF NOT EXISTS read_to (partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS about (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counts (erasure_id TEXT PRIMARY KEY, decisions INTEGER NOT NULL);
"""
_CHUNK = 500  # SQLite's bound on host parameters is 32,766; keep statements small


class OwnerIndex:
    """Decision records by owner, in one SQLite file (one eraser writes it).

    ``topic`` is remembered at creation: a file built from another topic is refused.
    """

    def __init__(self, path: Path | str, topic: str = "decisions") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no commit's order
        self._db.executescript(_SCHEMA)
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO about VALUES ('topic', ?)", (topic,))
        [(indexed,)] = self._db.execute("SELECT value FROM about WHERE name = 'topic'")
        if indexed != topic:
            self._db.close()
            message = f"{self.path} indexes topic {indexed!r}, not {topic!r}"
            raise ValueError(message)

    def next_offsets(self) -> dict[int, int]:
        """Return, per partition, the offset the next read starts at."""
        return dict(self._db.execute("SELECT partition, next_offset FROM read_to"))

    def apply(self, records: Iterable[TopicRecord]) -> int:
        """Index records read in offset order; return how many were decisions.

        One transaction with the read positions, so a crash never leaves the index ahead
        of, or behind, what it says it read. A record that is not a decision is passed
        over; a tombstone removes its key.
        """
        rows: list[tuple[str, bytes, int, int]] = []
        tombstones: list[tuple[bytes]] = []
        positions: dict[int, int] = {}
        for record in records:
            positions[record.partition] = record.offset + 1
            if record.key is None:
                continue  # the decisions topic keys every record; an older one may not
            if record.value is None:
                tombstones.append((record.key,))
                continue
            try:
                owners = owner_ids(decode_owner(record.value))
            except ValueError:
                continue
            rows.extend((o, record.key, record.partition, record.offset) for o in owners)
        decisions = len({row[1] for row in rows})
        with self._db:
            # In offset order a tombstone follows its record; with unique decision ids a
            # key is never written after its tombstone, so deleting last is exact.
            self._db.executemany("INSERT OR REPLACE INTO owned VALUES (?, ?, ?, ?)", rows)
            self._db.executemany("DELETE FROM owned WHERE key = ?", tombstones)
            self._db.executemany(
                "INSERT INTO read_to VALUES (?, ?) ON CONFLICT (partition) "
                "DO UPDATE SET next_offset = excluded.next_offset", positions.items())  # fmt: skip
        return decisions

    def owned(self, targets: Iterable[str]) -> dict[bytes, tuple[int, int]]:
        """Return the indexed records any of ``targets`` owns: key -> (partition, offset)."""
        found: dict[bytes, tuple[int, int]] = {}
        wanted = sorted(set(targets))
        for first in range(0, len(wanted), _CHUNK):
            chunk = wanted[first : first + _CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, partition, offset FROM owned WHERE owner IN ({marks})"
            for key, partition, offset in self._db.execute(query, chunk):
                found[bytes(key)] = (partition, offset)
        return found

    def count_once(self, erasure_id: str, decisions: int) -> int:
        """Keep a job's count before its tombstones are written; return the count kept.

        A pass cut short after its tombstones does the job again from an index that no
        longer holds those records (it read the tombstones): the count it reports is the
        one kept here by the first try, not the 0 it finds.
        """
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO counts VALUES (?, ?)", (erasure_id, decisions))
        [(kept,)] = self._db.execute(
            "SELECT decisions FROM counts WHERE erasure_id = ?", (erasure_id,)
        )
        return int(kept)

    def done_with(self, erasure_ids: Iterable[str]) -> None:
        """Drop the counts of jobs whose pass is committed."""
        with self._db:
            self._db.executemany("DELETE FROM counts WHERE erasure_id = ?",
                                 ((e,) for e in erasure_ids))  # fmt: skip

    def forget(self, keys: Iterable[bytes]) -> None:
        """Remove records from the index (their tombstones are on the broker)."""
        with self._db:
            self._db.executemany("DELETE FROM owned WHERE key = ?", ((k,) for k in keys))

    def drop_before(self, partition: int, offset: int) -> int:
        """Remove the records of ``partition`` below ``offset`` (retention removed them)."""
        with self._db:
            gone = self._db.execute("DELETE FROM owned WHERE partition = ? AND offset < ?",
                                    (partition, offset)).rowcount  # fmt: skip
        return gone

    def reset(self, partition: int) -> None:
        """Forget everything about ``partition``: the next read starts at its beginning."""
        with self._db:
            self._db.execute("DELETE FROM owned WHERE partition = ?", (partition,))
            self._db.execute("DELETE FROM read_to WHERE partition = ?", (partition,))

    def size(self) -> int:
        """Return how many (owner, record) entries the index holds."""
        [(n,)] = self._db.execute("SELECT count(*) FROM owned")
        return int(n)

    def close(self) -> None:
        """Close the file."""
        self._db.close()


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What one :func:`catch_up` read: records, decisions among them, entries expired."""

    records: int
    decisions: int
    expired: int


def catch_up(index: OwnerIndex, bootstrap: str, topic: str, *, timeout: float = 30.0,
             batch: int = 5_000) -> CatchUp:  # fmt: skip
    """Read ``topic`` from where the index stopped to its end now, and index it.

    A partition the index has not read starts at its beginning. One whose end is now
    before where the index stopped (the topic was deleted and created again: the broker
    answers "offset out of range") is forgotten and read again from its beginning.
    Raises one of :data:`features.kafka_log.KAFKA_ERRORS` when the broker fails; what was
    indexed before the failure stays (with its positions).
    """
    total = CatchUp(0, 0, 0)
    for _attempt in range(64):  # each retry forgets one more partition
        try:
            read = _read_new(index, bootstrap, topic, timeout, batch)
        except OffsetOutOfRangeError as stale:
            log.warning("%s; the topic was created again? Indexing the partition again from "
                        "its start", stale)  # fmt: skip
            index.reset(stale.partition)
            continue
        return CatchUp(total.records + read.records, total.decisions + read.decisions,
                       total.expired + read.expired)  # fmt: skip
    message = f"indexing {topic!r}: partitions kept falling out of range"
    raise RuntimeError(message)


def _read_new(index: OwnerIndex, bootstrap: str, topic: str, timeout: float, batch: int,
              ) -> CatchUp:  # fmt: skip
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"omnioffer-index-{uuid.uuid4().hex}",
        "enable.auto.commit": False, "enable.partition.eof": True,
        "fetch.wait.max.ms": READ_FETCH_WAIT_MS,
        # Never skip silently: a position past the end is an error (see catch_up).
        "auto.offset.reset": "error",
    })  # fmt: skip
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return CatchUp(0, 0, 0)
        partitions = sorted(metadata.partitions)
        read_to = index.next_offsets()
        expired = 0
        starts = []
        for partition in partitions:
            # Only the low watermark is used: records below it are gone (retention).
            low, _high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout)  # fmt: skip
            expired += index.drop_before(partition, low)
            start = read_to.get(partition)
            start = OFFSET_BEGINNING if start is None else max(start, low)
            starts.append(TopicPartition(topic, partition, start))
        consumer.assign(starts)
        records = decisions = 0
        pending: list[TopicRecord] = []
        for record in read_to_end(consumer, topic, partitions, timeout):
            pending.append(record)
            if len(pending) >= batch:
                records, decisions = records + len(pending), decisions + index.apply(pending)
                pending = []
        records, decisions = records + len(pending), decisions + index.apply(pending)
        return CatchUp(records, decisions, expired)
    finally:
        consumer.close()
