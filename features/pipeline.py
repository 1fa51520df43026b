"""The feature pipeline's logic, free of any framework: route, resolve, aggregate, merge.

Three keyed steps, each a plain class, wired into Bytewax by :mod:`flows.features_flow` and
run in-process by :func:`recompute` for batch recomputation — the same code both ways:

1. :class:`PersonIndex`, keyed by customer: remembers which identifiers are linked to the
   customer so an erasure can reach all of them;
2. :class:`FragmentLogic`, keyed by fragment (one identifier's history): deduplicates,
   aggregates, and decides which profile the fragment belongs to (:mod:`features.identity`);
3. :class:`~features.profile.ProfileState`, keyed by profile: the merge of its fragments.

Outputs for the online store are :class:`ProfileOut`, :class:`IdentityOut` and
:class:`MoveOut` items; every value is absolute so a replay converges. Offer redemptions
(:func:`redemptions_of`, for budgets) go to the store beside the keyed steps, as
:class:`RedemptionOut` items keyed by offer and order.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from features.aggregate import Aggregate, Applied, Contribution, contribution
from features.events import (
    ErasureRequest,
    Event,
    Identifiers,
    IdentityLink,
    IdentityUnlink,
    Purchase,
    Refund,
)
from features.identity import (
    CUSTOMER,
    customer_profile,
    fragment_id,
    fragment_of,
    identifiers_of,
    is_customer,
    link_edges,
    move_rule,
    profile_for,
)
from features.journeys import ERASED, LEFT, JourneyFact
from features.profile import ProfileState, profile_features


# --- items between steps --------------------------------------------------------------------
@dataclass(slots=True)
class Observe:
    """An event's contribution, for the fragment it belongs to.

    ``produced_ms`` is when the source received the event (for lag metrics only).
    """

    contribution: Contribution
    produced_ms: int = 0


@dataclass(frozen=True, slots=True)
class LinkTo:
    """The fragment is linked to ``customer`` by an identity link."""

    customer: str
    at: int
    event_id: str


@dataclass(frozen=True, slots=True)
class UnlinkFrom:
    """The fragment is not ``customer``'s: an identity unlink, for good."""

    customer: str
    at: int
    event_id: str


@dataclass(frozen=True, slots=True)
class EraseBefore:
    """Forget the fragment's history up to ``at`` (an erasure request)."""

    at: int
    event_id: str


FragmentInput = Observe | LinkTo | UnlinkFrom | EraseBefore


@dataclass(slots=True)
class Delta:
    """One event applied by ``fragment``, for its profile to mirror."""

    fragment: str
    contribution: Contribution
    applied: Applied
    produced_ms: int = 0


@dataclass(frozen=True, slots=True)
class Join:
    """``fragment`` (with its whole history) joins the profile."""

    fragment: str
    state: Aggregate


@dataclass(frozen=True, slots=True)
class Leave:
    """``fragment`` (with its whole history) leaves the profile; ``erased`` by a request."""

    fragment: str
    state: Aggregate
    erased: bool = False


ProfileInput = Delta | Join | Leave


@dataclass(frozen=True, slots=True)
class ProfileOut:
    """Write the profile's absolute value, or delete it when ``value`` is ``None``.

    ``erased`` says an erasure request emptied the profile: the store then removes
    everything it held for the profile (merges, contact log), not only the value, and
    keeps ``value`` if the person's next events already filled it again.
    """

    profile_id: str
    value: bytes | None
    erased: bool = False
    produced_ms: int = 0


@dataclass(frozen=True, slots=True)
class IdentityOut:
    """Map an identifier to a profile (``None`` removes the mapping)."""

    identifier: str
    profile_id: str | None


@dataclass(frozen=True, slots=True)
class MoveOut:
    """A fragment changed profile; recorded so it can be explained and undone."""

    fragment: str
    from_profile: str
    into_profile: str
    rule: str
    at: int
    cause_event_id: str


@dataclass(frozen=True, slots=True)
class RedemptionOut:
    """An order redeemed an offer (spend against its budget), or a refund voided that.

    No person is named: budgets count orders per offer, whoever placed them.
    """

    offer_id: str
    order_id: str
    void: bool = False


StoreItem = ProfileOut | IdentityOut | MoveOut | RedemptionOut
# A journey fact with the profile's features right after its event (``None``: an erasure).
JourneyInput = tuple[JourneyFact, dict[str, Any] | None]


@dataclass(slots=True)
class JourneyFeed:
    """What one profile batch tells the journeys: its facts, and the latest event time."""

    profile_id: str
    max_ts: int
    inputs: list[JourneyInput]


ForProfile = tuple[str, ProfileInput | IdentityOut | MoveOut]
# Identity and merge records go from the fragment's own step straight to the store, so one
# worker (the identifier's) writes an identifier's mapping, in order.
STORE = ""
Keyed = tuple[str, object]


# Requests about a customer that go through their person index (a tuple: route runs per event).
_PERSON_REQUESTS = (ErasureRequest, IdentityUnlink)


# --- step 0: routing --------------------------------------------------------------------------
def route(event: Event, produced_ms: int = 0) -> list[Keyed]:
    """Key an event for the next step: person index (links, erasures) or its fragment.

    Returns ``("person", customer, event)``-style pairs as ``(key, item)`` where the item is
    the event itself for the person index, or a :data:`FragmentInput` for a fragment.
    """
    if isinstance(event, IdentityLink) and event.ids.customer_id is not None:
        # The links also go straight to the fragments, beside the person index (which keeps
        # them for erasures and sends them again, harmlessly): on the direct path a link
        # reaches a fragment before the events that follow it, so a login and the cart
        # right after it land on the same profile at once.
        at = int(event.event_time.timestamp())
        direct = [(f, LinkTo(c, at, event.event_id)) for f, c in link_edges(event)]
        return [(customer_profile(event.ids.customer_id), event), *direct]
    if isinstance(event, _PERSON_REQUESTS) and event.ids.customer_id is not None:
        return [(customer_profile(event.ids.customer_id), event)]
    fragment = fragment_of(event.ids)
    if fragment is None:
        return []
    if isinstance(event, ErasureRequest):
        at = int(event.event_time.timestamp())
        return [(f, EraseBefore(at, event.event_id)) for f in identifiers_of(event.ids)]
    return [(fragment, Observe(contribution(event), produced_ms))]


def redemptions_of(event: Event) -> list[RedemptionOut]:
    """Return the offer redemptions an event reports, or voids (a refund's ``offers_voided``).

    They go straight to the store, beside the profile path: budgets count orders per
    offer, whoever placed them.
    """
    if type(event) is Purchase and event.offers_redeemed:
        offers, void = event.offers_redeemed, False
    elif type(event) is Refund and event.offers_voided:
        offers, void = event.offers_voided, True
    else:
        return []
    return [RedemptionOut(offer, event.order_id, void) for offer in dict.fromkeys(offers)]


def needs_person_index(key: str, item: object) -> bool:
    """Whether a routed item goes through :class:`PersonIndex` first."""
    return isinstance(item, Event)


# --- step 1: person index -------------------------------------------------------------------
@dataclass(slots=True)
class PersonIndex:
    """Per customer: the identifiers linked (and unlinked), and when they asked for erasure."""

    linked: set[str] = field(default_factory=set)
    erased_before: int = 0
    unlinked: set[str] = field(default_factory=set)

    def on_event(self, customer_fragment: str, event: Event) -> list[tuple[str, FragmentInput]]:
        """Fan a link or erasure out to every fragment it concerns."""
        at = int(event.event_time.timestamp())
        if isinstance(event, ErasureRequest):
            self.erased_before = max(self.erased_before, at)
            targets = sorted(self.linked | set(identifiers_of(event.ids)) | {customer_fragment})
            self.linked.clear()
            return [(f, EraseBefore(at, event.event_id)) for f in targets]
        unlinked = _unlinked(self)
        if isinstance(event, IdentityUnlink):
            edges = link_edges(event)
            for fragment, _customer in edges:
                self.linked.discard(fragment)  # an erasure of the customer no longer reaches it
                unlinked.add(fragment)
            return [(f, UnlinkFrom(c, at, event.event_id)) for f, c in edges]
        if not isinstance(event, IdentityLink):
            return []
        if at <= self.erased_before:
            # A link learnt after the erasure still names the person's identifiers: forget
            # those too, whatever order the two arrived in (not those unlinked from them).
            erase = EraseBefore(self.erased_before, event.event_id)
            return [(f, erase) for f, _customer in link_edges(event) if f not in unlinked]
        out: list[tuple[str, FragmentInput]] = [(customer_fragment, Observe(contribution(event)))]
        for fragment, customer in link_edges(event):
            if fragment not in unlinked:
                self.linked.add(fragment)
            out.append((fragment, LinkTo(customer, at, event.event_id)))  # it ignores unlinked
        return out


# --- step 2: fragments ----------------------------------------------------------------------
@dataclass(slots=True)
class FragmentLogic:
    """One identifier's history, the customers it is linked to, and those it never is."""

    fragment: str
    state: Aggregate = field(default_factory=Aggregate)
    customers: set[str] = field(default_factory=set)
    profile: str = ""
    announced: bool = False
    unlinked: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.profile:
            self.profile = profile_for(self.fragment, self.customers)

    def on_input(self, item: FragmentInput, out: list[ForProfile]) -> None:
        """Apply one input; append ``(profile, input)`` pairs and ``(STORE, record)`` to ``out``.

        Profile inputs are addressed to a profile; identity and merge records to
        :data:`STORE`, written by this fragment's own worker.
        """
        if isinstance(item, Observe):
            applied = self.state.apply(item.contribution)
            if applied is None:
                return
            if not self.announced:
                self.announced = True
                out.append((STORE, IdentityOut(self.fragment, self.profile)))
            out.append(
                (self.profile, Delta(self.fragment, item.contribution, applied, item.produced_ms))
            )
        elif isinstance(item, LinkTo):
            if (item.at <= self.state.erased_before or item.customer in self.customers
                    or item.customer in _unlinked(self)):  # fmt: skip
                return
            self.customers.add(item.customer)
            self._move(profile_for(self.fragment, self.customers), item, out)
        elif isinstance(item, UnlinkFrom):
            _unlinked(self).add(item.customer)
            if item.customer in self.customers:
                self.customers.discard(item.customer)
                self._move(profile_for(self.fragment, self.customers), item, out)
        else:
            self._erase(item, out)

    def _move(self, target: str, cause: LinkTo | UnlinkFrom, out: list[ForProfile]) -> None:
        if target == self.profile:
            return
        source, self.profile = self.profile, target
        snapshot = _copy(self.state)
        if self.announced:
            out.append((source, Leave(self.fragment, snapshot)))
        # A customer's profile lists every fragment linked to it; a fragment back on its
        # own with no history of its own has no profile and no identity entry (as if the
        # link it undoes had never come), whatever order the link and unlink came in.
        joins = bool(self.customers) or bool(self.state.seen)
        if joins:
            out.append((target, Join(self.fragment, snapshot)))
        rule = move_rule(self.customers)
        out.append((STORE, MoveOut(self.fragment, source, target, rule, cause.at, cause.event_id)))
        self.announced = joins
        out.append((STORE, IdentityOut(self.fragment, target if joins else None)))

    def _erase(self, item: EraseBefore, out: list[ForProfile]) -> None:
        if self.announced:
            out.append((self.profile, Leave(self.fragment, _copy(self.state), erased=True)))
            out.append((STORE, IdentityOut(self.fragment, None)))
        self.state.erase_before(item.at)
        self.customers.clear()
        self.profile = profile_for(self.fragment, self.customers)
        self.announced = False


def _unlinked(step: PersonIndex | FragmentLogic) -> set[str]:
    """Return the step's ``unlinked`` set, made empty when a recovery snapshot lacks it.

    Snapshots taken before unlinks existed restore without the slot (dataclass pickling
    sets only the fields it saved); the flow must resume from them, not fail on them.
    """
    try:
        return step.unlinked
    except AttributeError:
        step.unlinked = set()
        return step.unlinked


def _copy(state: Aggregate) -> Aggregate:
    # A fragment goes on changing after it hands its history over: give a copy.
    return pickle.loads(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))


# --- step 3: profiles -----------------------------------------------------------------------
def apply_profile_inputs(
    state: ProfileState,
    items: Iterable[ProfileInput],
    *,
    encode: bool = True,
    journey_inputs: list[JourneyInput] | None = None,
) -> list[StoreItem]:
    """Apply a batch of inputs to a profile; return its new absolute value (or deletion).

    With ``journey_inputs``, each journey fact is appended there with the profile's
    features right after its event, and an erasure that empties the profile as an
    ``erased`` fact at that point: the journeys then see the same profile the store does,
    even when the person's next event follows in the same batch.

    The output is flagged ``erased`` whenever an erasure emptied the profile in this
    batch, whether or not new events filled it again: the store then erases the person's
    old data (contact log, merges) before it keeps the new value.
    """
    erased = erasing = changed = False
    produced_ms = 0
    out: list[StoreItem] = []
    for item in items:
        if isinstance(item, Delta):
            state.apply(item.fragment, item.contribution, item.applied)
            changed = True
            produced_ms = max(produced_ms, item.produced_ms)
            fact = item.contribution.journey
            if journey_inputs is not None and fact is not None:
                fact = dataclasses.replace(fact, fragment=item.fragment)
                journey_inputs.append((fact, profile_features(state.to_record(), fact.ts)))
        elif isinstance(item, Join):
            state.join(item.fragment, item.state)
            changed = True
        else:
            state.leave(item.fragment, item.state)
            changed = True
            if (journey_inputs is not None and not item.erased
                    and is_customer(state.profile_id) and item.fragment != state.profile_id):
                # Unlinked from the customer, or found shared: what its events started
                # in the customer's journeys ends (its history left the profile too).
                # At its newest event: after every fact it brought, in the journeys' order.
                at = item.state.small.last_seen
                left = JourneyFact(LEFT, "", at, "", fragment=item.fragment)
                journey_inputs.append((left, None))
            erasing = erasing or item.erased
            if erasing and state.empty:
                erased, erasing = True, False
                if journey_inputs is not None:
                    journey_inputs.append((JourneyFact(ERASED, "", 0, ""), None))
    if changed and encode:
        value = None if state.empty else state.encode()
        out.append(ProfileOut(state.profile_id, value, erased, produced_ms))
    return out


# --- batch recomputation ----------------------------------------------------------------------
@dataclass(slots=True)
class Recomputed:
    """The store content batch recomputation produces."""

    profiles: dict[str, bytes]
    identity: dict[str, str]
    moves: list[MoveOut]
    redemptions: list[RedemptionOut] = field(default_factory=list)


class Replay:
    """The three steps in-process, fed one event at a time, with profiles readable any time.

    Batch recomputation is a replay of the whole log; point-in-time features (for training
    sets) read profiles between events of a replay sorted by event time.

    >>> from datetime import UTC, datetime
    >>> from features.events import Identifiers, PageView
    >>> replay = Replay()
    >>> replay.feed(PageView(event_id="e1", event_time=datetime(2026, 3, 2, tzinfo=UTC),
    ...                      source="web", ids=Identifiers(anonymous_id="a-1"), page="home"))
    >>> replay.profile_of(Identifiers(anonymous_id="a-1"))["fragments"]
    ['anonymous_id:a-1']
    """

    def __init__(self, *, journeys: bool = False) -> None:
        self.persons: dict[str, PersonIndex] = {}
        # With ``journeys``, what each profile tells the journeys (see take_journey_inputs).
        self._journey_inputs: list[tuple[str, JourneyInput]] | None = [] if journeys else None
        self.fragments: dict[str, FragmentLogic] = {}
        self.profiles: dict[str, ProfileState] = {}
        self.identity: dict[str, str] = {}
        self.moves: list[MoveOut] = []
        self.redemptions: dict[RedemptionOut, None] = {}
        self._pending: list[ForProfile] = []

    def feed(self, event: Event) -> None:
        """Apply one event, as the flow would."""
        self.redemptions.update(dict.fromkeys(redemptions_of(event)))
        for key, item in route(event):
            if needs_person_index(key, item):
                person = self.persons.get(key)
                if person is None:
                    person = self.persons[key] = PersonIndex()
                for fragment, fragment_item in person.on_event(key, item):  # type: ignore[arg-type]
                    self._to_fragment(fragment, fragment_item)
            else:
                self._to_fragment(key, item)  # type: ignore[arg-type]

    def _to_fragment(self, key: str, item: FragmentInput) -> None:
        logic = self.fragments.get(key)
        if logic is None:
            logic = self.fragments[key] = FragmentLogic(key)
        pending = self._pending
        logic.on_input(item, pending)
        for profile_id, item in pending:
            if isinstance(item, IdentityOut):
                if item.profile_id is None:  # erased: so is the record of its moves
                    self.identity.pop(item.identifier, None)
                    self.moves = [m for m in self.moves if m.fragment != item.identifier]
                else:
                    self.identity[item.identifier] = item.profile_id
            elif isinstance(item, MoveOut):
                self.moves.append(item)
            else:
                state = self.profiles.get(profile_id)
                if state is None:
                    state = self.profiles[profile_id] = ProfileState(profile_id)
                if self._journey_inputs is None:
                    apply_profile_inputs(state, [item], encode=False)
                else:
                    inputs: list[JourneyInput] = []
                    apply_profile_inputs(state, [item], encode=False, journey_inputs=inputs)
                    self._journey_inputs.extend((profile_id, i) for i in inputs)
                if state.empty:
                    del self.profiles[profile_id]
        pending.clear()

    def take_journey_inputs(self) -> list[tuple[str, JourneyInput]]:
        """Return (and forget) the journey inputs since the last call, as ``(profile, input)``."""
        if self._journey_inputs is None:
            message = "this replay does not collect journey inputs: use Replay(journeys=True)"
            raise ValueError(message)
        taken, self._journey_inputs = self._journey_inputs, []
        return taken

    def resolve(self, ids: Identifiers) -> str | None:
        """Return the profile id the identifiers resolve to now, strongest first."""
        for identifier in identifiers_of(ids):
            if (profile_id := self.identity.get(identifier)) is not None:
                return profile_id
        return None

    def profile_of(self, ids: Identifiers) -> dict[str, Any] | None:
        """Return the stored form of the profile ``ids`` resolve to now, or ``None``."""
        profile_id = self.resolve(ids)
        state = self.profiles.get(profile_id) if profile_id is not None else None
        return None if state is None else state.to_record()

    def result(self) -> Recomputed:
        """Return what the store would hold now."""
        profiles = {p: state.encode() for p, state in self.profiles.items() if not state.empty}
        return Recomputed(profiles, dict(self.identity), list(self.moves), list(self.redemptions))


def recompute(events: Iterable[Event]) -> Recomputed:
    """Run the three steps in-process over ``events``, in the order given.

    The result is what the streaming flow writes for the same events; for events without
    erasures it does not depend on their order.
    """
    replay = Replay()
    for event in events:
        replay.feed(event)
    return replay.result()


__all__ = [
    "CUSTOMER",
    "Delta",
    "EraseBefore",
    "FragmentLogic",
    "IdentityOut",
    "Join",
    "JourneyFeed",
    "JourneyInput",
    "Leave",
    "LinkTo",
    "MoveOut",
    "Observe",
    "PersonIndex",
    "ProfileOut",
    "Recomputed",
    "Replay",
    "UnlinkFrom",
    "apply_profile_inputs",
    "fragment_id",
    "recompute",
    "route",
]
