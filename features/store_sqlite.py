"""The embedded online store: one SQLite file (or ``:memory:``), the zero-setup default.

Same contract as :class:`features.store.OnlineStore`. Tables::

    profiles(profile_id PK, value, expires_at)       expires_at: unix s, NULL = never
    identities(identifier PK, profile_id)            + index on profile_id
    merges(profile_id, merge_id, at_us, record)      PK (profile_id, merge_id)
    contacts(profile_id, decision_id, sent_at_us, record)
                                                      PK (profile_id, decision_id)
    redemptions(offer_id, order_id)                  PK (offer_id, order_id)
    redemption_voids(offer_id, order_id)             PK (offer_id, order_id): refunded
    redemption_counts(offer_id PK, orders)           redemptions not voided, read by serving

The index on ``identities.profile_id`` is the per-profile index that makes erasure
direct. ``record`` holds the JSON of the merge/contact record, ``*_us`` its time in
microseconds since the epoch for ordering and filtering.

One connection, shared by threads behind a lock: SQLite serializes writers anyway, and
this keeps ``:memory:`` databases (one per connection) usable from any thread. Files
use WAL so readers in other processes do not block the writer. ``secure_delete`` and a
WAL checkpoint after :meth:`SqliteStore.erase` make erased data leave the files too.

>>> from features.store import ProfileWrite, StoreBatch
>>> with SqliteStore(":memory:") as store:
...     store.write(StoreBatch(profiles=[ProfileWrite("p-1", b"v")]))
...     store.erase("p-1")
ErasureReport(profiles=1, identifiers=0, merges=0, contacts=0)
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType

from features.closing import Closing
from features.store import (
    DEFAULT_CONTACT_RETENTION_DAYS,
    ContactRecord,
    ErasureReport,
    MergeRecord,
    ProfileRead,
    Redemption,
    StoreBatch,
    StoreError,
    StoreUnavailableError,
    check_aware,
    check_batch,
    check_id,
    check_ttl,
    decode_contact,
    decode_merge,
    encode_record,
    epoch_us,
    last_identity,
    retention_us,
)

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    profile_id TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    expires_at REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS identities (
    identifier TEXT PRIMARY KEY,
    profile_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS identities_by_profile ON identities (profile_id);
CREATE TABLE IF NOT EXISTS merges (
    profile_id TEXT NOT NULL,
    merge_id   TEXT NOT NULL,
    at_us      INTEGER NOT NULL,
    record     BLOB NOT NULL,
    PRIMARY KEY (profile_id, merge_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS redemptions (
    offer_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    PRIMARY KEY (offer_id, order_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS redemption_voids (
    offer_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    PRIMARY KEY (offer_id, order_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS redemption_counts (
    offer_id TEXT PRIMARY KEY,
    orders   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contacts (
    profile_id  TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    sent_at_us  INTEGER NOT NULL,
    record      BLOB NOT NULL,
    PRIMARY KEY (profile_id, decision_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS contacts_by_time ON contacts (profile_id, sent_at_us);
"""

# SQLite's bound-parameter limit is 32766 since 3.32; stay far below it.
_CHUNK = 500
_LIVE = "(expires_at IS NULL OR expires_at > ?)"


class SqliteStore(Closing):
    """The online store in one SQLite database; see :class:`features.store.OnlineStore`.

    Parameters
    ----------
    path
        Database file (created with its folder if missing), or ``":memory:"``.
    profile_ttl_s
        Seconds after its last write that a profile value expires; ``None``: never.
    contact_retention_days
        Contact records older than this before the newest one of the same profile are
        trimmed on write; ``None`` keeps them all.
    timeout
        Seconds to wait for another process's write lock before
        :class:`~features.store.StoreUnavailableError`.

    """

    def __init__(
        self,
        path: str | Path,
        *,
        profile_ttl_s: float | None = None,
        contact_retention_days: float | None = DEFAULT_CONTACT_RETENTION_DAYS,
        timeout: float = 5.0,
    ) -> None:
        check_ttl(profile_ttl_s)
        self.path = str(path)
        self.profile_ttl_s = profile_ttl_s
        self._retention_us = retention_us(contact_retention_days)
        self._lock = threading.Lock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a batch is exactly
        # one transaction and reads never sit inside an implicit one.
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._set_up(timeout)
        except sqlite3.Error:
            self._db.close()
            raise

    def _set_up(self, timeout: float) -> None:
        # Switching a new file to WAL can fail at once with "database is locked" while
        # another connection (another flow worker) does the same: SQLite's busy handler
        # does not cover it, so wait and retry within the timeout.
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.path != ":memory:":
                    self._db.execute("PRAGMA journal_mode=WAL")
                    self._db.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints
                self._db.execute("PRAGMA secure_delete=ON")  # erased rows are overwritten
                self._db.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # --- writes -----------------------------------------------------------------------

    def write(self, batch: StoreBatch) -> None:
        """Apply ``batch`` in one transaction (see :class:`~features.store.StoreBatch`)."""
        check_batch(batch)
        now = time.time()
        expires = None if self.profile_ttl_s is None else now + self.profile_ttl_s
        identity = last_identity(batch.identity)
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO profiles VALUES (?, ?, ?) ON CONFLICT (profile_id) DO UPDATE"
                " SET value = excluded.value, expires_at = excluded.expires_at",
                [(p.profile_id, p.value, expires) for p in batch.profiles],
            )
            db.executemany(
                "DELETE FROM profiles WHERE profile_id = ?",
                [(pid,) for pid in batch.deleted_profiles],
            )
            db.executemany(
                "INSERT INTO identities VALUES (?, ?) ON CONFLICT (identifier) DO UPDATE"
                " SET profile_id = excluded.profile_id",
                [(ident, pid) for ident, pid in identity.items() if pid is not None],
            )
            db.executemany(
                "DELETE FROM identities WHERE identifier = ?",
                [(ident,) for ident, pid in identity.items() if pid is None],
            )
            db.executemany(
                "INSERT OR REPLACE INTO merges VALUES (?, ?, ?, ?)",
                [
                    (m.into_profile, m.merge_id, epoch_us(m.at), encode_record(m))
                    for m in batch.merges
                ],
            )
            db.executemany(
                "INSERT OR REPLACE INTO contacts VALUES (?, ?, ?, ?)",
                [
                    (c.profile_id, c.decision_id, epoch_us(c.sent_at), encode_record(c))
                    for c in batch.contacts
                ],
            )
            self._trim_contacts(db, {c.profile_id for c in batch.contacts})
            db.executemany(
                "DELETE FROM contacts WHERE profile_id = ? AND decision_id = ?",
                [(d.profile_id, d.decision_id) for d in batch.dropped_contacts],
            )
            for redemption in batch.redemptions:
                self._count_redemption(db, redemption)

    @staticmethod
    def _count_redemption(db: sqlite3.Connection, redemption: Redemption) -> None:
        # The count moves only when the pair is new to its table and the other table does
        # not cancel it: a replay leaves it as it is, a void before its redemption holds,
        # and serving reads one row per offer instead of counting orders.
        pair = (redemption.offer_id, redemption.order_id)
        table, other = ("redemption_voids", "redemptions") if redemption.void else (
            "redemptions", "redemption_voids")  # fmt: skip
        if not db.execute(f"INSERT OR IGNORE INTO {table} VALUES (?, ?)", pair).rowcount:
            return
        in_other = db.execute(
            f"SELECT 1 FROM {other} WHERE offer_id = ? AND order_id = ?", pair
        ).fetchone()
        if redemption.void and in_other:
            step = -1
        elif not redemption.void and not in_other:
            step = 1
        else:
            return
        db.execute(
            "INSERT INTO redemption_counts VALUES (?, ?) ON CONFLICT (offer_id)"
            " DO UPDATE SET orders = orders + excluded.orders",
            (redemption.offer_id, step),
        )

    def _trim_contacts(self, db: sqlite3.Connection, profile_ids: set[str]) -> None:
        if self._retention_us is None:
            return
        # Cutoff from the newest record of the profile (event time), not the clock, so a
        # replay trims exactly what the first run trimmed.
        db.executemany(
            "DELETE FROM contacts WHERE profile_id = ?1 AND sent_at_us < ("
            " SELECT MAX(sent_at_us) FROM contacts WHERE profile_id = ?1) - ?2",
            [(pid, self._retention_us) for pid in sorted(profile_ids)],
        )

    def add_contact_if_unchanged(self, record: ContactRecord, since: datetime, seen: int) -> bool:
        """Count and write in one ``BEGIN IMMEDIATE`` transaction (atomic across processes)."""
        check_batch(StoreBatch(contacts=[record]))
        check_aware(since, "since")
        with self._transaction() as db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM contacts WHERE profile_id = ? AND sent_at_us >= ?",
                (record.profile_id, epoch_us(since)),
            ).fetchone()
            if count != seen:
                return False
            db.execute(
                "INSERT OR REPLACE INTO contacts VALUES (?, ?, ?, ?)",
                (record.profile_id, record.decision_id, epoch_us(record.sent_at),
                 encode_record(record)),
            )  # fmt: skip
            self._trim_contacts(db, {record.profile_id})
        return True

    def erase(self, profile_id: str) -> ErasureReport:
        """Delete the profile's rows in every table; see the contract."""
        check_id(profile_id, "profile_id")
        with self._transaction() as db:
            counts = [
                db.execute(f"DELETE FROM {table} WHERE profile_id = ?", (profile_id,)).rowcount
                for table in ("profiles", "identities", "merges", "contacts")
            ]
        with self._locked() as db:
            # Old page images in the WAL still hold the erased rows until a checkpoint.
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return ErasureReport(*counts)

    # --- reads ------------------------------------------------------------------------

    def read_profile(self, profile_id: str) -> bytes | None:
        """Return the profile's value, or ``None``."""
        with self._locked() as db:
            row = db.execute(
                f"SELECT value FROM profiles WHERE profile_id = ? AND {_LIVE}",
                (profile_id, time.time()),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def read_profiles(self, profile_ids: Sequence[str]) -> list[bytes | None]:
        """Return one value (or ``None``) per id, in the order given."""
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(profile_ids))
        now = time.time()
        with self._locked() as db:
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT profile_id, value FROM profiles"
                    f" WHERE profile_id IN ({marks}) AND {_LIVE}",
                    (*chunk, now),
                )
                found.update((pid, bytes(value)) for pid, value in rows)
        return [found.get(pid) for pid in profile_ids]

    def resolve(self, identifiers: Sequence[str]) -> str | None:
        """Return the profile of the first mapped identifier, in the order given."""
        unique = list(dict.fromkeys(identifiers))
        if not unique:
            return None
        marks = ",".join("?" * len(unique))
        with self._locked() as db:
            rows = dict(
                db.execute(
                    f"SELECT identifier, profile_id FROM identities WHERE identifier IN ({marks})",
                    unique,
                ).fetchall()
            )
        return next((rows[i] for i in unique if i in rows), None)

    def redemptions(self, offer_ids: Sequence[str]) -> dict[str, int]:
        """Return the number of orders that redeemed each offer, voids aside (one row each)."""
        for i, offer_id in enumerate(offer_ids):
            check_id(offer_id, f"offer_ids[{i}]")
        counts = dict.fromkeys(offer_ids, 0)
        if not counts:
            return counts
        marks = ", ".join("?" * len(counts))
        with self._locked() as db:
            rows = db.execute(
                f"SELECT offer_id, orders FROM redemption_counts WHERE offer_id IN ({marks})",
                list(counts),
            ).fetchall()
        counts.update(rows)
        return counts

    def identifiers_of(self, profile_id: str) -> list[str]:
        """Return the identifiers mapped to the profile, sorted."""
        with self._locked() as db:
            rows = db.execute(
                "SELECT identifier FROM identities WHERE profile_id = ? ORDER BY identifier",
                (profile_id,),
            ).fetchall()
        return [ident for (ident,) in rows]

    def merges_of(self, profile_id: str) -> list[MergeRecord]:
        """Return the merges into the profile, ordered by time then id."""
        with self._locked() as db:
            rows = db.execute(
                "SELECT record FROM merges WHERE profile_id = ? ORDER BY at_us, merge_id",
                (profile_id,),
            ).fetchall()
        return [decode_merge(record) for (record,) in rows]

    def contacts_of(self, profile_id: str, since: datetime | None = None) -> list[ContactRecord]:
        """Return the profile's contacts with ``sent_at >= since``, oldest first."""
        low = None
        if since is not None:
            check_aware(since, "since")
            low = epoch_us(since)
        with self._locked() as db:
            rows = db.execute(
                "SELECT record FROM contacts WHERE profile_id = ?1"
                " AND (?2 IS NULL OR sent_at_us >= ?2) ORDER BY sent_at_us, decision_id",
                (profile_id, low),
            ).fetchall()
        return [decode_contact(record) for (record,) in rows]

    def read_resolved(
        self, identifiers: Sequence[str], contacts_since: datetime | None = None
    ) -> ProfileRead:
        """Resolve, then read the value and (when asked) the contacts; no round trips here."""
        if contacts_since is not None:
            check_aware(contacts_since, "contacts_since")
        profile_id = self.resolve(identifiers)
        value = self.read_profile(profile_id) if profile_id else None
        if contacts_since is None or not identifiers:
            return ProfileRead(profile_id, value)
        return ProfileRead(
            profile_id, value, self.contacts_of(profile_id or identifiers[0], contacts_since)
        )

    # --- lifecycle --------------------------------------------------------------------

    def ping(self) -> bool:
        """Return whether the database answers."""
        try:
            with self._locked() as db:
                db.execute("SELECT 1").fetchone()
        except StoreError:
            return False
        return True

    def close(self) -> None:
        """Close the connection; idempotent."""
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                db.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    # --- internals --------------------------------------------------------------------

    def _locked(self) -> _Locked:
        return _Locked(self, transaction=False)

    def _transaction(self) -> _Locked:
        return _Locked(self, transaction=True)


class _Locked:
    """Hold the store's lock (and optionally one transaction); map sqlite3 errors."""

    def __init__(self, store: SqliteStore, *, transaction: bool) -> None:
        self._store = store
        self._transaction = transaction

    def __enter__(self) -> sqlite3.Connection:
        self._store._lock.acquire()
        db = self._store._db
        if db is None:
            self._store._lock.release()
            msg = f"{self._store!r} is closed"
            raise StoreError(msg)
        if self._transaction:
            # IMMEDIATE takes the write lock up front: no deadlock-prone upgrade later.
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self._store._lock.release()
                raise _store_error(exc) from exc
        return db

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        db = self._store._db
        try:
            if self._transaction and db is not None:
                db.execute("COMMIT" if exc is None else "ROLLBACK")
        except sqlite3.Error as commit_error:
            if exc is None:
                raise _store_error(commit_error) from commit_error
        finally:
            self._store._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise _store_error(exc) from exc


def _store_error(exc: sqlite3.Error) -> StoreError:
    # "database is locked" after the busy timeout is the one transient failure.
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        msg = f"sqlite store busy: {exc}"
        return StoreUnavailableError(msg)
    msg = f"sqlite store failed: {exc}"
    return StoreError(msg)
