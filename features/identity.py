"""Identity resolution: which profile each identifier's history belongs to.

Rules (documented in ``docs/identity.md``; predictable and independent of arrival order):

1. Every event belongs to the *fragment* of its strongest identifier, in the order
   ``customer_id > card_id > device_id > anonymous_id > email_hash > phone_hash``
   (:func:`fragment_of`), e.g. ``"anonymous_id:a-81f"``.
2. A ``customer_id`` is a person. Its fragment is always in the profile
   ``"customer_id:<id>"``; two customer ids are never merged.
3. An ``identity_link`` that carries a ``customer_id`` links every other identifier in it to
   that customer. A link without a ``customer_id`` is recorded but merges nothing: merging
   never follows chains of weak identifiers.
4. A weak identifier linked to exactly one customer joins that customer's profile; its
   history seen before the link is merged in, once. Linked to none, it is its own profile.
5. A weak identifier linked to two customers or more (a shared family tablet) joins none of
   them: it goes back to a profile of its own and the split is recorded (rule
   ``shared_identifier``). The customers' own histories are never mixed.
6. Every change of profile is a :class:`~features.store.MergeRecord`-like :class:`Move`
   with its rule and the event that caused it, so it can be explained and undone.
7. An ``identity_unlink`` undoes links: each weak identifier in it is no longer linked to
   its ``customer_id``, and a link between them seen before or after is ignored. The
   identifier then belongs where its remaining links put it (rules 4 and 5), with its
   whole history; the move is recorded with rule ``unlinked`` (or ``linked`` to the one
   customer left).

>>> fragment_of(Identifiers(anonymous_id="a-1", customer_id="cu-7"))
'customer_id:cu-7'
>>> profile_for("anonymous_id:a-1", {"cu-7"}), profile_for("anonymous_id:a-1", {"cu-7", "cu-9"})
('customer_id:cu-7', 'anonymous_id:a-1')
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from features.events import ID_FIELDS, Identifiers, IdentityLink, IdentityUnlink

CUSTOMER = "customer_id"


def fragment_id(field: str, value: str) -> str:
    """Return the fragment id of one identifier, e.g. ``"card_id:k-123"``."""
    return f"{field}:{value}"


def fragment_of(ids: Identifiers) -> str | None:
    """Return the fragment of the strongest identifier present, or ``None`` if there is none."""
    for name in ID_FIELDS:
        if (value := getattr(ids, name)) is not None:
            return fragment_id(name, value)
    return None


def identifiers_of(ids: Identifiers) -> list[str]:
    """Return every identifier in ``ids`` as a fragment id, strongest first."""
    return [fragment_id(name, value) for name, value in ids.present().items()]


def is_customer(fragment: str) -> bool:
    """Return whether a fragment id is a customer id (a person, never merged away)."""
    return fragment.startswith(CUSTOMER + ":")


def customer_profile(customer_id: str) -> str:
    """Return the profile id of a customer."""
    return fragment_id(CUSTOMER, customer_id)


def profile_for(fragment: str, linked_customers: Iterable[str]) -> str:
    """Return the profile a fragment belongs to, given the customers it is linked to."""
    if is_customer(fragment):
        return fragment
    customers = set(linked_customers)
    if len(customers) == 1:
        return customer_profile(next(iter(customers)))
    return fragment


def link_edges(link: IdentityLink | IdentityUnlink) -> list[tuple[str, str]]:
    """Return the ``(weak fragment, customer_id)`` pairs a link asserts or an unlink undoes."""
    customer = link.ids.customer_id
    if customer is None:
        return []
    return [(f, customer) for f in identifiers_of(link.ids) if not is_customer(f)]


@dataclass(frozen=True, slots=True)
class Move:
    """A fragment changed profile: merged into a customer, or split off a shared one."""

    fragment: str
    from_profile: str
    into_profile: str
    rule: str
    at: int
    cause_event_id: str


def move_rule(linked_customers: set[str]) -> str:
    """Name the rule behind a fragment's current profile (for merge records)."""
    if len(linked_customers) == 1:
        return "linked"
    if linked_customers:
        return "shared_identifier"
    return "unlinked"
