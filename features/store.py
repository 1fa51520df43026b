"""The online store: profiles, the identity map, merges, the contact log, offer redemptions.

The streaming flow writes here; the serving API reads here. Two implementations pass
the same contract suite (``tests/features/test_store_contract.py``):
:class:`features.store_redis.RedisStore` for production and
:class:`features.store_sqlite.SqliteStore`, the zero-setup default for local runs.
:class:`OnlineStore` is the contract; the shapes it takes and returns are named below.

>>> with open_store("sqlite", sqlite_path=":memory:") as store:
...     store.write(StoreBatch(
...         profiles=[ProfileWrite("customer_id:c-1", b'{"visits": 3}')],
...         identity=[IdentityWrite("anonymous_id:a-1", "customer_id:c-1")],
...     ))
...     store.resolve(["device_id:d-9", "anonymous_id:a-1"])
...     store.read_profile("customer_id:c-1")
'customer_id:c-1'
b'{"visits": 3}'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self, runtime_checkable

import msgspec

from features.events import AwareTime, MessageChannel

__all__ = [
    "ContactRecord",
    "ErasureReport",
    "IdentityWrite",
    "MergeRecord",
    "OnlineStore",
    "ProfileRead",
    "ProfileWrite",
    "Redemption",
    "StoreBatch",
    "StoreError",
    "StoreUnavailableError",
    "check_batch",
    "open_store",
]

MessageKind = Literal["transactional", "marketing"]
StoreKind = Literal["sqlite", "redis"]

DEFAULT_CONTACT_RETENTION_DAYS = 90.0

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class StoreError(RuntimeError):
    """The store's backend failed (a bug, a full disk, a wrong key type)."""


class StoreUnavailableError(StoreError):
    """The backend cannot be reached or did not answer in time; serving should degrade."""


# --- the shapes -------------------------------------------------------------------------


class ProfileWrite(msgspec.Struct, frozen=True):
    """Set a profile to an absolute value (the flow's serialized profile; opaque here)."""

    profile_id: str
    value: bytes


class IdentityWrite(msgspec.Struct, frozen=True):
    """Map ``identifier`` (e.g. ``"anonymous_id:a-1"``) to a profile; ``None`` unmaps it."""

    identifier: str
    profile_id: str | None


class MergeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One merge: ``from_profile`` was folded into ``into_profile`` because of ``identifier``.

    Stored in the merge log of ``into_profile`` and keyed there by ``merge_id``.
    ``at`` is the event time of the cause, timezone-aware.
    """

    merge_id: str
    at: AwareTime
    identifier: str
    from_profile: str
    into_profile: str
    rule: str
    cause_event_id: str


class ContactRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One message sent to a profile, for frequency caps and duplicate suppression.

    Stored in the contact log of ``profile_id`` and keyed there by ``decision_id`` (a
    decision sends at most one message). A record is an immutable fact: writing it again
    is a no-op, and writing another record with the same key replaces it.
    ``sent_at`` is timezone-aware.
    """

    profile_id: str
    decision_id: str
    channel: MessageChannel
    sent_at: AwareTime
    kind: MessageKind
    campaign: str | None = None
    offer_id: str | None = None
    message_key: str | None = None  # the sender's id of the message (its retries repeat it)


class Redemption(msgspec.Struct, frozen=True):
    """Order ``order_id`` redeemed offer ``offer_id``: counted once, however often written.

    With ``void``, a refund undid that redemption: the pair stops counting, for good, in
    whichever order the two arrive. Offer budgets are spent by the redemptions that stand
    (:meth:`OnlineStore.redemptions`). No person is named: the counts are business data
    and stay when a customer is erased.
    """

    offer_id: str
    order_id: str
    void: bool = False


class ContactDrop(msgspec.Struct, frozen=True):
    """Take decision ``decision_id``'s record out of the contact log of ``profile_id``.

    How a log copied into a customer's (a device's messages from before its login) leaves
    again when the link is undone.
    """

    profile_id: str
    decision_id: str


class StoreBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one flow step writes, applied in one round trip / one transaction.

    Order of application: ``profiles``, ``deleted_profiles`` (so a profile both written
    and deleted ends deleted), ``identity`` (the last write per identifier wins),
    ``merges``, ``contacts``, ``dropped_contacts``; ``redemptions`` touch nothing else, in
    any order.
    """

    profiles: list[ProfileWrite] = []
    deleted_profiles: list[str] = []
    identity: list[IdentityWrite] = []
    merges: list[MergeRecord] = []
    contacts: list[ContactRecord] = []
    dropped_contacts: list[ContactDrop] = []
    redemptions: list[Redemption] = []


class ProfileRead(msgspec.Struct, frozen=True):
    """What a decision reads (:meth:`OnlineStore.read_resolved`).

    ``profile_id`` is the profile the identifiers resolve to (``None``: none mapped),
    ``value`` its stored value (``None``: absent or expired), ``contacts`` its contact
    log from the time asked (of the first identifier when none is mapped).
    """

    profile_id: str | None
    value: bytes | None
    contacts: list[ContactRecord] = []


class ErasureReport(msgspec.Struct, frozen=True):
    """How much :meth:`OnlineStore.erase` removed; all zero when nothing was there."""

    profiles: int = 0
    identifiers: int = 0
    merges: int = 0
    contacts: int = 0

    @property
    def total(self) -> int:
        """Everything removed, summed."""
        return self.profiles + self.identifiers + self.merges + self.contacts


# --- the contract -----------------------------------------------------------------------


@runtime_checkable
class OnlineStore(Protocol):
    """The online store contract, kept by every implementation.

    Data
        Profile values are opaque ``bytes`` (the flow serializes profiles). Identifiers
        and profile ids are non-empty strings such as ``"customer_id:cu-1"``. Datetimes
        are timezone-aware (naive ones raise ``ValueError``); records come back equal to
        what was written, with the UTC offset they were written with.

    Writes are absolute and idempotent
        :meth:`write` sets values; it never increments. Applying a batch again, or
        replaying any suffix of a sequence of batches after a crash, converges to the
        state of applying each batch once: merges and contacts are keyed by their ids,
        redemptions by offer and order, so duplicates never accumulate. One flow worker
        must own the identity writes of an identifier at a time (the flow's keyed
        identity step does), otherwise two concurrent re-mappings may leave the
        per-profile index stale (see ``erase``).

    Round trips
        :meth:`read_profile`, :meth:`read_profiles` and :meth:`resolve` take exactly one
        round trip: they are on the serving hot path. :meth:`read_resolved`, which
        serving calls, takes one when the profile id is the first identifier (always so
        for a ``customer_id``, whose profile is ``customer_id:<id>``), two otherwise.
        :meth:`write` takes one, plus one more only when an identifier moves away from a
        profile that had it.

    Retention
        A profile's contact log keeps records whose ``sent_at`` is within
        ``contact_retention_days`` of the newest record in that log; older ones are
        trimmed on write. Event time, not wall-clock time, so replays converge. With
        ``profile_ttl_s`` set, a profile value expires that many (wall-clock) seconds
        after its last write; the identity map, merges, contacts and redemptions do not
        expire.

    Erasure
        :meth:`erase` removes the profile value, every identity mapping that points to
        the profile, its merge log and its contact log, found through a per-profile
        index maintained on write: never by scanning the keyspace.

    Failures
        A backend that cannot be reached or times out raises
        :class:`StoreUnavailableError` (fast: short timeouts, bounded retries); other
        backend failures raise :class:`StoreError`; bad arguments raise ``ValueError``
        or ``TypeError`` before anything is written.
    """

    def write(self, batch: StoreBatch) -> None:
        """Apply ``batch`` atomically enough for replays to converge (see the class)."""
        ...

    def add_contact_if_unchanged(self, record: ContactRecord, since: datetime, seen: int) -> bool:
        """Write ``record`` only if its profile's log still holds ``seen`` contacts from ``since``.

        The count and the write are one atomic step. A decider that read the log (say the
        contacts of the last week, for caps), decided, and writes with what it saw can't
        add a contact that another decider's write, made in between, would have forbidden:
        ``False`` means the log changed, so read and decide again. Retention trims as in
        :meth:`write`.
        """
        ...

    def read_profile(self, profile_id: str) -> bytes | None:
        """Return the profile's value, or ``None`` if absent or expired; one round trip."""
        ...

    def read_profiles(self, profile_ids: Sequence[str]) -> list[bytes | None]:
        """Return one value (or ``None``) per id, in the order given; one round trip."""
        ...

    def resolve(self, identifiers: Sequence[str]) -> str | None:
        """Return the profile of the first mapped identifier, in the order given.

        ``None`` when none is mapped; one round trip. Callers order identifiers from
        the strongest (``customer_id``) to the weakest (``anonymous_id``).
        """
        ...

    def read_resolved(
        self, identifiers: Sequence[str], contacts_since: datetime | None = None
    ) -> ProfileRead:
        """Resolve ``identifiers`` (as :meth:`resolve`) and read that profile at once.

        Returns its value and, when ``contacts_since`` is given, its contacts with
        ``sent_at >= contacts_since`` (of the first identifier when none is mapped; none
        are read otherwise). The same answers as :meth:`resolve`, :meth:`read_profile`
        and :meth:`contacts_of`, in fewer round trips (see the class).
        """
        ...

    def redemptions(self, offer_ids: Sequence[str]) -> dict[str, int]:
        """Return, per offer, how many distinct orders redeemed it, voids aside; one round trip.

        Serving reads these for the offers that have a budget (spend = count x cost).
        """
        ...

    def identifiers_of(self, profile_id: str) -> list[str]:
        """Return the identifiers mapped to the profile now, sorted."""
        ...

    def merges_of(self, profile_id: str) -> list[MergeRecord]:
        """Return the merges into the profile, ordered by ``at`` then ``merge_id``."""
        ...

    def contacts_of(self, profile_id: str, since: datetime | None = None) -> list[ContactRecord]:
        """Return the profile's contacts with ``sent_at >= since`` (all when ``None``).

        Ordered by ``sent_at`` then ``decision_id``.
        """
        ...

    def erase(self, profile_id: str) -> ErasureReport:
        """Remove everything stored for the profile and say how much; idempotent."""
        ...

    def ping(self) -> bool:
        """Return whether the backend answers; never raises."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards. Idempotent."""
        ...

    def __enter__(self) -> Self:
        """Return the store itself."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        ...


def open_store(
    kind: StoreKind,
    *,
    sqlite_path: str | Path = ":memory:",
    redis_url: str | None = None,
    **options: Any,
) -> OnlineStore:
    """Open the store named by ``kind``; ``options`` go to its constructor.

    The implementation is imported on demand, so a SQLite-only run never imports redis.

    Raises
    ------
    ValueError
        If ``kind`` is unknown, or ``redis_url`` is missing for ``"redis"``.

    """
    if kind == "sqlite":
        from features.store_sqlite import SqliteStore

        return SqliteStore(sqlite_path, **options)
    if kind == "redis":
        if not redis_url:
            msg = "open_store('redis') needs redis_url, e.g. 'redis://127.0.0.1:6379/0'"
            raise ValueError(msg)
        from features.store_redis import RedisStore

        return RedisStore(redis_url, **options)
    msg = f"store kind must be 'sqlite' or 'redis'; got {kind!r}"
    raise ValueError(msg)


# --- helpers shared by the implementations ----------------------------------------------

_encoder = msgspec.json.Encoder()
_merge_decoder = msgspec.json.Decoder(MergeRecord)
_contact_decoder = msgspec.json.Decoder(ContactRecord)


def encode_record(record: MergeRecord | ContactRecord) -> bytes:
    """Encode a merge or contact record as compact JSON (deterministic field order)."""
    return _encoder.encode(record)


def decode_merge(data: bytes) -> MergeRecord:
    """Decode what :func:`encode_record` made of a :class:`MergeRecord`."""
    return _merge_decoder.decode(data)


def decode_contact(data: bytes) -> ContactRecord:
    """Decode what :func:`encode_record` made of a :class:`ContactRecord`."""
    return _contact_decoder.decode(data)


def epoch_us(when: datetime) -> int:
    """Return microseconds since the Unix epoch, exactly (integer arithmetic)."""
    return (when - _EPOCH) // _MICROSECOND


def retention_us(days: float | None) -> int | None:
    """Convert a retention in days to microseconds; ``None`` keeps everything.

    Raises
    ------
    ValueError
        If ``days`` is not positive.

    """
    if days is None:
        return None
    if days <= 0:
        msg = f"contact_retention_days must be positive or None; got {days!r}"
        raise ValueError(msg)
    return round(days * 86_400_000_000)


def check_ttl(profile_ttl_s: float | None) -> None:
    """Reject a non-positive ``profile_ttl_s``."""
    if profile_ttl_s is not None and not profile_ttl_s > 0:
        msg = f"profile_ttl_s must be positive or None; got {profile_ttl_s!r}"
        raise ValueError(msg)


def merge_order(record: MergeRecord) -> tuple[int, str]:
    """Sort key of the merge log: time, then id."""
    return epoch_us(record.at), record.merge_id


def contact_order(record: ContactRecord) -> tuple[int, str]:
    """Sort key of the contact log: send time, then decision id."""
    return epoch_us(record.sent_at), record.decision_id


def last_identity(writes: Iterable[IdentityWrite]) -> dict[str, str | None]:
    """Collapse identity writes to the last one per identifier (what a batch means)."""
    final: dict[str, str | None] = {}
    for write in writes:
        final.pop(write.identifier, None)  # keep the order of the last occurrence
        final[write.identifier] = write.profile_id
    return final


def check_id(value: object, where: str) -> None:
    """Require a non-empty ``str`` id; the message names ``where`` and what arrived."""
    if not isinstance(value, str):
        msg = f"{where} must be a non-empty str; got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    if not value:
        msg = f"{where} must be a non-empty str; got ''"
        raise ValueError(msg)


def check_aware(value: object, where: str) -> None:
    """Require a timezone-aware ``datetime``."""
    if not isinstance(value, datetime):
        msg = f"{where} must be an aware datetime; got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    if value.utcoffset() is None:
        msg = f"{where} must be timezone-aware; got naive {value.isoformat()}"
        raise ValueError(msg)


def check_batch(batch: StoreBatch) -> None:
    """Validate a batch before anything is written.

    Raises
    ------
    TypeError
        If a field has the wrong type (e.g. a ``str`` value instead of ``bytes``).
    ValueError
        If an id is empty or a datetime is naive.

    """
    if not isinstance(batch, StoreBatch):
        msg = f"write() takes a StoreBatch; got {type(batch).__name__}"
        raise TypeError(msg)
    for i, profile in enumerate(batch.profiles):
        check_id(profile.profile_id, f"profiles[{i}].profile_id")
        if not isinstance(profile.value, bytes):
            msg = f"profiles[{i}].value must be bytes; got {type(profile.value).__name__}"
            raise TypeError(msg)
    for i, profile_id in enumerate(batch.deleted_profiles):
        check_id(profile_id, f"deleted_profiles[{i}]")
    for i, link in enumerate(batch.identity):
        check_id(link.identifier, f"identity[{i}].identifier")
        if link.profile_id is not None:
            check_id(link.profile_id, f"identity[{i}].profile_id")
    for i, merge in enumerate(batch.merges):
        for name in ("merge_id", "into_profile"):
            check_id(getattr(merge, name), f"merges[{i}].{name}")
        check_aware(merge.at, f"merges[{i}].at")
    for i, contact in enumerate(batch.contacts):
        for name in ("profile_id", "decision_id"):
            check_id(getattr(contact, name), f"contacts[{i}].{name}")
        check_aware(contact.sent_at, f"contacts[{i}].sent_at")
    for i, drop in enumerate(batch.dropped_contacts):
        for name in ("profile_id", "decision_id"):
            check_id(getattr(drop, name), f"dropped_contacts[{i}].{name}")
    for i, redemption in enumerate(batch.redemptions):
        check_id(redemption.offer_id, f"redemptions[{i}].offer_id")
        check_id(redemption.order_id, f"redemptions[{i}].order_id")
