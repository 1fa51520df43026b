"""Batch recomputation: every profile from the event log, with the stream's own code.

``omnioffer features rebuild`` runs :func:`features.pipeline.recompute` (the logic the
streaming flow runs, step for step) over the file event log, and either writes the result
to the online store or writes point-in-time feature snapshots: profiles *as of* a time,
built only from events whose event time is before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from features.events import Event
from features.pipeline import Recomputed, recompute
from features.profile import decode_profile, profile_features
from features.store import IdentityWrite, OnlineStore, ProfileWrite, StoreBatch
from flows.sinks import carry_contacts, merge_record, redemption_record


def write_to_store(result: Recomputed, store: OnlineStore, *, chunk: int = 500) -> int:
    """Write recomputed profiles, identity map, merges and redemptions; return profiles."""
    profiles = list(result.profiles.items())
    for start in range(0, len(profiles), chunk):
        part = profiles[start : start + chunk]
        store.write(StoreBatch(profiles=[ProfileWrite(p, v) for p, v in part]))
    identity = list(result.identity.items())
    for start in range(0, len(identity), chunk):
        part = identity[start : start + chunk]
        store.write(StoreBatch(identity=[IdentityWrite(i, p) for i, p in part]))
    merges = [merge_record(move) for move in result.moves]
    for start in range(0, len(merges), chunk):
        store.write(StoreBatch(merges=merges[start : start + chunk]))
        carry_contacts(store, merges[start : start + chunk])
    redeemed = [redemption_record(r) for r in result.redemptions]
    for start in range(0, len(redeemed), chunk):
        store.write(StoreBatch(redemptions=redeemed[start : start + chunk]))
    return len(profiles)


def features_as_of(events: list[Event], as_of: datetime) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(profile_id, features)`` for every profile, from events before ``as_of`` only."""
    result = recompute(e for e in events if e.event_time < as_of)
    at = int(as_of.timestamp())
    for profile_id in sorted(result.profiles):
        yield profile_id, profile_features(decode_profile(result.profiles[profile_id]), at)
