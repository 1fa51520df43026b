"""Where the feature flow writes: the online store, one batch per Bytewax batch.

Items are absolute values; within a batch the last value of each profile or identifier
wins, so a batch is one store round trip however many events it covered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from features.pipeline import IdentityOut, MoveOut, ProfileOut, RedemptionOut, StoreItem
from features.store import (
    ContactDrop,
    IdentityWrite,
    MergeRecord,
    OnlineStore,
    ProfileWrite,
    Redemption,
    StoreBatch,
    last_identity,
)
from flows import metrics


def store_batch(items: list[StoreItem]) -> tuple[StoreBatch, list[str], list[int]]:
    """Coalesce items into one :class:`StoreBatch`; also return profiles to erase, and lags."""
    profiles: dict[str, bytes | None] = {}
    erased: set[str] = set()
    identity: dict[str, str | None] = {}
    merges: list[MergeRecord] = []
    redemptions: dict[RedemptionOut, None] = {}
    produced: list[int] = []
    for item in items:
        if isinstance(item, ProfileOut):
            profiles[item.profile_id] = item.value
            if item.erased:
                erased.add(item.profile_id)
            if item.produced_ms:
                produced.append(item.produced_ms)
        elif isinstance(item, IdentityOut):
            identity[item.identifier] = item.profile_id
        elif isinstance(item, MoveOut):
            merges.append(merge_record(item))
            metrics.MERGES.labels(item.rule).inc()
        elif isinstance(item, RedemptionOut):
            redemptions[item] = None
    # The records path (identity, merges) and the profiles path reach the sink in batches
    # of their own: a person's erasure may come before the merge records of the links that
    # preceded it. A merge of an identifier this batch forgets is theirs: never write it.
    merges = [m for m in merges if identity.get(m.identifier, "") is not None]
    batch = StoreBatch(
        profiles=[ProfileWrite(p, v) for p, v in profiles.items() if v is not None],
        deleted_profiles=[p for p, v in profiles.items() if v is None and p not in erased],
        identity=[IdentityWrite(i, p) for i, p in identity.items()],
        merges=merges,
        redemptions=[redemption_record(r) for r in redemptions],
    )
    return batch, sorted(erased), produced


def erase_then_keep(store: OnlineStore, erased: list[str], batch: StoreBatch) -> None:
    """Erase each profile an erasure emptied, then write again what the batch has for it.

    After the batch is written, so the erasure reaches the identity entries the batch
    indexed; a person whose next events came in the same batch keeps that new profile and
    the identity entries written for it, and nothing from before the erasure.
    """
    for profile_id in erased:
        store.erase(profile_id)
    gone = set(erased)
    kept = StoreBatch(
        profiles=[p for p in batch.profiles if p.profile_id in gone],
        identity=[
            IdentityWrite(identifier, owner)
            for identifier, owner in last_identity(batch.identity).items()
            if owner in gone
        ],
    )
    if kept.profiles or kept.identity:
        store.write(kept)


def carry_contacts(store: OnlineStore, merges: list[MergeRecord]) -> int:
    """Keep customers' contact logs in step with the fragments that join and leave them.

    A device or cookie messaged before its login has its contacts logged under its own
    profile (or under itself, when nothing was known about it). When it joins a customer,
    those records are copied into the customer's log, so the customer's caps and duplicate
    rules count them, as its history is merged. When it leaves again (an unlink, or a
    device found shared), the copies leave the customer's log; the originals stay with the
    fragment. Only a fragment's own log moves, never one customer's into another's; the
    copies keep their decision ids, so doing it again changes nothing. Returns how many
    records were copied or dropped.
    """
    changed = 0
    for merge in merges:
        fragment, source, target = merge.identifier, merge.from_profile, merge.into_profile
        if source == target or fragment not in (source, target):
            continue
        own = store.contacts_of(fragment)
        if not own:
            continue
        if source == fragment:  # joins ``target``
            batch = StoreBatch(contacts=[
                msgspec.structs.replace(contact, profile_id=target) for contact in own
            ])  # fmt: skip
        else:  # back on its own, out of ``source``
            batch = StoreBatch(
                dropped_contacts=[ContactDrop(source, contact.decision_id) for contact in own]
            )
        store.write(batch)  # one merge at a time: a link and its undoing may share a batch
        changed += len(own)
    return changed


def merge_record(move: MoveOut) -> MergeRecord:
    """Turn a fragment move into the store's merge record (idempotent id)."""
    return MergeRecord(
        merge_id=f"{move.fragment}|{move.into_profile}|{move.cause_event_id}",
        at=datetime.fromtimestamp(move.at, tz=UTC),
        identifier=move.fragment,
        from_profile=move.from_profile,
        into_profile=move.into_profile,
        rule=move.rule,
        cause_event_id=move.cause_event_id,
    )


def redemption_record(item: RedemptionOut) -> Redemption:
    """Turn a redemption (or its void) of the pipeline into the store's record."""
    return Redemption(item.offer_id, item.order_id, item.void)


class _StorePartition(StatelessSinkPartition[tuple[str, list[StoreItem]]]):
    def __init__(self, store: OnlineStore) -> None:
        self._store = store

    def write_batch(self, keyed: list[tuple[str, list[StoreItem]]]) -> None:
        items = [item for _profile, produced in keyed for item in produced]
        batch, to_erase, produced = store_batch(items)
        started = time.perf_counter()
        self._store.write(batch)
        carry_contacts(self._store, batch.merges)
        erase_then_keep(self._store, to_erase, batch)
        metrics.SINK_SECONDS.observe(time.perf_counter() - started)
        metrics.PROFILE_WRITES.inc(len(batch.profiles))
        for produced_ms in produced:
            metrics.observe_lag(produced_ms)

    def close(self) -> None:
        self._store.close()


class StoreSink(DynamicSink[tuple[str, list[StoreItem]]]):
    """Write pipeline outputs to an online store; each worker opens its own connection.

    Items are ``(key, [store items])``: a profile and what the profiles step emits for it,
    an identifier's records, or offer redemptions.
    """

    def __init__(self, open_store: Callable[[], OnlineStore]) -> None:
        self._open_store = open_store

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StorePartition:
        return _StorePartition(self._open_store())
