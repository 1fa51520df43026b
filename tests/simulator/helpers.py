"""Helpers shared by the simulator tests."""

from __future__ import annotations

from features.events import Event


def owner_of(event: Event, owners: dict[str, set[str]]) -> str:
    """Return the ground-truth customer behind an event (by customer id, else any id)."""
    if event.ids.customer_id:
        return event.ids.customer_id
    for identifier in event.ids.present().values():
        if len(owners.get(identifier, ())) == 1:
            return next(iter(owners[identifier]))
    raise AssertionError(f"no owner for {event}")
