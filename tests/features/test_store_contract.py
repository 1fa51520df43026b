"""The online-store contract, run against every implementation (SQLite, Redis, Redis Cluster).

Each test gets a fresh store: a new SQLite file, or a new key namespace on the session
Redis server or the session's three-node Redis Cluster. Redis-specific checks (one GET,
key layout, no key left after erasure, outages, a cluster's nodes) sit at the end.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from features.store import (
    ContactDrop,
    ContactRecord,
    ErasureReport,
    IdentityWrite,
    MergeRecord,
    OnlineStore,
    ProfileRead,
    ProfileWrite,
    Redemption,
    StoreBatch,
    StoreError,
    StoreUnavailableError,
    open_store,
)
from features.store_redis import RedisStore
from features.store_sqlite import SqliteStore
from omnioffer.services import RedisClusterServers, RedisServer

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CET = timezone(timedelta(hours=1))


# --- fixtures ---------------------------------------------------------------------------


@dataclass
class Backend:
    """Makes fresh stores of one kind and dumps their raw contents."""

    kind: str
    tmp_path: Path
    server: RedisServer | RedisClusterServers | None
    made: list[OnlineStore] = field(default_factory=list)

    def make(self, **options: Any) -> OnlineStore:
        store: OnlineStore
        if self.kind == "sqlite":
            store = SqliteStore(self.tmp_path / f"store-{len(self.made)}.sqlite", **options)
        else:
            assert self.server is not None
            namespace = f"t{uuid.uuid4().hex[:12]}"
            cluster = isinstance(self.server, RedisClusterServers)
            store = RedisStore(
                self.server.url, namespace=namespace, socket_timeout=2.0, cluster=cluster, **options
            )
        self.made.append(store)
        return store

    def clients(self) -> list[redis.Redis]:
        """A plain client per Redis node (one, unless a cluster)."""
        if isinstance(self.server, RedisClusterServers):
            return self.server.clients()
        assert self.server is not None
        return [self.server.client()]

    def raw(self, store: OnlineStore) -> dict[str, Any]:
        """Everything the store holds, as plain sorted data (TTLs aside), from every node."""
        if isinstance(store, SqliteStore):
            with sqlite3.connect(store.path) as db:
                tables = [name for (name,) in db.execute(_TABLES)]
                return {t: sorted(db.execute(f"SELECT * FROM {t}")) for t in tables}
        assert isinstance(store, RedisStore)
        found: dict[bytes, Any] = {}
        for client in self.clients():
            try:
                for key in client.scan_iter(match=f"{store.namespace}:*", count=1000):
                    found[key] = _dump_key(client, key)
            finally:
                client.close()
        return dict(sorted(found.items()))

    def cleanup(self) -> None:
        for store in self.made:
            store.close()
        if self.server is not None and self.made:
            for client in self.clients():
                for store in self.made:
                    assert isinstance(store, RedisStore)
                    for key in client.scan_iter(match=f"{store.namespace}:*", count=1000):
                        client.delete(key)  # one by one: a cluster node refuses cross-slot DEL
                client.close()


_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"


def _dump_key(client: redis.Redis, key: bytes) -> Any:
    kind = client.type(key)
    if kind == b"string":
        return client.get(key)
    if kind == b"set":
        return sorted(client.smembers(key))
    if kind == b"hash":
        return sorted(client.hgetall(key).items())
    if kind == b"zset":
        return client.zrange(key, 0, -1, withscores=True)
    raise AssertionError(f"unexpected type {kind!r} of {key!r}")


_SERVERS = {"sqlite": None, "redis": "redis_server", "redis_cluster": "redis_cluster"}


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.integration),
        pytest.param("redis_cluster", marks=pytest.mark.integration),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    fixture = _SERVERS[request.param]
    server = request.getfixturevalue(fixture) if fixture else None
    made = Backend(request.param, tmp_path, server)
    yield made
    made.cleanup()


@pytest.fixture
def store(backend: Backend) -> OnlineStore:
    return backend.make()


# --- builders ---------------------------------------------------------------------------


def merge(merge_id: str, into: str, at: datetime = T0, **kw: str) -> MergeRecord:
    fields = {
        "identifier": "anonymous_id:a-1",
        "from_profile": "anonymous_id:a-1",
        "rule": "login",
        "cause_event_id": f"ev-{merge_id}",
    } | kw
    return MergeRecord(merge_id=merge_id, at=at, into_profile=into, **fields)


def contact(decision_id: str, profile_id: str, sent_at: datetime = T0, **kw: Any) -> ContactRecord:
    fields: dict[str, Any] = {"channel": "email", "kind": "marketing", "campaign": "spring"} | kw
    return ContactRecord(profile_id=profile_id, decision_id=decision_id, sent_at=sent_at, **fields)


def link(identifier: str, profile_id: str | None) -> IdentityWrite:
    return IdentityWrite(identifier, profile_id)


A, B, C = "customer_id:cu-1", "customer_id:cu-2", "anonymous_id:a-9"


# --- the contract -----------------------------------------------------------------------


def test_implements_the_protocol(store: OnlineStore) -> None:
    assert isinstance(store, OnlineStore)
    assert store.ping() is True


def test_write_then_read_round_trip(store: OnlineStore) -> None:
    store.write(StoreBatch(profiles=[ProfileWrite(A, b"\x00one"), ProfileWrite(B, b"")]))
    assert store.read_profile(A) == b"\x00one"
    assert store.read_profile(B) == b""  # empty is a value, not absence
    assert store.read_profile(C) is None
    assert store.read_profiles([B, C, A, A]) == [b"", None, b"\x00one", b"\x00one"]
    assert store.read_profiles([]) == []

    store.write(StoreBatch(profiles=[ProfileWrite(A, b"two")]))  # absolute: replaces
    assert store.read_profile(A) == b"two"


def test_the_last_write_of_a_profile_in_a_batch_wins(store: OnlineStore) -> None:
    store.write(StoreBatch(profiles=[ProfileWrite(A, b"1"), ProfileWrite(A, b"2")]))
    assert store.read_profile(A) == b"2"


def test_same_batch_twice_gives_the_same_state(backend: Backend, store: OnlineStore) -> None:
    batch = StoreBatch(
        profiles=[ProfileWrite(A, b"v")],
        identity=[link("anonymous_id:a-1", A), link("device_id:d-1", A)],
        merges=[merge("m-1", A), merge("m-2", A, T0 + timedelta(minutes=1))],
        contacts=[contact("d-1", A), contact("d-2", A, T0 + timedelta(hours=1))],
    )
    store.write(batch)
    once = backend.raw(store)
    store.write(batch)
    assert backend.raw(store) == once
    assert [m.merge_id for m in store.merges_of(A)] == ["m-1", "m-2"]
    assert [c.decision_id for c in store.contacts_of(A)] == ["d-1", "d-2"]
    assert store.identifiers_of(A) == ["anonymous_id:a-1", "device_id:d-1"]


def test_resolve_returns_the_first_mapped_identifier_in_order(store: OnlineStore) -> None:
    store.write(StoreBatch(identity=[link("customer_id:cu-1", A), link("anonymous_id:a-1", B)]))
    assert store.resolve(["customer_id:cu-1", "anonymous_id:a-1"]) == A
    assert store.resolve(["anonymous_id:a-1", "customer_id:cu-1"]) == B
    assert store.resolve(["device_id:nope", "anonymous_id:a-1"]) == B
    assert store.resolve(["device_id:nope"]) is None
    assert store.resolve([]) is None


@pytest.mark.parametrize("since", [None, T0 - timedelta(hours=1), T0 + timedelta(hours=1)])
def test_read_resolved_answers_as_resolve_read_and_contacts(
    store: OnlineStore, since: datetime | None
) -> None:
    store.write(
        StoreBatch(
            profiles=[ProfileWrite(A, b"a"), ProfileWrite(C, b"c"), ProfileWrite(B, b"b")],
            identity=[link(A, A), link("anonymous_id:a-1", A), link(C, C)],
            contacts=[
                contact("d-1", A),
                contact("d-2", A, T0 + timedelta(hours=2)),
                contact("d-3", "device_id:new"),
            ],
        )
    )
    cases = [
        [A, "anonymous_id:a-1"],  # a customer: the profile is the first identifier
        ["anonymous_id:a-1"],  # a visitor merged into a customer
        ["device_id:nope", "anonymous_id:a-1"],
        [C],  # a visitor with a profile of their own
        ["device_id:new"],  # unmapped: no profile, the identifier's own contacts
        [B],  # a value but no mapping: no profile
        [],
    ]
    for identifiers in cases:
        profile_id = store.resolve(identifiers)
        expected = ProfileRead(
            profile_id,
            store.read_profile(profile_id) if profile_id else None,
            store.contacts_of(profile_id or identifiers[0], since)
            if since is not None and identifiers
            else [],
        )
        assert store.read_resolved(identifiers, since) == expected, identifiers
    assert store.read_resolved([A], T0).contacts[0].decision_id == "d-1"
    with pytest.raises(ValueError, match="contacts_since"):
        store.read_resolved([A], datetime(2026, 3, 1))  # noqa: DTZ001


def test_remapping_an_identifier_moves_it_between_indexes(store: OnlineStore) -> None:
    store.write(StoreBatch(identity=[link("anonymous_id:a-1", A), link("device_id:d-1", A)]))
    store.write(StoreBatch(identity=[link("anonymous_id:a-1", B)]))
    assert store.resolve(["anonymous_id:a-1"]) == B
    assert store.identifiers_of(A) == ["device_id:d-1"]
    assert store.identifiers_of(B) == ["anonymous_id:a-1"]

    store.write(StoreBatch(identity=[link("device_id:d-1", None)]))  # unmapped
    assert store.resolve(["device_id:d-1"]) is None
    assert store.identifiers_of(A) == []


def test_remapping_there_and_back_in_one_batch_keeps_the_index(store: OnlineStore) -> None:
    store.write(StoreBatch(identity=[link("anonymous_id:a-1", A)]))
    store.write(StoreBatch(identity=[link("anonymous_id:a-1", B), link("anonymous_id:a-1", A)]))
    assert store.resolve(["anonymous_id:a-1"]) == A
    assert store.identifiers_of(A) == ["anonymous_id:a-1"]
    assert store.identifiers_of(B) == []
    assert store.erase(A).identifiers == 1


@pytest.mark.integration
def test_redis_index_drops_a_moved_identifier(redis_server: RedisServer) -> None:
    backend = Backend("redis", Path(), redis_server)
    store = backend.make()
    assert isinstance(store, RedisStore)
    try:
        store.write(StoreBatch(identity=[link("anonymous_id:a-1", A)]))
        store.write(StoreBatch(identity=[link("anonymous_id:a-1", B)]))
        raw = backend.raw(store)
        assert f"{store.namespace}:{{{A}}}:ids".encode() not in raw  # emptied, so gone
        assert raw[f"{store.namespace}:{{{B}}}:ids".encode()] == [b"anonymous_id:a-1"]
    finally:
        backend.cleanup()


def test_deleting_a_profile_removes_only_its_value(store: OnlineStore) -> None:
    store.write(
        StoreBatch(
            profiles=[ProfileWrite(A, b"a"), ProfileWrite(B, b"b")],
            identity=[link("anonymous_id:a-1", A)],
            merges=[merge("m-1", A)],
            contacts=[contact("d-1", A)],
        )
    )
    store.write(StoreBatch(deleted_profiles=[A]))
    assert store.read_profile(A) is None
    assert store.read_profile(B) == b"b"
    assert store.resolve(["anonymous_id:a-1"]) == A
    assert len(store.merges_of(A)) == 1 and len(store.contacts_of(A)) == 1

    # Written and deleted in one batch: deletions apply after writes.
    store.write(StoreBatch(profiles=[ProfileWrite(B, b"b2")], deleted_profiles=[B]))
    assert store.read_profile(B) is None
    store.write(StoreBatch(deleted_profiles=[B, "never:written"]))  # idempotent


def _erasable(store: OnlineStore) -> None:
    """A with everything; B with its own data; one of A's identifiers moved to B."""
    store.write(
        StoreBatch(
            profiles=[ProfileWrite(A, b"a"), ProfileWrite(B, b"b")],
            identity=[
                link("anonymous_id:a-1", A),
                link("device_id:d-1", A),
                link("email_hash:em:0f", A),
                link("anonymous_id:b-1", B),
            ],
            merges=[merge("m-1", A), merge("m-2", A, from_profile="anonymous_id:a-7")],
            contacts=[contact("d-1", A), contact("d-2", A, T0 + timedelta(days=1))],
        )
    )
    store.write(
        StoreBatch(
            identity=[link("email_hash:em:0f", B)],
            merges=[
                merge("m-9", B, identifier="anonymous_id:b-1", from_profile="anonymous_id:b-0")
            ],
            contacts=[contact("d-9", B)],
        )
    )


def test_erase_removes_everything_of_the_profile(store: OnlineStore) -> None:
    _erasable(store)
    report = store.erase(A)
    assert report == ErasureReport(profiles=1, identifiers=2, merges=2, contacts=2)
    assert report.total == 7
    assert store.read_profile(A) is None
    assert store.resolve(["anonymous_id:a-1", "device_id:d-1"]) is None
    assert store.identifiers_of(A) == []
    assert store.merges_of(A) == [] and store.contacts_of(A) == []
    # B is untouched, including the identifier that moved from A to B.
    assert store.read_profile(B) == b"b"
    assert store.identifiers_of(B) == ["anonymous_id:b-1", "email_hash:em:0f"]
    assert [m.merge_id for m in store.merges_of(B)] == ["m-9"]
    assert [c.decision_id for c in store.contacts_of(B)] == ["d-9"]
    assert store.erase(A) == ErasureReport()  # idempotent


def test_erase_leaves_no_trace(backend: Backend, store: OnlineStore) -> None:
    _erasable(store)
    store.erase(A)
    traces = ("cu-1", "anonymous_id:a-1", "device_id:d-1", "anonymous_id:a-7", "d-1", "d-2")
    raw = backend.raw(store)
    if isinstance(store, RedisStore):
        # Every key left (found by SCAN: fine in a test) and every value in it.
        text = repr(raw)
        assert all(f"{{{A}}}" not in key.decode() for key in raw)
    else:
        # Every row of every table, and the database file itself after the checkpoint.
        tables = {"contacts", "identities", "merges", "profiles", "redemptions"}
        assert set(raw) == {*tables, "redemption_counts", "redemption_voids"}
        text = repr(raw) + Path(store.path).read_bytes().decode("latin-1")
        wal = Path(f"{store.path}-wal")
        if wal.exists():
            text += wal.read_bytes().decode("latin-1")
    for trace in traces:
        assert trace not in text, trace
    assert "customer_id:cu-2" in text  # B is still there: the check looks at the data


def test_contact_log_is_ordered_and_filtered_by_since(store: OnlineStore) -> None:
    late, early = T0 + timedelta(hours=2), T0 - timedelta(hours=2)
    store.write(
        StoreBatch(
            contacts=[
                contact("d-3", A, late, channel="sms"),
                contact("d-1", A, early.astimezone(CET), offer_id="of-1", message_key="k"),
                contact("d-2b", A, T0, kind="transactional", campaign=None),
                contact("d-2a", A, T0, channel="push"),
                contact("d-x", B, T0),
            ]
        )
    )
    got = store.contacts_of(A)
    assert [c.decision_id for c in got] == ["d-1", "d-2a", "d-2b", "d-3"]
    assert got[0] == contact("d-1", A, early, offer_id="of-1", message_key="k")
    assert got[0].sent_at.utcoffset() == timedelta(hours=1)  # written offset kept
    assert got[2].campaign is None and got[2].kind == "transactional"
    assert [c.decision_id for c in store.contacts_of(A, since=T0)] == ["d-2a", "d-2b", "d-3"]
    since = late.astimezone(CET)  # inclusive, compared as instants
    assert [c.decision_id for c in store.contacts_of(A, since=since)] == ["d-3"]
    after = late + timedelta(microseconds=1)
    assert store.contacts_of(A, since=after) == []
    assert store.contacts_of(C) == []


def test_a_contact_record_is_keyed_by_its_decision(store: OnlineStore) -> None:
    store.write(StoreBatch(contacts=[contact("d-1", A, T0, channel="email")]))
    store.write(StoreBatch(contacts=[contact("d-1", A, T0 + timedelta(1), channel="sms")]))
    assert store.contacts_of(A) == [contact("d-1", A, T0 + timedelta(1), channel="sms")]
    assert store.contacts_of(A, since=T0 + timedelta(hours=1))[0].channel == "sms"


def test_a_dropped_contact_leaves_only_its_own_profiles_log(store: OnlineStore) -> None:
    kept, gone = contact("d-1", A, T0), contact("d-2", A, T0 + timedelta(hours=1))
    elsewhere = contact("d-2", B, T0 + timedelta(hours=1))
    store.write(StoreBatch(contacts=[kept, gone, elsewhere]))
    store.write(StoreBatch(dropped_contacts=[ContactDrop(A, "d-2"), ContactDrop(A, "d-9")]))
    assert store.contacts_of(A) == [kept] and store.contacts_of(B) == [elsewhere]
    read = store.read_resolved([A], contacts_since=T0 - timedelta(days=1))
    assert read.contacts == [kept]


def test_a_contact_is_added_only_if_the_log_is_as_it_was_read(store: OnlineStore) -> None:
    since = T0 - timedelta(days=7)
    store.write(StoreBatch(contacts=[contact("d-old", A, T0 - timedelta(days=30)),
                                     contact("d-1", A, T0 - timedelta(days=1))]))  # fmt: skip
    seen = len(store.contacts_of(A, since))
    assert seen == 1
    # Another decider sends in between: the log changed, nothing is written.
    store.write(StoreBatch(contacts=[contact("d-other", A, T0)]))
    assert store.add_contact_if_unchanged(contact("d-2", A, T0), since, seen) is False
    assert [c.decision_id for c in store.contacts_of(A, since)] == ["d-1", "d-other"]
    # Read again, decide again: now it goes in.
    seen = len(store.contacts_of(A, since))
    assert store.add_contact_if_unchanged(contact("d-2", A, T0), since, seen) is True
    assert [c.decision_id for c in store.contacts_of(A, since)] == ["d-1", "d-2", "d-other"]
    # Only the window counts: an older record written since does not block.
    store.write(StoreBatch(contacts=[contact("d-older", A, T0 - timedelta(days=20))]))
    assert store.add_contact_if_unchanged(contact("d-3", A, T0), since, 3) is True
    # A first contact of a profile with an empty log.
    assert store.add_contact_if_unchanged(contact("d-9", B, T0), since, 0) is True
    assert [c.decision_id for c in store.contacts_of(B)] == ["d-9"]
    with pytest.raises(ValueError, match="since"):
        store.add_contact_if_unchanged(contact("d-4", A, T0), datetime(2026, 3, 1), 0)  # noqa: DTZ001


def test_contacts_are_trimmed_by_event_time_retention(backend: Backend) -> None:
    store = backend.make(contact_retention_days=10)
    old, mid = T0 - timedelta(days=12), T0 - timedelta(days=5)
    store.write(StoreBatch(contacts=[contact("d-old", A, old), contact("d-mid", A, mid)]))
    # Event time, not the clock: both survive although T0 may be far from today.
    assert len(store.contacts_of(A)) == 2
    store.write(StoreBatch(contacts=[contact("d-new", A, T0), contact("d-b", B, old)]))
    # Newest is T0 now: d-old is 12 days older and goes, d-mid (5 days) stays.
    assert [c.decision_id for c in store.contacts_of(A)] == ["d-mid", "d-new"]
    assert [c.decision_id for c in store.contacts_of(B)] == ["d-b"]  # B's own newest
    store.write(StoreBatch(contacts=[contact("d-old", A, old)]))  # replayed: trimmed again
    assert [c.decision_id for c in store.contacts_of(A)] == ["d-mid", "d-new"]

    keep_all = backend.make(contact_retention_days=None)
    keep_all.write(StoreBatch(contacts=[contact("d-old", A, old), contact("d-new", A, T0)]))
    assert len(keep_all.contacts_of(A)) == 2


def test_merges_are_ordered_by_time_then_id(store: OnlineStore) -> None:
    store.write(
        StoreBatch(
            merges=[
                merge("m-b", A, T0),
                merge("m-c", A, T0 - timedelta(days=1)),
                merge("m-a", A, T0.astimezone(CET)),
                merge("m-z", B, T0),
            ]
        )
    )
    got = store.merges_of(A)
    assert [m.merge_id for m in got] == ["m-c", "m-a", "m-b"]
    assert got[0] == merge("m-c", A, T0 - timedelta(days=1))
    store.write(StoreBatch(merges=[merge("m-c", A, T0 + timedelta(days=1), rule="card_scan")]))
    assert [(m.merge_id, m.rule) for m in store.merges_of(A)][-1] == ("m-c", "card_scan")
    assert len(store.merges_of(A)) == 3
    assert store.merges_of(C) == []


def test_profile_ttl_expires_values_only(backend: Backend) -> None:
    store = backend.make(profile_ttl_s=0.2)
    store.write(StoreBatch(profiles=[ProfileWrite(A, b"v")], identity=[link("device_id:d", A)]))
    assert store.read_profile(A) == b"v"
    time.sleep(0.35)
    assert store.read_profile(A) is None
    assert store.read_profiles([A]) == [None]
    assert store.resolve(["device_id:d"]) == A


@pytest.mark.parametrize(
    ("batch", "error", "text"),
    [
        (
            StoreBatch(profiles=[ProfileWrite(A, "v")]),  # type: ignore[arg-type]
            TypeError,
            "profiles[0].value must be bytes; got str",
        ),
        (StoreBatch(profiles=[ProfileWrite("", b"v")]), ValueError, "profiles[0].profile_id"),
        (StoreBatch(deleted_profiles=[""]), ValueError, "deleted_profiles[0] must be"),
        (StoreBatch(identity=[link("", A)]), ValueError, "identity[0].identifier"),
        (StoreBatch(identity=[link("x", "")]), ValueError, "identity[0].profile_id"),
        (
            StoreBatch(merges=[merge("m", A, datetime(2026, 3, 1))]),  # noqa: DTZ001
            ValueError,
            "merges[0].at must be timezone-aware; got naive 2026-03-01T00:00:00",
        ),
        (
            StoreBatch(contacts=[contact("d", A, datetime(2026, 3, 1))]),  # noqa: DTZ001
            ValueError,
            "contacts[0].sent_at must be timezone-aware",
        ),
        (StoreBatch(contacts=[contact("", A)]), ValueError, "contacts[0].decision_id"),
        (StoreBatch(redemptions=[Redemption("", "o-1")]), ValueError, "redemptions[0].offer_id"),
        (StoreBatch(redemptions=[Redemption("of-1", "")]), ValueError, "redemptions[0].order_id"),
    ],
)
def test_bad_batches_are_rejected_before_anything_is_written(
    backend: Backend, store: OnlineStore, batch: StoreBatch, error: type[Exception], text: str
) -> None:
    good = StoreBatch(profiles=[ProfileWrite(B, b"ok")])
    mixed = StoreBatch(
        profiles=batch.profiles + good.profiles,  # the bad one stays at [0]
        deleted_profiles=batch.deleted_profiles,
        identity=batch.identity,
        merges=batch.merges,
        contacts=batch.contacts,
        redemptions=batch.redemptions,
    )
    before = backend.raw(store)
    with pytest.raises(error) as info:
        store.write(mixed)
    assert text in str(info.value)
    assert backend.raw(store) == before


def test_redemptions_count_each_order_once_per_offer(store: OnlineStore) -> None:
    assert store.redemptions([]) == {}
    assert store.redemptions(["of-a", "of-b"]) == {"of-a": 0, "of-b": 0}
    store.write(
        StoreBatch(
            redemptions=[
                Redemption("of-a", "o-1"),
                Redemption("of-a", "o-1"),  # the same order twice in a batch: once
                Redemption("of-a", "o-2"),
                Redemption("of-b", "o-1"),  # one order may redeem several offers
            ]
        )
    )
    store.write(StoreBatch(redemptions=[Redemption("of-a", "o-2")]))  # a replay: once
    assert store.redemptions(["of-b", "of-a", "of-c"]) == {"of-b": 1, "of-a": 2, "of-c": 0}
    with pytest.raises(ValueError, match=r"offer_ids\[1\]"):
        store.redemptions(["of-a", ""])


def test_a_void_takes_a_redemption_out_of_the_count_in_either_order(store: OnlineStore) -> None:
    void = Redemption("of-a", "o-1", void=True)
    # Redemption first, then its void: the count goes back down.
    store.write(StoreBatch(redemptions=[Redemption("of-a", "o-1"), Redemption("of-a", "o-2")]))
    assert store.redemptions(["of-a"]) == {"of-a": 2}
    store.write(StoreBatch(redemptions=[void]))
    store.write(StoreBatch(redemptions=[void]))  # a replayed refund: once
    assert store.redemptions(["of-a"]) == {"of-a": 1}
    # The redemption replayed after its void stays voided.
    store.write(StoreBatch(redemptions=[Redemption("of-a", "o-1")]))
    assert store.redemptions(["of-a"]) == {"of-a": 1}
    # A void that arrives first (another partition) holds when the redemption comes.
    store.write(StoreBatch(redemptions=[Redemption("of-b", "o-9", void=True)]))
    assert store.redemptions(["of-b"]) == {"of-b": 0}
    store.write(StoreBatch(redemptions=[Redemption("of-b", "o-9"), Redemption("of-b", "o-8")]))
    assert store.redemptions(["of-b"]) == {"of-b": 1}
    # Both in one batch, either order; a void of one offer leaves the order's others.
    store.write(
        StoreBatch(
            redemptions=[
                Redemption("of-c", "o-5", void=True),
                Redemption("of-c", "o-5"),
                Redemption("of-d", "o-5"),
            ]
        )
    )
    assert store.redemptions(["of-a", "of-b", "of-c", "of-d"]) == {
        "of-a": 1, "of-b": 1, "of-c": 0, "of-d": 1}  # fmt: skip


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.permutations(
    [Redemption("of-a", f"o-{i}") for i in range(4)]
    + [Redemption("of-a", f"o-{i}", void=True) for i in (1, 3, 5)]
))  # fmt: skip
def test_redemption_counts_do_not_depend_on_arrival_order(
    backend: Backend, records: list[Redemption]
) -> None:
    store = backend.make()
    for record in records:
        store.write(StoreBatch(redemptions=[record, record]))
    assert store.redemptions(["of-a"]) == {"of-a": 2}  # o-0 and o-2 stand


def test_erasure_keeps_redemptions(store: OnlineStore) -> None:
    # Budget spend names offers and orders, not people: it outlives an erased customer.
    _erasable(store)
    store.write(StoreBatch(redemptions=[Redemption("of-a", "o-1")]))
    store.erase(A)
    assert store.redemptions(["of-a"]) == {"of-a": 1}


def test_naive_since_is_rejected(store: OnlineStore) -> None:
    with pytest.raises(ValueError, match="since must be timezone-aware"):
        store.contacts_of(A, since=datetime(2026, 3, 1))  # noqa: DTZ001
    with pytest.raises(TypeError, match="write\\(\\) takes a StoreBatch; got dict"):
        store.write({})  # type: ignore[arg-type]


# --- replays converge (property) --------------------------------------------------------

PROFILES = [A, B, "p{3}", "x}y"]  # braces: the hash tag must still be one per profile
IDENTIFIERS = ["anonymous_id:a-1", "device_id:d-1", "customer_id:cu-1", "card_id:k-1"]
DAYS = [0, 1, 30, 95, 200]  # spans the 90-day retention
OFFERS = ["of-a", "of-b", "of-{c}"]

profiles_st = st.sampled_from(PROFILES)
merges_st = st.builds(
    merge,
    st.sampled_from(["m-1", "m-2", "m-3"]),
    profiles_st,
    st.sampled_from(DAYS).map(lambda d: T0 + timedelta(days=d)),
    rule=st.sampled_from(["login", "card_scan"]),
)


def _contact_of(decision: int, profile_id: str) -> ContactRecord:
    # A contact is an immutable fact: its content is a function of its id.
    day = DAYS[decision % len(DAYS)]
    channel = ("email", "sms", "push")[decision % 3]
    return contact(f"d-{decision}", profile_id, T0 + timedelta(days=day), channel=channel)


batches_st = st.builds(
    StoreBatch,
    profiles=st.lists(st.builds(ProfileWrite, profiles_st, st.binary(max_size=4)), max_size=3),
    deleted_profiles=st.lists(profiles_st, max_size=1),
    identity=st.lists(
        st.builds(IdentityWrite, st.sampled_from(IDENTIFIERS), st.none() | profiles_st),
        max_size=3,
    ),
    merges=st.lists(merges_st, max_size=2),
    contacts=st.lists(
        st.builds(_contact_of, st.integers(0, 9), profiles_st),
        max_size=3,
    ),
    redemptions=st.lists(
        st.builds(Redemption, st.sampled_from(OFFERS), st.sampled_from(["o-1", "o-2", "o-3"])),
        max_size=3,
    ),
)


def _replay(backend: Backend, batches: list[StoreBatch]) -> dict[str, Any]:
    store = backend.make()
    for batch in batches:
        store.write(batch)
    state = {
        "raw": backend.raw(store),
        "profiles": store.read_profiles(PROFILES),
        "resolved": [store.resolve([i]) for i in IDENTIFIERS],
        "ids": [store.identifiers_of(p) for p in PROFILES],
        "merges": [store.merges_of(p) for p in PROFILES],
        "contacts": [store.contacts_of(p) for p in PROFILES],
        "redemptions": store.redemptions(OFFERS),
    }
    if isinstance(store, RedisStore):  # namespaces differ; compare the rest of the keys
        state["raw"] = {k.split(b":", 1)[1]: v for k, v in state["raw"].items()}
    return state


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=st.lists(batches_st, min_size=1, max_size=6), data=st.data())
def test_replaying_any_suffix_converges(
    backend: Backend, batches: list[StoreBatch], data: st.DataObject
) -> None:
    # A crash after `stop` batches, restarting from the checkpoint at `start` <= stop.
    stop = data.draw(st.integers(0, len(batches)), label="crashed after")
    start = data.draw(st.integers(0, stop), label="resumed from")
    once = _replay(backend, batches)
    assert _replay(backend, batches[:stop] + batches[start:]) == once
    doubled = [b for batch in batches for b in (batch, batch)]
    assert _replay(backend, doubled) == once
    backend.cleanup()
    backend.made.clear()


# --- SQLite specifics -------------------------------------------------------------------


def test_sqlite_in_memory_and_threads() -> None:
    with SqliteStore(":memory:") as store:

        def work(n: int) -> None:
            for i in range(50):
                pid = f"p-{n}-{i}"
                store.write(StoreBatch(profiles=[ProfileWrite(pid, b"v")]))
                assert store.read_profile(pid) == b"v"

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert store.read_profiles([f"p-{n}-49" for n in range(4)]) == [b"v"] * 4
    with pytest.raises(StoreError, match="is closed"):
        store.read_profile("p-0-0")
    store.close()  # idempotent


def test_open_store_picks_the_implementation(tmp_path: Path) -> None:
    with open_store("sqlite", sqlite_path=tmp_path / "a" / "s.db") as store:
        assert isinstance(store, SqliteStore)
    with pytest.raises(ValueError, match="needs redis_url"):
        open_store("redis")
    with pytest.raises(ValueError, match="must be 'sqlite' or 'redis'; got 'mongo'"):
        open_store("mongo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="contact_retention_days must be positive"):
        open_store("sqlite", contact_retention_days=0)
    with pytest.raises(ValueError, match="profile_ttl_s must be positive"):
        open_store("sqlite", profile_ttl_s=-1)


# --- Redis specifics --------------------------------------------------------------------


def _command_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): v["calls"] for name, v in stats.items()}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    changed = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    changed.pop("info", None)  # our own INFO calls
    return changed


@pytest.mark.integration
def test_redis_hot_reads_are_one_command_each(redis_server: RedisServer) -> None:
    probe = redis_server.client()
    with RedisStore(redis_server.url, namespace=f"t{uuid.uuid4().hex[:12]}") as store:
        store.write(StoreBatch(profiles=[ProfileWrite(A, b"v")], identity=[link("device_id:d", A)]))
        store.read_resolved([A])  # opens the serving read's own connection (HELLO)
        for call, expected in [
            (lambda: store.read_profile(A), {"get": 1}),
            (lambda: store.read_profiles([A, B]), {"mget": 1}),
            (lambda: store.resolve(["anonymous_id:x", "device_id:d"]), {"mget": 1}),
            (lambda: store.read_resolved([A, "device_id:d"]), {"mget": 1}),
            # one pipelined round trip (the script's own ZRANGEBYSCORE is counted too)
            (lambda: store.read_resolved([A], T0), {"mget": 1, "evalsha": 1, "zrangebyscore": 1}),
            # a visitor merged into a customer: that profile is read after
            (lambda: store.read_resolved(["device_id:d"]), {"mget": 1, "get": 1}),
        ]:
            before = _command_calls(probe)
            call()
            assert _delta(before, _command_calls(probe)) == expected
    probe.close()


@pytest.mark.integration
def test_redis_keys_follow_the_layout(redis_server: RedisServer) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    probe = redis_server.client()
    with RedisStore(redis_server.url, namespace=namespace) as store:
        for pid in [A, "x}y", "p{3}"]:
            store.write(
                StoreBatch(
                    profiles=[ProfileWrite(pid, b"v")],
                    identity=[link(f"device_id:{pid}", pid)],
                    merges=[merge("m-1", pid)],
                    contacts=[contact("d-1", pid)],
                    redemptions=[Redemption(f"of-{pid}", "o-1")],
                )
            )
            assert probe.smembers(f"{namespace}:offer:{{of-{pid}}}:redeemed") == {b"o-1"}
            own = [k for k in probe.scan_iter(match=f"{namespace}:*") if b"id:{" not in k]
            keys = sorted(k.decode() for k in own if k.startswith(f"{namespace}:{{{pid}".encode()))
            assert keys == sorted(
                f"{namespace}:{{{pid}}}:{part}"
                for part in ("p", "ids", "merges", "contacts", "crec")
            )
            assert len({key_slot(k.encode()) for k in keys}) == 1  # one cluster slot
            assert probe.get(f"{namespace}:id:{{device_id:{pid}}}") == pid.encode()
            assert probe.ttl(store.profile_key(pid)) == -1  # no TTL by default
            store.erase(pid)
    with RedisStore(redis_server.url, namespace=namespace, profile_ttl_s=600) as store:
        store.write(StoreBatch(profiles=[ProfileWrite(A, b"v")]))
        assert 590 < probe.ttl(store.profile_key(A)) <= 600
        store.erase(A)
    probe.close()
    for bad in ["", "a{b", "a}"]:
        with pytest.raises(ValueError, match="namespace must be non-empty and without braces"):
            RedisStore(redis_server.url, namespace=bad)


@pytest.mark.integration
def test_redis_survives_a_script_cache_flush(redis_server: RedisServer) -> None:
    with RedisStore(redis_server.url, namespace=f"t{uuid.uuid4().hex[:12]}") as store:
        store.write(StoreBatch(identity=[link("device_id:d", A)], contacts=[contact("d-1", A)]))
        probe = redis_server.client()
        probe.script_flush()  # what a restart does to the script cache
        store.write(StoreBatch(contacts=[contact("d-2", A)]))
        probe.script_flush()
        assert [c.decision_id for c in store.contacts_of(A)] == ["d-1", "d-2"]
        probe.script_flush()
        assert [c.decision_id for c in store.read_resolved([A], T0).contacts] == ["d-1", "d-2"]
        probe.script_flush()
        assert store.erase(A) == ErasureReport(profiles=0, identifiers=1, merges=0, contacts=2)
        probe.script_flush()
        store.write(StoreBatch(redemptions=[Redemption("of-a", "o-1"), Redemption("of-a", "o-2"),
                                            Redemption("of-a", "o-2", void=True)]))  # fmt: skip
        assert store.redemptions(["of-a"]) == {"of-a": 1}
        probe.close()


@pytest.mark.integration
def test_redis_outage_fails_fast_and_recovers(private_redis_server: RedisServer) -> None:
    server = private_redis_server
    with RedisStore(server.url, namespace="outage") as store:
        store.write(StoreBatch(profiles=[ProfileWrite(A, b"v")], identity=[link(A, A)]))
        assert store.read_resolved([A]).value == b"v"  # serving's connection is open
        server.stop()
        try:
            # Each call gives up after one retry on the short socket timeout, with no
            # backoff; how fast that is, the serve benchmark's degraded path measures.
            with pytest.raises(StoreUnavailableError, match="read_profile: server unavailable"):
                store.read_profile(A)
            with pytest.raises(StoreUnavailableError, match="read_resolved: server unavail"):
                store.read_resolved([A], T0)
            with pytest.raises(StoreUnavailableError):
                store.write(StoreBatch(profiles=[ProfileWrite(A, b"w")]))
            assert store.ping() is False
        finally:
            server.start()
        # Same port, empty server: the pooled connections are stale; one retry covers it.
        store.write(StoreBatch(profiles=[ProfileWrite(A, b"back")], identity=[link(A, A)]))
        assert store.read_profile(A) == b"back"
        assert store.read_resolved([A], T0) == ProfileRead(A, b"back", [])
        assert store.ping() is True


@pytest.mark.integration
def test_redis_serving_read_stays_in_sync_after_a_timeout(redis_server: RedisServer) -> None:
    # A reply that arrives after its read timed out must not answer the next request.
    with RedisStore(redis_server.url, namespace=f"t{uuid.uuid4().hex[:12]}") as store:
        store.write(StoreBatch(
            profiles=[ProfileWrite(A, b"a"), ProfileWrite(B, b"b")],
            identity=[link(A, A), link(B, B)],
        ))  # fmt: skip
        assert store.read_resolved([A]) == ProfileRead(A, b"a")  # the connection is open
        probe = redis_server.client()
        probe.client_pause(400)  # longer than the store's 0.1 s socket timeout
        with pytest.raises(StoreUnavailableError, match="read_resolved"):
            store.read_resolved([A])
        time.sleep(0.5)  # the paused MGET of A is answered now, on the dropped socket
        assert store.read_resolved([B]) == ProfileRead(B, b"b")
        assert store.read_resolved([A]) == ProfileRead(A, b"a")
        probe.close()


# --- Redis Cluster specifics --------------------------------------------------------------


@pytest.mark.integration
def test_cluster_reads_span_nodes(redis_cluster: RedisClusterServers) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    visitor, device = "anonymous_id:a-1", "device_id:d-7"
    with RedisStore(redis_cluster.url, namespace=namespace, cluster=True) as store:
        store.write(StoreBatch(
            profiles=[ProfileWrite(A, b"a"), ProfileWrite(B, b"b")],
            identity=[link(A, A), link(visitor, A), link(device, A), link(B, B)],
            contacts=[contact("d-1", A)],
        ))  # fmt: skip
        holders = redis_cluster.keys(f"{namespace}:*")
        request_keys = [store.identity_key(i) for i in (visitor, device, A)]
        request_keys.append(store.profile_key(A))
        # The keys of one request sit on more than one node, so the reads below cross nodes.
        assert len({holders[key] for key in request_keys}) >= 2
        assert store.read_resolved([visitor, device], T0) == ProfileRead(
            A, b"a", [contact("d-1", A)]
        )
        assert store.read_resolved([device, B]) == ProfileRead(A, b"a")
        assert store.resolve(["anonymous_id:nobody", device]) == A
        assert store.read_profiles([B, A, C]) == [b"b", b"a", None]
        assert store.identifiers_of(A) == sorted([A, visitor, device])
        assert store.erase(A) == ErasureReport(profiles=1, identifiers=3, merges=0, contacts=1)
        left = redis_cluster.keys(f"{namespace}:*")
        assert sorted(left) == sorted(
            [store.identity_key(B), store.profile_key(B), f"{namespace}:{{{B}}}:ids"]
        )
        store.erase(B)


@pytest.mark.integration
def test_cluster_survives_a_script_cache_flush(redis_cluster: RedisClusterServers) -> None:
    with RedisStore(
        redis_cluster.url, namespace=f"t{uuid.uuid4().hex[:12]}", cluster=True
    ) as store:

        def flush() -> None:
            for client in redis_cluster.clients():
                client.script_flush()
                client.close()

        store.write(StoreBatch(identity=[link("device_id:d", A)], contacts=[contact("d-1", A)]))
        flush()
        store.write(StoreBatch(contacts=[contact("d-2", A)]))
        flush()
        assert [c.decision_id for c in store.contacts_of(A)] == ["d-1", "d-2"]
        flush()
        assert [c.decision_id for c in store.read_resolved([A], T0).contacts] == ["d-1", "d-2"]
        flush()
        assert store.erase(A) == ErasureReport(profiles=0, identifiers=1, merges=0, contacts=2)


@pytest.mark.integration
def test_cluster_down_fails_calls_not_the_store_and_recovers() -> None:
    cluster = RedisClusterServers()  # not started: the store must still open
    store = RedisStore(cluster.url, namespace="outage", cluster=True)
    try:
        with pytest.raises(StoreUnavailableError, match="unreachable"):
            store.read_resolved([A])
        assert store.ping() is False
        cluster.start()
        store.write(StoreBatch(profiles=[ProfileWrite(A, b"v")], identity=[link(A, A)]))
        assert store.read_resolved([A]) == ProfileRead(A, b"v")
        cluster.stop()
        with pytest.raises(StoreUnavailableError):
            store.read_resolved([A], T0)
        with pytest.raises(StoreUnavailableError):
            store.write(StoreBatch(profiles=[ProfileWrite(A, b"w")]))
        assert store.ping() is False
        cluster.start()  # the same ports, empty, formed again
        store.write(StoreBatch(profiles=[ProfileWrite(A, b"back")], identity=[link(A, A)]))
        assert store.read_resolved([A], T0) == ProfileRead(A, b"back", [])
        assert store.ping() is True
    finally:
        store.close()
        cluster.stop()


@pytest.mark.integration
def test_cluster_mode_against_a_plain_server_says_so(redis_server: RedisServer) -> None:
    with RedisStore(redis_server.url, namespace="plain", cluster=True) as store:
        with pytest.raises(StoreError, match=r"[Cc]luster mode is not enabled") as caught:
            store.read_profile(A)
        assert not isinstance(caught.value, StoreUnavailableError)
        assert store.ping() is False


def _move_slot(cluster: RedisClusterServers, slot: int, holder: int, to: int) -> None:
    """Reshard one slot and its keys from node ``holder`` to node ``to``, step by step."""
    clients = cluster.clients()
    try:
        ids = [client.execute_command("CLUSTER MYID").decode() for client in clients]
        target, source = clients[to], clients[holder]
        target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[holder])
        source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[to])
        keys = source.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000)
        node = cluster.nodes[to]
        source.execute_command("MIGRATE", node.host, node.port, "", 0, 5000, "KEYS", *keys)
        for client in clients:
            client.execute_command("CLUSTER SETSLOT", slot, "NODE", ids[to])
    finally:
        for client in clients:
            client.close()


@pytest.mark.integration
def test_cluster_reads_follow_a_resharded_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    with (
        RedisClusterServers() as cluster,
        RedisStore(cluster.url, namespace="reshard", cluster=True) as store,
    ):
        store.write(StoreBatch(profiles=[ProfileWrite(A, b"a")], identity=[link(A, A)],
                               contacts=[contact("d-1", A)]))  # fmt: skip
        client = store._client
        pipelines: list[int] = []
        real_pipeline = client.pipeline
        monkeypatch.setattr(
            client, "pipeline", lambda **kw: pipelines.append(1) or real_pipeline(**kw)
        )
        assert store.read_resolved([A], T0) == ProfileRead(A, b"a", [contact("d-1", A)])
        assert pipelines == []  # straight to the nodes
        slot = key_slot(store.profile_key(A).encode())
        holder = cluster.keys(f"reshard:{{{A}}}:p")[store.profile_key(A)]
        _move_slot(cluster, slot, holder, to=(holder + 1) % 3)
        assert cluster.keys(f"reshard:{{{A}}}:*") and set(
            cluster.keys(f"reshard:{{{A}}}:*").values()) == {(holder + 1) % 3}  # fmt: skip
        # The store's slot map is stale: MOVED, then the cluster client's path answers.
        assert store.read_resolved([A], T0) == ProfileRead(A, b"a", [contact("d-1", A)])
        assert pipelines == [1]
        # It learnt the new owner: straight to the nodes again.
        assert store.read_resolved([A], T0) == ProfileRead(A, b"a", [contact("d-1", A)])
        assert pipelines == [1]


@pytest.mark.integration
def test_cluster_node_trouble_is_an_outage_the_caller_can_degrade_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with (
        RedisClusterServers() as cluster,
        RedisStore(cluster.url, namespace="trouble", cluster=True) as store,
    ):
        others = [f"customer_id:cu-{n}" for n in range(12)]
        store.write(StoreBatch(
            profiles=[ProfileWrite(p, p.encode()) for p in [A, *others]],
            identity=[link(p, p) for p in [A, *others]],
        ))  # fmt: skip
        holders = cluster.keys("trouble:*")
        hung = holders[store.profile_key(A)]
        elsewhere = next(p for p in others if holders[store.profile_key(p)] != hung)
        probe = cluster.clients()[hung]
        probe.client_pause(400)  # a node that does not answer (longer than the 0.1 s timeout)
        with pytest.raises(StoreUnavailableError, match="read_resolved"):
            store.read_resolved([A, elsewhere])
        with pytest.raises(StoreUnavailableError, match="read_resolved"):
            store.read_resolved([A], T0)
        time.sleep(0.5)  # the node answers again, the late replies went to dropped sockets
        # The same through redis-py's cluster pipeline (the path after a MOVED), which
        # hands a node's timeout back as a reply among the others.
        with monkeypatch.context() as patch:
            patch.setattr(store._hot, "call_cluster", lambda client, commands: None)
            probe.client_pause(400)
            with pytest.raises(StoreUnavailableError, match="read_resolved"):
                store.read_resolved([A, elsewhere])
            time.sleep(0.5)
            assert store.read_resolved([A]) == ProfileRead(A, A.encode())
        assert store.read_resolved([A]) == ProfileRead(A, A.encode())
        assert store.read_resolved([elsewhere]) == ProfileRead(elsewhere, elsewhere.encode())
        assert store.ping() is True
        probe.close()
        cluster.nodes[hung].stop()  # one primary of three gone: not ready
        assert store.ping() is False
        with pytest.raises(StoreUnavailableError):
            store.read_resolved([A])
        assert store.read_resolved([elsewhere]) == ProfileRead(elsewhere, elsewhere.encode())


@pytest.mark.integration
def test_cluster_reads_and_writes_go_on_through_a_failover() -> None:
    visitor = "anonymous_id:a-1"
    with (
        RedisClusterServers(replicas=1) as cluster,
        RedisStore(cluster.url, namespace="failover", cluster=True) as store,
    ):
        store.write(StoreBatch(
            profiles=[ProfileWrite(A, b"a"), ProfileWrite(B, b"b")],
            identity=[link(A, A), link(visitor, A), link(B, B)],
            contacts=[contact("d-1", A)], redemptions=[Redemption("of-a", "o-1")],
        ))  # fmt: skip
        assert store.read_resolved([visitor], T0) == ProfileRead(A, b"a", [contact("d-1", A)])
        holder = cluster.keys("failover:*")[store.profile_key(A)]
        promoted = cluster.failover(holder)  # its replica takes over; the old one follows it
        assert cluster.keys("failover:*")[store.profile_key(A)] == promoted != holder
        # The store's slot map names the old primary: MOVED, then the new map.
        assert store.read_resolved([visitor], T0) == ProfileRead(A, b"a", [contact("d-1", A)])
        store.write(StoreBatch(profiles=[ProfileWrite(A, b"a2")], contacts=[contact("d-2", A)],
                               redemptions=[Redemption("of-a", "o-2")]))  # fmt: skip
        assert store.read_resolved([A], T0) == ProfileRead(
            A, b"a2", [contact("d-1", A), contact("d-2", A)]
        )
        assert store.redemptions(["of-a"]) == {"of-a": 2}
        assert store.ping() is True
        assert store.erase(A) == ErasureReport(profiles=1, identifiers=2, merges=0, contacts=2)
        assert store.read_resolved([B]) == ProfileRead(B, b"b")


@pytest.mark.integration
def test_cluster_recovers_by_itself_when_a_primary_dies_and_its_replica_is_voted_in() -> None:
    with (
        RedisClusterServers(replicas=1) as cluster,
        RedisStore(cluster.url, namespace="crash", cluster=True) as store,
    ):
        ids = [f"customer_id:cu-{n}" for n in range(12)]
        store.write(StoreBatch(profiles=[ProfileWrite(p, p.encode()) for p in ids],
                               identity=[link(p, p) for p in ids]))  # fmt: skip
        holders = cluster.keys("crash:*")
        # The node the store's URL names dies: the hardest case for the client.
        victim = next(p for p in ids if holders[store.profile_key(p)] == 0)
        probe = cluster.clients()[0]
        assert probe.execute_command("WAIT", 1, 5000) == 1  # the replica has the writes
        probe.close()
        cluster.nodes[0].stop()  # dies; the others vote its replica in after 5 s
        outages = 0
        deadline = time.monotonic() + 120  # a bound for a cluster that never heals
        while True:
            try:
                read = store.read_resolved([victim])
                break
            except StoreUnavailableError:  # never anything else: serving degrades on it
                outages += 1
                assert time.monotonic() < deadline, "the cluster never failed over"
                time.sleep(0.1)
        assert outages > 0 and read == ProfileRead(victim, victim.encode())
        store.write(StoreBatch(profiles=[ProfileWrite(victim, b"again")]))
        assert store.read_resolved([victim]) == ProfileRead(victim, b"again")
        # Ready again once every node has the new map (each learns it on its own).
        while not store.ping():
            assert time.monotonic() < deadline, "never ready again"
            time.sleep(0.1)
