r"""The outcome join: decisions meet their outcomes inside attribution windows, in event time.

A decision logged at :math:`t_d` earns an outcome of kind :math:`k` at :math:`t_o` when

.. math::

    t_d \le t_o \le t_d + W_k, \qquad W_{opened} = W_{clicked} = W_{click},\;
    W_{converted} = W_{redeemed} = W_{conversion}.

Engagement events carry the ``decision_id`` they answer; purchases that redeem an offer are
attributed to every open decision that chose that offer for one of the purchase's
identifiers (multi-touch, so the result does not depend on how decisions are sharded).
A refund that voids the offer (``offers_voided``) within :math:`W_{conversion} + W_{refund}`
takes its order's redemption back: when every redemption a decision earned was voided, the
example is ``refunded`` and its :attr:`Labels.kept_conversion` (the training label) false.

Time is event time. Each input *source* (a topic partition) reports the largest event time
it has delivered; the watermark is the smallest of them minus the allowed lateness, so a
replay of the same input yields the same examples whatever the wall clock does. A decision
is emitted once the watermark passes the end of its longest window; an outcome that arrives
after that (or whose decision is unknown and whose time the watermark already passed) is
dropped and counted. Events that arrive late but still before the watermark passes their
decision's window count as usual.

A live (tailing) join may mark a source *idle* (:meth:`OutcomeJoin.mark_idle`) when it has
delivered nothing for a while: the watermark then follows the other sources instead of
waiting (or, when every source is idle, follows the newest of them), and the source holds
it again from its next delivery. What an idle source
delivers behind the watermark is late, and dropped as above. Bounded runs never mark a
source idle, so replays still agree.

>>> from datetime import UTC, datetime
>>> from features.decisions import Choice, Decision
>>> from features.events import Identifiers
>>> t0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
>>> join = OutcomeJoin(AttributionWindows(), sources=("all",))
>>> d = Decision(decision_id="d-1", decided_at=t0, surface="channel", policy="p",
...              ids=Identifiers(customer_id="c-1"),
...              chosen=[Choice(offer_id="of-1", channel="email", propensity=0.5)])
>>> join.on_decision(d)
[]
>>> join.on_outcome(Outcome(int(t0.timestamp()) + 3600, "opened", "e-1", decision_id="d-1"))
>>> [(x.labels.opened, x.complete) for x in join.flush()]
[(True, False)]
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from features.decisions import Decision
from features.events import Engagement, Event, Purchase, Refund
from features.snapshots import with_new_fields

OutcomeKind = Literal["opened", "clicked", "converted", "unsubscribed", "redeemed", "voided"]
CLICK_KINDS = frozenset({"opened", "clicked", "unsubscribed"})
CONVERSION_KINDS = frozenset({"converted", "redeemed"})
_NEVER = -(2**62)


@dataclass(frozen=True, slots=True)
class AttributionWindows:
    """How long after a decision each kind of outcome counts, and how late input may be.

    All values are seconds: ``click`` for opens, clicks and unsubscribes, ``conversion``
    for conversions and redemptions, ``refund`` for how much longer than that a refund
    may still void a redemption (every example then waits that much longer), ``lateness``
    for how far behind the newest event time an input may still deliver.
    """

    click: int = 24 * 3600
    conversion: int = 7 * 24 * 3600
    lateness: int = 6 * 3600
    refund: int = 0

    def __post_init__(self) -> None:
        for name in ("click", "conversion", "lateness", "refund"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                message = f"{name} must be a whole number of seconds >= 0; got {value!r}"
                raise ValueError(message)

    __setstate__ = with_new_fields

    def of(self, kind: str) -> int:
        """Return the window of an outcome kind."""
        if kind == "voided":
            return self.conversion + self.refund
        return self.conversion if kind in CONVERSION_KINDS else self.click

    @property
    def longest(self) -> int:
        """The longest window: a decision is final once it has passed."""
        return max(self.click, self.conversion + self.refund)


@dataclass(frozen=True, slots=True)
class Outcome:
    """Something a customer did that may answer a decision.

    ``decision_id`` is set for engagement events; purchase redemptions (and refunds that
    void them) carry the event's ``identifiers`` (``"customer_id:cu-1"`` …), the
    ``offer_id`` and the ``order_id`` instead.
    """

    at: int
    kind: OutcomeKind
    event_id: str
    decision_id: str | None = None
    offer_id: str | None = None
    identifiers: tuple[str, ...] = ()
    order_id: str | None = None

    __setstate__ = with_new_fields


class Labels(msgspec.Struct, frozen=True):
    """What happened after a decision, each inside its window."""

    opened: bool = False
    clicked: bool = False
    converted: bool = False
    redeemed: bool = False
    unsubscribed: bool = False
    refunded: bool = False

    @property
    def engaged(self) -> bool:
        """Opened or clicked within the click window (the channel model's label)."""
        return self.opened or self.clicked

    @property
    def kept_conversion(self) -> bool:
        """Converted, and not every redemption it led to refunded (the offer model's label).

        >>> Labels(converted=True, redeemed=True, refunded=True).kept_conversion
        False
        """
        return self.converted and not self.refunded


class LabelledExample(msgspec.Struct, frozen=True):
    """A decision with its labels; ``complete`` is false when the input ended first.

    ``complete`` examples had their whole conversion window observed; the others were
    flushed at the end of a bounded input and may miss outcomes (censored). ``propensity``
    is the probability with which the deciding policy chose the logged action.
    """

    decision: Decision
    labels: Labels
    complete: bool
    propensity: float = 1.0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LabelledExample)


def encode_example(example: LabelledExample) -> bytes:
    """Encode a labelled example as one line of JSON."""
    return _encoder.encode(example)


def decode_example(raw: bytes | str) -> LabelledExample:
    """Decode a labelled example written by :func:`encode_example`."""
    return _decoder.decode(raw)


def identifiers_of(decision_or_ids: Decision | Event) -> tuple[str, ...]:
    """Return ``"field:value"`` strings for every identifier a decision or event carries."""
    return tuple(f"{k}:{v}" for k, v in decision_or_ids.ids.present().items())


def outcomes_of(event: Event) -> list[Outcome]:
    """Return the outcomes an event reports (none for most events).

    >>> from datetime import UTC, datetime
    >>> from features.events import Identifiers
    >>> e = Engagement(event_id="e", event_time=datetime(2026, 3, 2, tzinfo=UTC),
    ...                source="messaging", ids=Identifiers(customer_id="c"), action="clicked",
    ...                channel="email", decision_id="d-9")
    >>> outcomes_of(e)[0].kind, outcomes_of(e)[0].decision_id
    ('clicked', 'd-9')
    """
    at = int(event.event_time.timestamp())
    if isinstance(event, Engagement):
        if event.decision_id is None or event.action == "delivered" or event.action == "dismissed":
            return []
        kind: OutcomeKind = event.action  # type: ignore[assignment]
        return [Outcome(at, kind, event.event_id, event.decision_id, event.offer_id)]
    if isinstance(event, Purchase) and event.offers_redeemed:
        ids, order = identifiers_of(event), event.order_id
        return [
            Outcome(at, "redeemed", event.event_id, offer_id=o, identifiers=ids, order_id=order)
            for o in event.offers_redeemed
        ]
    if isinstance(event, Refund) and event.offers_voided:
        ids, order = identifiers_of(event), event.order_id
        return [
            Outcome(at, "voided", event.event_id, offer_id=o, identifiers=ids, order_id=order)
            for o in event.offers_voided
        ]
    return []


@dataclass(slots=True)
class _Open:
    """An open decision and what it earned so far.

    ``seen`` holds the outcome kinds, and for each order that redeemed the decision's offer
    ``redeemed:<order_id>`` (and ``voided:<order_id>`` once a refund voided it).
    """

    decision: Decision
    at: int
    seen: set[str] = field(default_factory=set)


@dataclass(slots=True)
class JoinStats:
    """What the join dropped, and why."""

    outside_window: int = 0
    too_late: int = 0
    orphaned: int = 0
    emitted: int = 0
    other_position: int = 0  # engagements with an offer shown below the first position


class OutcomeJoin:
    """The join state of one shard: open decisions, early outcomes, the watermark.

    Feed decisions and outcomes in any order, report progress per source with
    :meth:`advance`, and collect the examples each call returns; :meth:`flush` emits
    what is left when a bounded input ends (those examples are not ``complete``).
    """

    def __init__(self, windows: AttributionWindows, sources: Iterable[str]) -> None:
        self.windows = windows
        self.sources = tuple(sources)
        if not self.sources:
            message = "sources must name at least one input source"
            raise ValueError(message)
        self.progress: dict[str, int] = {}
        self.idle: set[str] = set()
        self.watermark = _NEVER
        self.stats = JoinStats()
        self._open: dict[str, _Open] = {}
        self._by_offer: dict[tuple[str, str], set[str]] = {}
        self._due: list[tuple[int, str]] = []
        self._early: dict[str, list[Outcome]] = {}
        self._early_purchases: dict[tuple[str, str], list[Outcome]] = {}
        # (order id, offer id) -> decisions a redemption of that order was attributed to,
        # and the voids of that order's offer kept for redemptions still to come.
        self._by_order: dict[tuple[str, str], set[str]] = {}
        self._voids: dict[tuple[str, str], list[Outcome]] = {}
        self._expiry: list[tuple[int, int, Outcome]] = []
        self._n = 0

    def __setstate__(self, state: dict[str, object]) -> None:
        # A snapshot taken before redemptions were indexed by order resumes without them.
        # One taken before sources could be idle resumes with none idle.
        self.__dict__.update({"_by_order": {}, "_voids": {}, "idle": set(), **state})

    # --- inputs -------------------------------------------------------------------------
    def on_decision(self, decision: Decision) -> list[LabelledExample]:
        """Open a decision; returns it at once if the watermark already passed its windows."""
        if decision.decision_id in self._open:
            return []  # a duplicate delivery
        at = int(decision.decided_at.timestamp())
        state = _Open(decision, at)
        self._open[decision.decision_id] = state
        offer = decision.chosen[0].offer_id if decision.chosen else None
        ids = identifiers_of(decision)
        if offer is not None:
            for identifier in ids:
                self._by_offer.setdefault((identifier, offer), set()).add(decision.decision_id)
        heapq.heappush(self._due, (at + self.windows.longest, decision.decision_id))
        for outcome in self._early.pop(decision.decision_id, []):
            self._apply(state, outcome)
        if offer is not None:
            for identifier in ids:
                for outcome in self._early_purchases.get((identifier, offer), []):
                    self._apply(state, outcome)
        return self._close_due()

    def on_outcome(self, outcome: Outcome) -> None:
        """Attribute an outcome to its decision(s), and keep it for those still to arrive.

        An engagement names its decision; a redemption goes to every open decision that
        chose its offer for one of its identifiers, and a void to the decisions its
        order's redemption went to, whatever identifiers the refund carries.
        """
        if outcome.decision_id is not None:
            state = self._open.get(outcome.decision_id)
            if state is not None:
                self._apply(state, outcome)
            else:
                self._keep_early(outcome)
            return
        if outcome.kind == "voided":
            key = (outcome.order_id or "", outcome.offer_id or "")
            for decision_id in sorted(self._by_order.get(key, ())):
                self._apply(self._open[decision_id], outcome)
        else:
            for identifier in outcome.identifiers:
                key = (identifier, outcome.offer_id or "")
                for decision_id in sorted(self._by_offer.get(key, ())):
                    self._apply(self._open[decision_id], outcome)
        # Decisions that arrive later (topics are read independently; shards hold others)
        # may be its decisions too: every shard keeps it until the watermark passes it.
        self._keep_early(outcome)

    def advance(self, source: str, event_time: int) -> list[LabelledExample]:
        """Record that ``source`` delivered up to ``event_time``; emit decisions now final."""
        self.idle.discard(source)  # it delivers: it holds the watermark again
        if event_time <= self.progress.get(source, _NEVER):
            return []
        self.progress[source] = event_time
        return self._raise_watermark()

    def mark_idle(self, source: str) -> list[LabelledExample]:
        """Stop waiting for ``source`` until it delivers again; emit decisions now final.

        >>> join = OutcomeJoin(AttributionWindows(lateness=0), sources=("clicks", "buys"))
        >>> join.advance("clicks", 1_000)
        []
        >>> join.watermark == _NEVER  # "buys" has delivered nothing yet
        True
        >>> _ = join.mark_idle("buys")
        >>> join.watermark
        1000
        """
        if source in self.idle:
            return []
        self.idle.add(source)
        return self._raise_watermark()

    def _raise_watermark(self) -> list[LabelledExample]:
        active = [s for s in self.sources if s not in self.idle]
        if any(s not in self.progress for s in active) or not self.progress:
            return []
        # Every source quiet: all they had is in, so the newest time known is the clock.
        newest = min(self.progress[s] for s in active) if active else max(self.progress.values())
        watermark = newest - self.windows.lateness
        if watermark <= self.watermark:
            return []
        self.watermark = watermark
        self._expire_early()
        return self._close_due()

    def flush(self) -> list[LabelledExample]:
        """Emit every open decision (the input ended); examples not yet final are incomplete."""
        out = [self._emit(decision_id) for _, decision_id in sorted(self._due)]
        self._due.clear()
        self.stats.orphaned += sum(len(v) for v in self._early.values())
        self._early.clear()
        self._early_purchases.clear()
        self._voids.clear()
        self._by_order.clear()
        self._expiry.clear()
        return [x for x in out if x is not None]

    # --- internals ----------------------------------------------------------------------
    def _apply(self, state: _Open, outcome: Outcome) -> bool:
        start = state.at
        chosen = state.decision.chosen[0].offer_id if state.decision.chosen else None
        if outcome.decision_id is None and chosen != outcome.offer_id:
            return False
        if outcome.offer_id is not None and chosen is not None and chosen != outcome.offer_id:
            # An engagement with another offer of the same slate: the example is the
            # first position's, so it is not this example's outcome.
            self.stats.other_position += 1
            return False
        if not start <= outcome.at <= start + self.windows.of(outcome.kind):
            self.stats.outside_window += 1
            return False
        state.seen.add(outcome.kind)
        if outcome.order_id is not None:
            state.seen.add(f"{outcome.kind}:{outcome.order_id}")
            if outcome.kind == "redeemed":
                key = (outcome.order_id, outcome.offer_id or "")
                self._by_order.setdefault(key, set()).add(state.decision.decision_id)
                for void in self._voids.get(key, ()):
                    self._apply(state, void)
        return True

    def _keep_early(self, outcome: Outcome) -> None:
        # Its decision may still come (topics are read independently) until the watermark
        # passes the outcome's own time: a decision always precedes its outcomes.
        if outcome.at <= self.watermark:
            if outcome.decision_id is not None:
                self.stats.too_late += 1
            return
        if outcome.decision_id is not None:
            self._early.setdefault(outcome.decision_id, []).append(outcome)
        elif outcome.kind == "voided":
            key = (outcome.order_id or "", outcome.offer_id or "")
            self._voids.setdefault(key, []).append(outcome)
        else:
            for identifier in outcome.identifiers:
                key = (identifier, outcome.offer_id or "")
                self._early_purchases.setdefault(key, []).append(outcome)
        self._n += 1
        heapq.heappush(self._expiry, (outcome.at, self._n, outcome))

    def _expire_early(self) -> None:
        while self._expiry and self._expiry[0][0] <= self.watermark:
            _, _, outcome = heapq.heappop(self._expiry)
            if outcome.decision_id is not None:
                waiting = self._early.get(outcome.decision_id)
                if waiting and outcome in waiting:
                    waiting.remove(outcome)
                    self.stats.orphaned += 1
                    if not waiting:
                        del self._early[outcome.decision_id]
            elif outcome.kind == "voided":
                key = (outcome.order_id or "", outcome.offer_id or "")
                _discard(self._voids, key, outcome)
            else:
                for identifier in outcome.identifiers:
                    _discard(self._early_purchases, (identifier, outcome.offer_id or ""), outcome)

    def _close_due(self) -> list[LabelledExample]:
        out = []
        while self._due and self._due[0][0] <= self.watermark:
            _, decision_id = heapq.heappop(self._due)
            example = self._emit(decision_id, complete=True)
            if example is not None:
                out.append(example)
        return out

    def _emit(self, decision_id: str, *, complete: bool = False) -> LabelledExample | None:
        state = self._open.pop(decision_id, None)
        if state is None:
            return None
        decision = state.decision
        offer = decision.chosen[0].offer_id if decision.chosen else None
        seen = state.seen
        if offer is not None:
            for identifier in identifiers_of(decision):
                _forget(self._by_offer, (identifier, offer), decision_id)
            for mark in seen:
                if mark.startswith("redeemed:"):
                    _forget(self._by_order, (mark[9:], offer), decision_id)
        labels = Labels(
            opened="opened" in seen,
            clicked="clicked" in seen,
            converted="converted" in seen,
            redeemed="redeemed" in seen,
            unsubscribed="unsubscribed" in seen,
            refunded=_all_voided(seen),
        )
        self.stats.emitted += 1
        propensity = decision.chosen[0].propensity if decision.chosen else 1.0
        return LabelledExample(decision, labels, complete, propensity)


def _forget(index: dict[tuple[str, str], set[str]], key: tuple[str, str], decision_id: str) -> None:
    waiting = index.get(key)
    if waiting is not None:
        waiting.discard(decision_id)
        if not waiting:
            del index[key]


def _discard(kept: dict[tuple[str, str], list[Outcome]], key: tuple[str, str], outcome: Outcome,
             ) -> None:  # fmt: skip
    waiting = kept.get(key)
    if waiting and outcome in waiting:
        waiting.remove(outcome)
        if not waiting:
            del kept[key]


def _all_voided(seen: set[str]) -> bool:
    """Whether the decision's offer was redeemed by some order, and every such order voided.

    >>> _all_voided({"redeemed", "redeemed:o-1", "voided", "voided:o-1"})
    True
    >>> _all_voided({"redeemed", "redeemed:o-1", "redeemed:o-2", "voided:o-1"})
    False
    """
    orders = {mark[9:] for mark in seen if mark.startswith("redeemed:")}
    return bool(orders) and all(f"voided:{order}" in seen for order in orders)


def join_in_time_order(
    decisions: Iterable[Decision], events: Iterable[Event], windows: AttributionWindows
) -> list[LabelledExample]:
    """Batch form of the join: decisions and events merged by event time, one source.

    The streaming flow runs the same :class:`OutcomeJoin`; on a log read in time order
    both give the same examples. Returns them sorted by decision time and id.
    """
    items: list[tuple[int, int, object]] = []
    for decision in decisions:
        items.append((int(decision.decided_at.timestamp()), 0, decision))
    for event in events:
        items.append((int(event.event_time.timestamp()), 1, event))
    items.sort(key=lambda item: (item[0], item[1]))
    join = OutcomeJoin(windows, sources=("all",))
    out: list[LabelledExample] = []
    for at, _order, item in items:
        if isinstance(item, Decision):
            out += join.on_decision(item)
        else:
            for outcome in outcomes_of(item):  # type: ignore[arg-type]
                join.on_outcome(outcome)
        out += join.advance("all", at)
    out += join.flush()
    out.sort(key=lambda x: (x.decision.decided_at, x.decision.decision_id))
    return out
