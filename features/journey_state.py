"""The journeys state machine: enter, wait, send, exit — in event time, replayable.

One :class:`JourneyState` holds many profiles' journeys and one event-time clock. The
journey flow keeps one per shard of profiles (so that the clock can wake a profile that has
no new events); a batch replay or the closed-loop benchmark keeps one for everybody.

* :func:`observe` queues a profile's :class:`~features.journeys.JourneyFact` with the
  profile's features at that event; :func:`tick` raises the highest event time seen.
* :func:`advance` moves the clock to a **watermark** (the highest time seen minus the
  allowed lateness): it applies queued facts and fires due steps **in event-time order**,
  facts first at equal times. So the output depends on the facts up to the watermark, not
  on the order they arrived in, as long as none arrives later than the lateness allows;
  a replay of the same events gives exactly the same records.

A due step asks :func:`features.channel.decide_channel` — the pure function behind
``POST /v1/channel`` — with the contact log (the shared store's plus this state's own
sends), so caps, consent, quiet hours and duplicate rules hold across API-driven and
journey-driven messages. Its decision id is derived from (journey, entry, step, profile),
which makes sending idempotent downstream.

Channel scores and the message variant are planned when a fact arrives (from the features
the fact carries) and kept per instance, so no profile's features are held between events.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import msgspec

from features.arbitration import EpsilonGreedy
from features.catalog import ChannelSpec
from features.channel import decide_channel
from features.identity import is_customer
from features.journeys import (
    ERASED,
    LEFT,
    PERSONA_NAMES,
    Converted,
    Entered,
    Exited,
    HeldOut,
    Journey,
    JourneyBook,
    JourneyFact,
    JourneyRecord,
    Outbound,
    Suppressed,
    decision_id_of,
    in_control,
)
from features.policy import (
    MESSAGE_CHANNELS,
    ContactFacts,
    Message,
    Policies,
    after_quiet_hours,
    check_consent,
    check_log,
    contact_facts,
    in_quiet_hours,
    widen_quiet_hours,
)
from features.scoring import Candidate, ScoreContext, Scored, Scorer
from features.snapshots import with_new_fields
from features.store import ContactRecord

HOUR = 3600
HISTORY_S = 8 * 86_400  # caps look back 7 days; keep a day more
END = -1  # the step index of an instance's closing timer


def _hold_code(step: int) -> int:
    """Return the timer step code of step ``step``'s held message (-2, -3, …)."""
    return -2 - step


NEVER = -(2**62)

History = Callable[[str, datetime], list[ContactRecord]]


@dataclass(frozen=True)
class JourneyContext:
    """What advancing needs besides the state: definitions, policies, scorer, contact log.

    ``policies`` and ``scorer`` are called per use, so a reload or a model promotion takes
    effect without a restart; ``history(profile_id, since)`` reads the shared contact log
    (``None``: this state's own sends only).
    """

    book: JourneyBook
    channels: Mapping[str, ChannelSpec]
    policies: Callable[[], Policies]
    scorer: Callable[[], Scorer]
    history: History | None = None
    epsilon: float = 0.0
    quiet_margin_min: int = 60
    journeys: dict[str, Journey] = field(init=False)
    _widened: list[tuple[Policies, Policies]] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "journeys", self.book.by_id())
        object.__setattr__(self, "_widened", [])

    def send_policies(self) -> Policies:
        """Return the policies with the quiet hours widened by ``quiet_margin_min`` per side.

        Journey sends are decided hours ahead from the UTC offset of the customer's last
        event; the margin keeps a daylight-saving change in between from pushing one into
        the real quiet hours.
        """
        current = self.policies()
        cached = self._widened
        if not cached or cached[0][0] is not current:
            cached[:] = [(current, widen_quiet_hours(current, self.quiet_margin_min))]
        return cached[0][1]


@dataclass(slots=True)
class Plan:
    """A step's message variant and channel scores, planned from the latest features."""

    variant: int
    scores: dict[str, Scored]
    version: str


@dataclass(slots=True)
class Held:
    """A decided message that waits for its send time (quiet hours, the active hour).

    At the send time consent, duplicates and caps are checked again, so an opt-out, a
    purchase that ends the journey or an API message in the meantime stops it.
    """

    message: Outbound
    contact: ContactRecord


@dataclass(slots=True)
class Instance:
    """One profile's run through one journey."""

    journey: str
    entry_id: str
    entered_at: int
    anchor: int
    control: bool
    cart_id: str | None = None
    items: dict[str, float] = field(default_factory=dict)  # product -> value in the cart
    category: str | None = None
    expires_at: int | None = None
    step: int = 0
    due: int = 0
    last_due: int = 0
    reached: int = -1
    plans: dict[int, Plan] = field(default_factory=dict)  # step -> plan
    held: dict[int, Held] = field(default_factory=dict)  # step -> message waiting to go out
    fragment: str | None = None  # the identifier whose event started it

    __setstate__ = with_new_fields

    @property
    def key(self) -> str:
        """The instance's key in its profile: one per journey, or per cart for carts."""
        return self.journey if self.cart_id is None else f"{self.journey}/{self.cart_id}"


@dataclass(slots=True)
class ProfileJourneys:
    """A profile's instances, contact facts and persona scores, and its own recent sends."""

    instances: dict[str, Instance] = field(default_factory=dict)
    last_exit: dict[str, int] = field(default_factory=dict)
    facts: ContactFacts = field(default_factory=ContactFacts)
    personas: dict[str, float] = field(default_factory=dict)
    sent: list[ContactRecord] = field(default_factory=list)
    # Entries that ended before their goal window did, by entry id: a conversion inside
    # the window still counts for the report, whatever ended the entry.
    ended: dict[str, Instance] = field(default_factory=dict)
    # False: no event gave the customer's UTC offset, so each send takes the policy's
    # default zone's offset at its own time (a daylight-saving change in between counts).
    tz_known: bool = True

    __setstate__ = with_new_fields


# A queued fact: (ts, seq, profile, fact, features); a timer: (due, seq, profile, journey,
# entry_id, step). ``seq`` makes entries unique, so tuples never compare past it.
QueuedFact = tuple[int, int, str, JourneyFact, Mapping[str, Any] | None]
Timer = tuple[int, int, str, str, str, int]


@dataclass(slots=True)
class JourneyState:
    """Many profiles' journeys, the queued facts and the timers (picklable, no I/O)."""

    profiles: dict[str, ProfileJourneys] = field(default_factory=dict)
    pending: list[QueuedFact] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    seen: int = NEVER
    clock: int = NEVER
    seq: int = 0
    horizon: int = NEVER  # the latest event time read anywhere (a flow's end of input)

    def _next(self) -> int:
        self.seq += 1
        return self.seq


def tick(state: JourneyState, ts: int) -> None:
    """Raise the highest event time seen (every event counts, not only journey facts)."""
    if ts > state.seen:
        state.seen = ts


def observe(
    state: JourneyState,
    profile_id: str,
    fact: JourneyFact,
    features: Mapping[str, Any] | None,
) -> list[JourneyRecord]:
    """Queue a fact with the profile's features at that event.

    An erasure is not queued: the profile's journeys, queued facts and own contact log
    are dropped at once, and nothing is recorded about them.
    """
    tick(state, fact.ts)
    if fact.kind == ERASED:
        erase(state, profile_id)
        return []
    heapq.heappush(state.pending, (fact.ts, state._next(), profile_id, fact, features))
    return []


def erase(state: JourneyState, profile_id: str) -> None:
    """Forget a profile: journeys, queued facts, timers and its own contact log."""
    state.profiles.pop(profile_id, None)
    state.pending = [q for q in state.pending if q[2] != profile_id]
    heapq.heapify(state.pending)
    state.timers = [t for t in state.timers if t[2] != profile_id]
    heapq.heapify(state.timers)


def watermark(state: JourneyState, lateness_s: int) -> int:
    """Return the time up to which every fact is taken to have arrived."""
    return state.seen - lateness_s if state.seen != NEVER else NEVER


def _fact_order(queued: QueuedFact) -> tuple[int, str, str, int]:
    """Within one second: entries first (a cart add before the purchase that ends it)."""
    _ts, seq, profile_id, fact, _features = queued
    return (0 if fact.kind == "add_to_cart" else 1, profile_id, fact.event_id, seq)


def advance(state: JourneyState, ctx: JourneyContext, until: int) -> list[JourneyRecord]:
    """Apply queued facts and fire due steps with times ``<= until``, in time order."""
    out: list[JourneyRecord] = []
    pending, timers = state.pending, state.timers
    while True:
        fact_ts = pending[0][0] if pending else None
        timer_ts = timers[0][0] if timers else None
        if fact_ts is not None and fact_ts <= until and (timer_ts is None or fact_ts <= timer_ts):
            # Facts of one second in an order of their own, not of their arrival: a cart
            # filled and bought in the same second gives the same records either way.
            same = [heapq.heappop(pending)]
            while pending and pending[0][0] == fact_ts:
                same.append(heapq.heappop(pending))
            state.clock = max(state.clock, fact_ts)
            for _ts, _seq, profile_id, fact, features in sorted(same, key=_fact_order):
                _apply(state, ctx, profile_id, fact, features, out)
        elif timer_ts is not None and timer_ts <= until:
            due, _seq, profile_id, key, entry_id, step = heapq.heappop(timers)
            state.clock = max(state.clock, due)
            _fire(state, ctx, profile_id, key, entry_id, step, due, out)
        else:
            break
    if until > state.clock:
        state.clock = until
    return out


# --- facts ------------------------------------------------------------------------------------


def _apply(
    state: JourneyState,
    ctx: JourneyContext,
    profile_id: str,
    fact: JourneyFact,
    features: Mapping[str, Any] | None,
    out: list[JourneyRecord],
) -> None:
    profile = state.profiles.get(profile_id)
    if fact.kind == LEFT:
        if profile is not None:
            for instance in list(profile.instances.values()):
                if instance.fragment is not None and instance.fragment == fact.fragment:
                    _exit(state, profile_id, profile, instance, "unlinked", fact.ts, out)
            profile.ended = {k: i for k, i in profile.ended.items() if i.fragment != fact.fragment}
        return
    if profile is None:
        profile = state.profiles[profile_id] = ProfileJourneys()
    if features is not None:
        profile.facts = contact_facts(features)
        profile.tz_known = bool(features.get("tz_known", True))
        profile.personas = {p: float(features.get(f"persona_{p}") or 0.0) for p in PERSONA_NAMES}
    _watch_ended(ctx, profile_id, profile, fact, out)
    for instance in list(profile.instances.values()):
        _on_fact(state, ctx, profile_id, profile, instance, fact, out)
    for journey in ctx.book.journeys:
        _maybe_enter(state, ctx, profile_id, profile, journey, fact, out)
    for instance in profile.instances.values():
        _plan(ctx, instance, features)
    profile.sent = [c for c in profile.sent if c.sent_at.timestamp() >= fact.ts - HISTORY_S]
    profile.last_exit = {
        j: at
        for j, at in profile.last_exit.items()
        if j in ctx.journeys and fact.ts < at + ctx.journeys[j].cooldown_hours * HOUR
    }
    if not profile.instances and not profile.sent and not profile.last_exit and not profile.ended:
        del state.profiles[profile_id]


def _watch_ended(
    ctx: JourneyContext,
    profile_id: str,
    profile: ProfileJourneys,
    fact: JourneyFact,
    out: list[JourneyRecord],
) -> None:
    """Record the goal of entries that ended early, while their goal window lasts.

    The report compares treated and control entries over the whole goal window; an entry
    that ended first (an unsubscribe, which only messages cause) must not lose the
    purchase that follows, or the treated group would be counted short.
    """
    for entry_id, instance in list(profile.ended.items()):
        journey = ctx.journeys.get(instance.journey)
        if journey is None or fact.ts > instance.entered_at + journey.goal_window_hours * HOUR:
            del profile.ended[entry_id]
        elif fact.ts >= instance.entered_at and _reaches_goal(journey, instance, fact):
            out.append(_record(Converted, instance, profile_id, fact.ts, goal=journey.goal,
                               after_step=instance.reached))  # fmt: skip
            del profile.ended[entry_id]


def _on_fact(
    state: JourneyState,
    ctx: JourneyContext,
    profile_id: str,
    profile: ProfileJourneys,
    instance: Instance,
    fact: JourneyFact,
    out: list[JourneyRecord],
) -> None:
    journey = ctx.journeys.get(instance.journey)
    if journey is None:  # the definition was removed: end quietly
        profile.instances.pop(instance.key, None)
        return
    if fact.ts < instance.entered_at:
        return
    if _reaches_goal(journey, instance, fact):
        out.append(
            _record(
                Converted,
                instance,
                profile_id,
                fact.ts,
                goal=journey.goal,
                after_step=instance.reached,
            )
        )
    reason = _exit_reason(journey, instance, fact)
    if (reason == "unsubscribed" and fact.channel in MESSAGE_CHANNELS
            and _reachable(ctx, journey, instance, profile.facts)):  # fmt: skip
        # An opt-out of one message channel: the others still carry the journey. An
        # unsubscribe in the app or on the site names no channel: it ends the journey.
        reason = None
    if reason is not None:
        _exit(state, profile_id, profile, instance, reason, fact.ts, out)
        return
    if instance.cart_id is not None and fact.cart_id == instance.cart_id:
        if fact.kind in ("add_to_cart", "remove_from_cart") and fact.products:
            product = fact.products[0]
            left = instance.items.get(product, 0.0) + fact.value
            if left > 1e-9:
                instance.items[product] = left
            else:
                instance.items.pop(product, None)
            if not instance.items and "cart_emptied" in journey.exits:
                _exit(state, profile_id, profile, instance, "cart_emptied", fact.ts, out)
                return
        if fact.kind in journey.restart_wait_on and fact.ts > instance.anchor:
            instance.anchor = fact.ts
            _schedule(state, journey, profile_id, instance)


def _reaches_goal(journey: Journey, instance: Instance, fact: JourneyFact) -> bool:
    if fact.kind != "purchase" or fact.ts > instance.entered_at + journey.goal_window_hours * HOUR:
        return False
    if journey.goal == "any_purchase":
        return fact.event_id != instance.entry_id
    if journey.goal == "points_used":
        return fact.points > 0
    return _buys_cart(instance, fact)


def _buys_cart(instance: Instance, fact: JourneyFact) -> bool:
    if instance.cart_id is not None and fact.cart_id == instance.cart_id:
        return True
    return any(p in instance.items for p in fact.products)


def _reachable(ctx: JourneyContext, journey: Journey, instance: Instance,
               facts: ContactFacts) -> bool:  # fmt: skip
    """Whether consent still lets some channel carry a step yet to be sent (held included).

    The same consent rule as every send (:func:`features.policy.check_consent`), on the
    profile as it is after the opt-out: a transactional step may go where marketing may not.
    """
    unknown = ctx.policies().contact.unknown_consent
    pending = [s.message for s in journey.steps[instance.step:]]
    pending += [journey.steps[step].message for step in instance.held]
    for message in pending:
        for channel in message.allowed_channels or ctx.channels:
            spec = ctx.channels.get(channel)
            if spec is None:
                continue
            rule = check_consent(facts, channel, message.kind, unknown,
                                 opt_in_required=spec.opt_in_required)  # fmt: skip
            if rule is None:
                return True
    return False


def _exit_reason(journey: Journey, instance: Instance, fact: JourneyFact) -> str | None:
    if fact.withdrawn and "unsubscribed" in journey.exits:
        return "unsubscribed"
    if fact.kind != "purchase":
        return None
    if "purchased" in journey.exits and _buys_cart(instance, fact):
        return "purchased"
    if "points_used" in journey.exits and fact.points > 0:
        return "points_used"
    return None


def _maybe_enter(
    state: JourneyState,
    ctx: JourneyContext,
    profile_id: str,
    profile: ProfileJourneys,
    journey: Journey,
    fact: JourneyFact,
    out: list[JourneyRecord],
) -> None:
    entry = journey.entry
    if fact.kind != entry.event or (entry.sources is not None and fact.source not in entry.sources):
        return
    if entry.customers_only and not is_customer(profile_id):
        return
    if fact.kind == "purchase" and fact.value < entry.min_value:
        return
    if fact.kind == "points_expiry" and (
        fact.points < entry.min_points or (fact.expires_at or 0) <= fact.ts
    ):
        return
    cart_id = fact.cart_id if fact.kind == "add_to_cart" else None
    key = journey.id if cart_id is None else f"{journey.id}/{cart_id}"
    current = profile.instances.get(key)
    if fact.ts < profile.last_exit.get(journey.id, NEVER) + journey.cooldown_hours * HOUR:
        return
    if current is not None:
        # The same cart moves its wait (see _on_fact); another entry restarts or not.
        if cart_id is not None or journey.reentry == "ignore":
            return
        _exit(state, profile_id, profile, current, "replaced", fact.ts, out)
    instance = Instance(
        journey=journey.id,
        entry_id=fact.event_id,
        entered_at=fact.ts,
        anchor=fact.ts,
        control=in_control(profile_id, journey.id, journey.control_share, ctx.book.salt),
        cart_id=cart_id,
        category=fact.category,
        expires_at=fact.expires_at,
        fragment=fact.fragment,
    )
    if fact.kind == "add_to_cart" and fact.products:
        instance.items[fact.products[0]] = fact.value
    profile.instances[key] = instance
    out.append(_record(Entered, instance, profile_id, fact.ts))
    _schedule(state, journey, profile_id, instance)


def _exit(
    state: JourneyState,
    profile_id: str,
    profile: ProfileJourneys,
    instance: Instance,
    reason: str,
    at: int,
    out: list[JourneyRecord],
) -> None:
    del profile.instances[instance.key]
    if reason != "replaced":  # a restart is not an exit the cooldown waits after
        profile.last_exit[instance.journey] = at
    if reason not in ("completed", "purchased", "points_used"):  # not over, not converted
        profile.ended[instance.entry_id] = instance
    for held in instance.held.values():  # decided, not sent yet: it stays unsent
        _release(profile, held)
        out.append(_suppressed(held.message, f"exit_{reason}", at))
    out.append(_record(Exited, instance, profile_id, at, reason=reason))


def _record(
    record_type: type[JourneyRecord], instance: Instance, profile_id: str, at: int, **fields: Any
) -> Any:
    return record_type(
        journey=instance.journey,
        profile_id=profile_id,
        entry_id=instance.entry_id,
        at=datetime.fromtimestamp(at, UTC),
        control=instance.control,
        **fields,
    )


# --- timers -----------------------------------------------------------------------------------


def step_due(journey: Journey, instance: Instance, step: int) -> int | None:
    """Return when step ``step`` is due, or ``None`` when the points expire first."""
    spec = journey.steps[step]
    due = instance.anchor + int(spec.after_hours * HOUR)
    if spec.before_expiry_hours is not None and instance.expires_at is not None:
        due = instance.expires_at - int(spec.before_expiry_hours * HOUR)
    due = max(due, instance.entered_at, instance.last_due)
    if instance.expires_at is not None and due >= instance.expires_at:
        return None
    return due


def _overtaken(journey: Journey, instance: Instance) -> bool:
    """Whether the next step's time before the expiry came before the step just taken.

    Points that expire within 72 hours of the notice: the nudge at entry already says it,
    so the last call would go out at the same moment, a second message; it is skipped.
    """
    if instance.step == 0 or instance.step >= len(journey.steps):
        return False
    before = journey.steps[instance.step].before_expiry_hours
    if before is None or instance.expires_at is None:
        return False
    return instance.expires_at - int(before * HOUR) <= instance.last_due


def _schedule(state: JourneyState, journey: Journey, profile_id: str, instance: Instance) -> None:
    """(Re)schedule the instance's next timer; a stale timer is ignored when it fires."""
    while _overtaken(journey, instance):
        instance.step += 1
    if instance.step < len(journey.steps):
        due = step_due(journey, instance, instance.step)
        step = instance.step if due is not None else END
        if due is None:
            due = max(instance.last_due, instance.expires_at or instance.last_due)
    else:
        step = END
        window_end = instance.entered_at + int(journey.goal_window_hours * HOUR)
        due = max(instance.last_due, window_end)
    instance.due = due
    timer = (due, state._next(), profile_id, instance.key, instance.entry_id, step)
    heapq.heappush(state.timers, timer)


def _fire(
    state: JourneyState,
    ctx: JourneyContext,
    profile_id: str,
    key: str,
    entry_id: str,
    step: int,
    due: int,
    out: list[JourneyRecord],
) -> None:
    profile = state.profiles.get(profile_id)
    instance = profile.instances.get(key) if profile else None
    if profile is None or instance is None or instance.entry_id != entry_id:
        return
    if step < END:
        _release_held(state, ctx, profile_id, profile, instance, -2 - step, due, out)
        return
    if instance.due != due or (step != END and step != instance.step):
        return  # superseded by a reschedule
    journey = ctx.journeys[instance.journey]
    if step == END and instance.held:
        # A message decided before the end and held for its send time goes out first.
        latest = max(int(h.message.send_at.timestamp()) for h in instance.held.values())
        if latest >= due:
            instance.due = latest
            heapq.heappush(state.timers, (latest, state._next(), profile_id, key, entry_id, END))
            return
    if step == END:
        expired = instance.step < len(journey.steps)
        _exit(state, profile_id, profile, instance, "expired" if expired else "completed", due, out)
        return
    instance.reached = step
    decision_id = decision_id_of(instance.journey, entry_id, step, profile_id)
    spec = journey.steps[step]
    if instance.control:
        out.append(_record(HeldOut, instance, profile_id, due, step=spec.id, step_index=step,
                           decision_id=decision_id))  # fmt: skip
    else:
        decided = _send(ctx, profile_id, profile, journey, instance, step, due, decision_id)
        if isinstance(decided, Held):
            instance.held[step] = decided
            send_ts = int(decided.message.send_at.timestamp())
            timer = (send_ts, state._next(), profile_id, key, entry_id, _hold_code(step))
            heapq.heappush(state.timers, timer)
        else:
            out.append(decided)
    instance.last_due = due
    instance.step = step + 1
    _schedule(state, journey, profile_id, instance)


def _release_held(
    state: JourneyState,
    ctx: JourneyContext,
    profile_id: str,
    profile: ProfileJourneys,
    instance: Instance,
    step: int,
    due: int,
    out: list[JourneyRecord],
) -> None:
    """Send a held message at its time, unless something since then forbids it."""
    held = instance.held.get(step)
    if held is None or int(held.message.send_at.timestamp()) != due:
        return
    del instance.held[step]
    message = held.message
    policy = ctx.send_policies().contact
    at = message.send_at
    since = datetime.fromtimestamp(due - HISTORY_S, UTC)
    history = [
        c for c in _history(ctx, profile_id, profile, since)
        if c.decision_id != message.decision_id
    ]  # fmt: skip
    spec = ctx.channels.get(message.channel)
    rule = check_consent(
        profile.facts,
        message.channel,
        message.kind,
        policy.unknown_consent,
        opt_in_required=spec is not None and spec.opt_in_required,
    )
    if rule is None:
        rule = check_log(history, message.channel, message_of(message), at, policy)
    if rule is None and _in_quiet_hours(ctx, profile, message):
        # The customer's UTC offset changed since the decision (daylight saving): wait.
        later = after_quiet_hours(at, _offset_min(ctx, profile, at), policy.quiet_hours)
        instance.held[step] = Held(
            msgspec.structs.replace(message, send_at=later),
            msgspec.structs.replace(held.contact, sent_at=later),
        )
        _release(profile, held)
        profile.sent.append(instance.held[step].contact)
        code = _hold_code(step)
        timer = (int(later.timestamp()), state._next(), profile_id, instance.key,
                 instance.entry_id, code)  # fmt: skip
        heapq.heappush(state.timers, timer)
        return
    if rule is not None:
        _release(profile, held)
        out.append(_suppressed(message, rule, due))
        return
    out.append(message)


def message_of(outbound: Outbound) -> Message:
    """Return what the contact rules judge of an outbound message."""
    return Message(outbound.campaign, outbound.offer_id, outbound.kind, outbound.urgency)  # type: ignore[arg-type]


def _in_quiet_hours(ctx: JourneyContext, profile: ProfileJourneys, message: Outbound) -> bool:
    spec = ctx.channels.get(message.channel)
    policy = ctx.send_policies().contact
    exempt = (
        message.kind == "transactional" and policy.urgency_rule(message.urgency).skip_quiet_hours
    )
    if spec is None or not spec.quiet_hours_apply or exempt:
        return False
    at = message.send_at
    return in_quiet_hours(at, _offset_min(ctx, profile, at), policy.quiet_hours)


def _offset_min(ctx: JourneyContext, profile: ProfileJourneys, at: datetime) -> int:
    """Return the UTC offset at ``at``: the customer's own, else the default zone's."""
    if profile.tz_known:
        return profile.facts.tz_offset_min
    return ctx.policies().contact.default_offset_min(at)


def _facts_at(ctx: JourneyContext, profile: ProfileJourneys, at: datetime) -> ContactFacts:
    if profile.tz_known:
        return profile.facts
    return replace(profile.facts, tz_offset_min=_offset_min(ctx, profile, at))


def _release(profile: ProfileJourneys, held: Held) -> None:
    """Give back the contact a held message had reserved."""
    profile.sent = [c for c in profile.sent if c.decision_id != held.contact.decision_id]


def _suppressed(message: Outbound, rule: str, at: int) -> Suppressed:
    return Suppressed(
        journey=message.journey,
        profile_id=message.profile_id,
        entry_id=message.entry_id,
        at=datetime.fromtimestamp(at, UTC),
        control=message.control,
        step=message.step,
        step_index=message.step_index,
        decision_id=message.decision_id,
        rule=rule,
    )


def _send(
    ctx: JourneyContext,
    profile_id: str,
    profile: ProfileJourneys,
    journey: Journey,
    instance: Instance,
    step: int,
    due: int,
    decision_id: str,
) -> JourneyRecord | Held:
    """Decide a due step: a suppression, a message to send now, or one held for later."""
    spec = journey.steps[step]
    variants = spec.message.variants
    plan = instance.plans.get(step)
    index = plan.variant if plan is not None else _variant_index(journey, step, profile.personas)
    variant = variants[min(index, len(variants) - 1)]
    offer_id = _offer_of(variant.offer_id, instance)
    campaign = journey.campaign(step)
    message = Message(campaign, offer_id, spec.message.kind, spec.message.urgency)
    now = datetime.fromtimestamp(due, UTC)
    since = datetime.fromtimestamp(due - HISTORY_S, UTC)
    profile.sent = [c for c in profile.sent if c.sent_at >= since]
    # A replayed step finds its own earlier send in the shared log: that is not history.
    history = [c for c in _history(ctx, profile_id, profile, since) if c.decision_id != decision_id]
    scorer: Scorer = _Planned(plan) if plan is not None else ctx.scorer()
    outcome = decide_channel(
        message,
        channels=ctx.channels,
        allowed=spec.message.allowed_channels,
        features=None,
        facts=_facts_at(ctx, profile, now),
        history=history,
        now=now,
        policies=ctx.send_policies(),
        scorer=scorer,
        score_context=_score_context(campaign, offer_id, spec.message.kind, now),
        exploration=EpsilonGreedy(ctx.epsilon),
        rng=random.Random(decision_id),
    )
    chosen = outcome.chosen
    common = {"step": spec.id, "step_index": step, "decision_id": decision_id}
    if chosen is None or chosen.verdict.send_at is None or outcome.pick is None:
        rule = outcome.suppressed_by or "no_channel"
        return _record(Suppressed, instance, profile_id, due, rule=rule, **common)
    contact = ContactRecord(
        profile_id=profile_id,
        decision_id=decision_id,
        channel=chosen.channel,  # type: ignore[arg-type]
        sent_at=chosen.verdict.send_at,
        kind=spec.message.kind,
        campaign=campaign,
        offer_id=offer_id,
    )
    profile.sent.append(contact)
    model_choice = (
        outcome.options[outcome.model_choice].channel if outcome.model_choice is not None else None
    )
    message = _record(
        Outbound,
        instance,
        profile_id,
        due,
        channel=chosen.channel,
        send_at=chosen.verdict.send_at,
        campaign=campaign,
        content=spec.message.content,
        kind=spec.message.kind,
        urgency=spec.message.urgency,
        propensity=round(outcome.pick.propensity, 6),
        model_version=scorer.version,
        model_choice=model_choice,
        offer_id=offer_id,
        discount_pct=variant.discount_pct,
        cart_id=instance.cart_id,
        **common,
    )
    if chosen.verdict.send_at.timestamp() > due:
        return Held(message, contact)
    return message


def _history(
    ctx: JourneyContext, profile_id: str, profile: ProfileJourneys, since: datetime
) -> list[ContactRecord]:
    """Merge the shared contact log with this state's own sends (one record per decision)."""
    shared = ctx.history(profile_id, since) if ctx.history is not None else []
    merged = {c.decision_id: c for c in shared}
    for own in profile.sent:
        merged.setdefault(own.decision_id, own)
    return list(merged.values())


def _score_context(campaign: str, offer_id: str | None, kind: str, now: datetime) -> ScoreContext:
    return ScoreContext(
        surface="channel", campaign=campaign, offer_id=offer_id, message_kind=kind, now=now
    )


def _offer_of(offer_id: str | None, instance: Instance) -> str | None:
    """Fill ``{category}`` with the entry's main category (no category: no offer)."""
    if offer_id is None or "{category}" not in offer_id:
        return offer_id
    return offer_id.format(category=instance.category) if instance.category else None


def _variant_index(journey: Journey, step: int, personas: dict[str, float]) -> int:
    variants = journey.steps[step].message.variants
    return next((i for i, v in enumerate(variants) if v.matches(personas)), len(variants) - 1)


def _plan(ctx: JourneyContext, instance: Instance, features: Mapping[str, Any] | None) -> None:
    """Plan the instance's remaining steps from the features that came with the latest fact."""
    journey = ctx.journeys.get(instance.journey)
    if journey is None or instance.control or (features is None and instance.plans):
        return
    personas = {p: float((features or {}).get(f"persona_{p}") or 0.0) for p in PERSONA_NAMES}
    names = sorted(ctx.channels)
    scorer = ctx.scorer()
    plans: dict[int, Plan] = {}
    for step in range(instance.step, len(journey.steps)):
        variant = _variant_index(journey, step, personas)
        spec = journey.steps[step]
        offer_id = _offer_of(spec.message.variants[variant].offer_id, instance)
        due = step_due(journey, instance, step) or instance.entered_at
        context = _score_context(
            journey.campaign(step), offer_id, spec.message.kind, datetime.fromtimestamp(due, UTC)
        )
        scored = scorer.score(features, [Candidate.via(c) for c in names], context)
        # Plain values only: the plan lives in snapshots, and a scorer's result may hold
        # references to the model (reasons computed when read) that cannot be pickled.
        plain = [_plain(s) for s in scored]
        plans[step] = Plan(variant, dict(zip(names, plain, strict=True)), scorer.version)
    instance.plans = plans


def _plain(scored: Scored) -> Scored:
    # The probability only: journey messages carry no reasons, and a model's reasons cost
    # an explanation call each.
    return Scored(float(scored.probability))


class _Planned:
    """A scorer that answers with a plan's channel scores (computed when features came)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.version = plan.version

    def score(
        self,
        features: Mapping[str, Any] | None,
        candidates: list[Candidate] | Any,
        context: ScoreContext,
    ) -> list[Scored]:
        return [self.plan.scores.get(c.channel or c.action_id, Scored(0.0)) for c in candidates]
