"""The decision engine: the I/O around the pure decisions (store, model, log, metrics).

One :class:`Engine` per app. Each call reads the profile (two round trips: resolve, GET; plus
the contact log for channel choice), computes features *as of now* with the stream's own
:func:`features.profile.profile_features`, runs the pure decision, answers, and hands the
decision record to the log without waiting. It degrades instead of failing:

* store unreachable or slow → offers from the context alone (``degraded: true``); channel
  choice answers ``none`` with ``suppressed_by: "store_unavailable"`` (consent and caps
  cannot be checked, so nothing is sent). After ``store_breaker_failures`` failures in a
  row the store breaker opens: for ``store_breaker_reset_s`` decisions degrade without
  calling the store (a worker waiting its timeout on every request would answer ten a
  second), then one tries it again;
* the model raises → the heuristic scores this request (``fallbacks{cause="model_error"}``);
* anything else unexpected → the same context-only answer, counted as an error.
"""

from __future__ import annotations

import itertools
import logging
import random
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import msgspec
from pybreaker import CircuitBreaker, CircuitBreakerError, CircuitBreakerListener

from features.arbitration import Exploration
from features.attribution import decode_example
from features.channel import OFFER_NOT_VALID, ChannelOutcome, decide_channel
from features.decisions import DecisionContext, person_erasure
from features.eventlog import erase_lines
from features.events import (
    ID_FIELDS,
    ErasureRequest,
    Event,
    Identifiers,
    IdentityUnlink,
    decode_event,
    encode_event,
)
from features.identity import fragment_id, identifiers_of, is_customer
from features.journeys import decode_record as decode_journey_record
from features.policy import (
    CONTACT_LOG_BUSY,
    WEEK,
    ContactFacts,
    Message,
    contact_facts,
    in_quiet_hours,
    local_zone,
    message_key,
)
from features.profile import decode_profile, profile_features
from features.scoring import ScoreContext, Scored, Scorer
from features.store import ContactRecord, OnlineStore, StoreError, StoreUnavailableError
from features.topics import CONSENT, DECISION_ERASURES, routing_key, topic_for
from serving.budgets import BudgetSpend
from serving.decision_log import DecisionLog
from serving.eligibility import OfferContext, message_offer_rule
from serving.eraser import encode_job, new_job
from serving.metrics import ServingMetrics
from serving.offers import OffersOutcome, decide_offers
from serving.policy_source import LoadedPolicies, PolicySource
from serving.reasons import codes, reasons
from serving.records import Header, channel_decision, failed_decision, offers_decision
from serving.registry import ScorerHolder
from serving.schemas import (
    Alternative,
    ChannelRequest,
    ChannelResponse,
    MessageIn,
    ModelChoice,
    OfferOut,
    OffersRequest,
    OffersResponse,
    RequestError,
    UnlinkRequest,
)

log = logging.getLogger(__name__)

STORE_UNAVAILABLE = "store_unavailable"
# A stored profile that does not decode (a bad write, a foreign value under its key): not
# an outage, so retrying will not help; it stays until the flow rewrites it or an erasure.
PROFILE_UNREADABLE = "profile_unreadable"
_UNREADABLE_ERRORS = (ValueError, KeyError, TypeError, AttributeError)
# Reads and decisions before giving up on a contact log that keeps changing under us.
CONTACT_ATTEMPTS = 3
_UNAVAILABLE_REASONS = {
    STORE_UNAVAILABLE: "the online store is unavailable: consent and caps cannot be checked; "
    "retry",
    PROFILE_UNREADABLE: "the customer's stored profile cannot be read: consent and caps "
    "cannot be checked, so nothing is sent until it is rewritten (features rebuild) or erased",
    CONTACT_LOG_BUSY: "other messages to this person were being decided at the same time; "
    "retry",
}
NO_ELIGIBLE_OFFER = "no_eligible_offer"
BREAKER_OPEN = "store_breaker_open"


class _BreakerMetrics(CircuitBreakerListener):
    """Logs the store breaker's changes (once, not per request) and shows its state."""

    def __init__(self, metrics: ServingMetrics) -> None:
        self.metrics = metrics

    def state_change(self, cb: CircuitBreaker, old_state: Any, new_state: Any) -> None:
        opened = new_state.name == "open"
        self.metrics.store_breaker.set(1 if opened else 0)
        before = old_state.name if old_state is not None else None
        if opened and before == "closed":  # not again after each failed trial
            log.warning("store breaker open: decisions degrade, the store is tried every "
                        "%.1f s", cb.reset_timeout)  # fmt: skip
        elif new_state.name == "closed" and before == "half-open":
            log.warning("store breaker closed: the store answers again")


def store_breaker(metrics: ServingMetrics, failures: int = 5, reset_s: float = 1.0,
                  ) -> CircuitBreaker:  # fmt: skip
    """Return the breaker decisions call the store through (one per worker process).

    Only the store being unreachable or slow counts (``StoreUnavailableError``): an error
    of one key (a value of the wrong type) says nothing about the others. The failure that
    opens it is raised as itself (the request degrades as for any store error); while
    open, calls raise ``CircuitBreakerError`` without touching the store.
    """
    return CircuitBreaker(
        fail_max=failures, reset_timeout=reset_s, throw_new_error_on_trip=False,
        exclude=[lambda error: not isinstance(error, StoreUnavailableError)],
        listeners=[_BreakerMetrics(metrics)], name="store",
    )  # fmt: skip


def utc_now() -> datetime:
    """Return the current time, timezone-aware."""
    return datetime.now(UTC)


_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count()


def new_decision_id() -> str:
    """Return a fresh decision id: a random per-process prefix and a counter.

    Unique across processes and restarts (64 random bits per process) without a system
    call per request, which ``uuid4`` makes.
    """
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


@dataclass
class Lookup:
    """What the store said about the requester."""

    profile_id: str | None = None
    features: dict[str, Any] | None = None
    history: list[ContactRecord] = field(default_factory=list)
    degraded: bool = False
    unreadable: bool = False


class UnavailableError(RuntimeError):
    """The store or the decision log cannot serve a support request now: retry later."""


class Engine:
    """Decide offers and channels; read profiles; erase people."""

    def __init__(
        self,
        *,
        store: OnlineStore,
        policies: PolicySource,
        scorers: ScorerHolder,
        decisions: DecisionLog,
        metrics: ServingMetrics,
        exploration: Exploration,
        clock: Callable[[], datetime] = utc_now,
        new_id: Callable[[], str] = new_decision_id,
        examples_path: Path | None = None,
        journey_logs: Sequence[Path] = (),
        budgets: BudgetSpend | None = None,
        queue_erasures: bool = False,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.store = store
        # Around the decisions' store calls only: support endpoints want the real error.
        self.breaker = breaker or store_breaker(metrics)
        self.policies = policies
        self.scorers = scorers
        self.decisions = decisions
        self.metrics = metrics
        self.exploration = exploration
        self.clock = clock
        self.new_id = new_id
        # The outcome join's labelled examples: logged training data that erasure reaches.
        self.examples_path = examples_path
        # The journeys' embedded logs (messages.outbound, triggers): they name profiles too.
        self.journey_logs = tuple(journey_logs)
        # Live offer budget spend (redemptions); without it, the policies' spend alone.
        self.budgets = budgets
        self.policy_name = f"serve-{exploration.name}"
        # Kafka decision log: leave the pass over the topic to ``omnioffer eraser``.
        self.queue_erasures = queue_erasures

    def _header(
        self,
        decision_id: str,
        now: datetime,
        ids: Identifiers,
        profile_id: str | None,
        context: DecisionContext,
        model_version: str,
        *,
        degraded: bool,
    ) -> Header:
        return Header(
            decision_id, now, ids, profile_id, context, self.policy_name, model_version, degraded
        )

    def _spent(self, loaded: LoadedPolicies) -> Mapping[str, float]:
        """Budget spend per offer: live redemptions plus the policies' ``budget_spent``."""
        spent = loaded.policies.budget_spent
        if self.budgets is None:
            return spent
        self.budgets.track(loaded.catalog)  # a reloaded catalog may bring budgeted offers
        return self.budgets.spent(spent)

    # --- reading the profile ------------------------------------------------------------

    def _lookup(self, fragments: Sequence[str], now: datetime, *, contacts: bool) -> Lookup:
        if not fragments:
            return Lookup()
        try:
            # Future (deferred) sends count too, so contacts are read from a week back on.
            since = now - WEEK if contacts else None
            read = self.breaker.call(self.store.read_resolved, fragments, since)
        except CircuitBreakerError:
            self.metrics.fallbacks.labels(cause=BREAKER_OPEN).inc()
            return Lookup(degraded=True)
        except StoreError as error:
            log.warning("store unavailable, degrading: %s", error)
            self.metrics.fallbacks.labels(cause=STORE_UNAVAILABLE).inc()
            return Lookup(degraded=True)
        profile_id, raw, history = read.profile_id, read.value, read.contacts
        if raw is None:
            return Lookup(profile_id=profile_id, history=history)
        try:
            features = profile_features(decode_profile(raw), int(now.timestamp()))
        except _UNREADABLE_ERRORS as error:
            log.error("profile %s unreadable, degrading: %s", profile_id, error)
            self.metrics.fallbacks.labels(cause=PROFILE_UNREADABLE).inc()
            return Lookup(profile_id=profile_id, history=history, degraded=True,
                          unreadable=True)  # fmt: skip
        return Lookup(profile_id, features, history)

    def _with_fallback(
        self, run: Callable[[Scorer], Any], loaded: LoadedPolicies
    ) -> tuple[Any, str]:
        """Run a decision with the current model; on a model error, with the heuristic.

        A model that reads offers' facts from the catalog is given the one in force.
        """
        scorer = self.scorers.current
        try:
            use_catalog = getattr(scorer, "use_catalog", None)
            if use_catalog is not None:
                use_catalog(loaded.catalog)
            return run(scorer), scorer.version
        except Exception:
            if scorer is self.scorers.fallback:
                raise
            log.exception("model %s failed; this request falls back to the heuristic", scorer)
            self.metrics.fallbacks.labels(cause="model_error").inc()
            fallback = self.scorers.fallback
            return run(fallback), fallback.version

    # --- POST /v1/offers -----------------------------------------------------------------

    def offers(self, request: OffersRequest) -> OffersResponse:
        """Decide the offers of one page load."""
        ctx = request.context
        loaded = self.policies.get()
        catalog = loaded.catalog
        store = None
        if ctx.store_id is not None:
            store = catalog.stores.get(ctx.store_id)
            if store is None:
                message = f"context.store_id: unknown store {ctx.store_id!r}"
                raise RequestError(message, field="context.store_id")
        now = self.clock()
        decision_id = self.new_id()
        lookup = self._lookup(request.fragments(), now, contacts=False)
        features = lookup.features
        last_store = (features or {}).get("last_store")
        offer_ctx = OfferContext(
            channel=ctx.channel,
            now=now,
            store=store,
            home_store=catalog.stores.get(last_store) if last_store else None,
            tier=(features or {}).get("tier"),
            basket_value=ctx.basket_value,
        )
        score_ctx = ScoreContext(
            surface="offers",
            channel=ctx.channel,
            page=ctx.page,
            store_id=ctx.store_id,
            placement=ctx.placement,
            now=now,
        )
        facts = contact_facts(features)
        spent = self._spent(loaded)

        def run(scorer: Scorer) -> OffersOutcome:
            return decide_offers(
                loaded.plans,
                features=features,
                facts=facts,
                context=offer_ctx,
                score_context=score_ctx,
                scorer=scorer,
                policies=loaded.policies,
                limit=request.limit,
                exploration=self.exploration,
                rng=random.Random(decision_id),
                cache=loaded.eligibility,
                spent=spent,
            )

        outcome, version = self._with_fallback(run, loaded)
        suppressed_by = None if outcome.picks else NO_ELIGIBLE_OFFER
        # Built once the response is sent: a record of 200 candidates costs ~0.2 ms of CPU.
        self.decisions.submit(
            lambda: offers_decision(
                self._header(
                    decision_id,
                    now,
                    request.identifiers(),
                    lookup.profile_id,
                    offers_context(request),
                    version,
                    degraded=lookup.degraded,
                ),
                outcome,
                suppressed_by,
            )
        )
        self._count_offers(outcome, ctx.channel, suppressed_by)
        return OffersResponse(
            decision_id=decision_id,
            offers=[_offer_out(outcome, pick_no) for pick_no in range(len(outcome.picks))],
            model_version=version,
            degraded=lookup.degraded,
            cold_start=features is None,
            profile_id=lookup.profile_id if features is not None else None,
            policy=self.policy_name,
            suppressed_by=suppressed_by,
        )

    def _count_offers(self, outcome: OffersOutcome, channel: str, rule: str | None) -> None:
        m = self.metrics
        for pick in outcome.picks:
            offer_id = outcome.candidates[pick.index].action_id
            m.inc(m.decisions, "offers", offer_id, channel)
            top = codes(outcome.scored[pick.index].contributions, top=1)
            m.inc(m.reasons, "offers", top[0] if top else "none")
        for _offer, suppressed in outcome.suppressed:
            m.inc(m.suppressed, "offers", suppressed)
        if rule:
            m.inc(m.suppressed, "offers", rule)

    # --- POST /v1/channel ----------------------------------------------------------------

    def channel(self, request: ChannelRequest) -> ChannelResponse:
        """Decide the channel and send time of one message."""
        fragments = request.fragments()
        if not fragments:
            message = "customer_id: at least one identifier is required (customer_id, …)"
            raise RequestError(message, field="customer_id")
        msg = request.message
        if msg.offer_id is not None and msg.offer_id not in self.policies.get().catalog.offers:
            message = f"message.offer_id: unknown offer {msg.offer_id!r}"
            raise RequestError(message, field="message.offer_id")
        now = self.clock()
        decision_id = self.new_id()
        message = Message(msg.campaign, msg.offer_id, msg.kind, msg.urgency, msg.message_id)
        context = channel_context(msg)
        score_ctx = ScoreContext(
            surface="channel",
            campaign=msg.campaign,
            offer_id=msg.offer_id,
            message_kind=msg.kind,
            now=now,
        )
        # Read, decide, then write the contact only if the log is still as read: another
        # process deciding for the same person in between would otherwise pass the same
        # cap. A changed log means deciding again on what is there now.
        for _attempt in range(CONTACT_ATTEMPTS):
            lookup = self._lookup(fragments, now, contacts=True)
            if lookup.degraded:
                rule = PROFILE_UNREADABLE if lookup.unreadable else STORE_UNAVAILABLE
                return self._channel_unavailable(request, decision_id, now, context, lookup,
                                                 rule)  # fmt: skip
            loaded = self.policies.get()
            contact = loaded.policies.contact
            facts = contact_facts(lookup.features, contact.default_offset_min(now))
            blocked = valid_at = None
            if msg.offer_id is not None:
                # Looked up in the version this attempt decides with: a reload since the
                # check above may have removed the offer.
                offer = loaded.catalog.offers.get(msg.offer_id)
                if offer is None:
                    blocked = OFFER_NOT_VALID
                else:
                    tier = (lookup.features or {}).get("tier")
                    blocked = message_offer_rule(offer, tier, self._spent(loaded))
                    valid_at = offer.valid_at

            def run(
                scorer: Scorer, lookup: Lookup = lookup, facts: ContactFacts = facts,
                loaded: LoadedPolicies = loaded, blocked: str | None = blocked,
                valid_at: Callable[[datetime], bool] | None = valid_at,
            ) -> ChannelOutcome:  # fmt: skip
                outcome = decide_channel(
                    message,
                    channels=loaded.catalog.channels,
                    allowed=msg.allowed_channels,
                    features=lookup.features,
                    facts=facts,
                    history=lookup.history,
                    now=now,
                    policies=loaded.send_policies,
                    scorer=scorer,
                    score_context=score_ctx,
                    exploration=self.exploration,
                    rng=random.Random(decision_id),
                    offer_rule=blocked,
                    offer_valid_at=valid_at,
                )
                if outcome.chosen is not None:
                    # A model explains lazily (features.scoring.LazyScores): the chosen
                    # channel's reasons are computed here, where a model error still falls
                    # back to the heuristic, rather than later, when its record is built.
                    _ = outcome.chosen.scored.contributions
                return outcome

            outcome, version = self._with_fallback(run, loaded)
            chosen = outcome.chosen
            profile_key = lookup.profile_id or fragments[0]
            if chosen is None or chosen.verdict.send_at is None:
                break
            record = ContactRecord(
                profile_id=profile_key,
                decision_id=decision_id,
                channel=chosen.channel,  # type: ignore[arg-type]
                sent_at=chosen.verdict.send_at,
                kind=msg.kind,
                campaign=msg.campaign,
                offer_id=msg.offer_id,
                message_key=message_key(msg.message_id),
            )
            try:
                # Synchronous on purpose: the next request must see this contact.
                add = self.store.add_contact_if_unchanged
                if self.breaker.call(add, record, now - WEEK, len(lookup.history)):
                    break
            except (StoreError, CircuitBreakerError) as error:
                log.warning("contact log unavailable, not sending: %s", error)
                self.metrics.fallbacks.labels(cause=STORE_UNAVAILABLE).inc()
                return self._channel_unavailable(request, decision_id, now, context, lookup)
            self.metrics.fallbacks.labels(cause="contact_log_changed").inc()
        else:
            log.warning("contact log of %s kept changing; not sending", profile_key)
            return self._channel_unavailable(
                request, decision_id, now, context, lookup, CONTACT_LOG_BUSY
            )
        self.decisions.submit(
            lambda: channel_decision(
                self._header(
                    decision_id, now, request.identifiers(), profile_key, context, version,
                    degraded=False,
                ),
                msg.offer_id,
                outcome,
            )
        )
        self._count_channel(outcome, msg.offer_id)
        tz_known = (lookup.features or {}).get("tz_known")
        assumed_zone = None if tz_known else loaded.policies.contact.default_timezone
        return _channel_response(
            outcome,
            decision_id=decision_id,
            now=now,
            facts=facts,
            quiet=loaded.send_policies.contact.quiet_hours,
            assumed_zone=assumed_zone,
            channels=loaded.catalog.channels,
            version=version,
            profile_id=lookup.profile_id,
            policy=self.policy_name,
        )

    def log_failure(self, request: OffersRequest | ChannelRequest | None,
                    decision_id: str) -> None:  # fmt: skip
        """Log the default answer given when a decision failed inside serving.

        Never raises: it runs where a decision already failed.
        """
        try:
            if isinstance(request, ChannelRequest):
                context = channel_context(request.message)
                surface, offer_id = "channel", request.message.offer_id
            else:
                context = offers_context(request) if request is not None else DecisionContext()
                surface, offer_id = "offers", None
            ids = request.identifiers() if request is not None else Identifiers()
            header = self._header(decision_id, self.clock(), ids, None, context,
                                  self.scorers.current.version, degraded=True)  # fmt: skip
            self.decisions.submit(failed_decision(header, surface, offer_id))  # type: ignore[arg-type]
        except Exception:  # the answer must still go out
            log.exception("could not log the failed decision %s", decision_id)

    def _channel_unavailable(
        self,
        request: ChannelRequest,
        decision_id: str,
        now: datetime,
        context: DecisionContext,
        lookup: Lookup,
        rule: str = STORE_UNAVAILABLE,
    ) -> ChannelResponse:
        version = self.scorers.current.version
        self.decisions.submit(
            channel_decision(
                self._header(
                    decision_id, now, request.identifiers(), lookup.profile_id, context,
                    version, degraded=True,
                ),
                request.message.offer_id,
                None,
                rule,
            )
        )
        self.metrics.suppressed.labels(surface="channel", rule=rule).inc()
        return ChannelResponse(
            decision_id=decision_id,
            channel="none",
            send_at=None,
            reason=_UNAVAILABLE_REASONS[rule],
            suppressed_by=rule,
            propensity=None,
            alternatives=[],
            model_choice=ModelChoice(channel=None, score=None, allowed=False, matches=False),
            model_version=version,
            degraded=True,
            profile_id=None,
            policy=self.policy_name,
        )

    def _count_channel(self, outcome: ChannelOutcome, offer_id: str | None) -> None:
        m = self.metrics
        chosen = outcome.chosen
        offer = offer_id or ""  # the catalog bounds the label's values
        if chosen is None:
            m.inc(m.decisions, "channel", offer, "none")
            m.inc(m.suppressed, "channel", outcome.suppressed_by or "none")
            return
        m.inc(m.decisions, "channel", offer, chosen.channel)
        top = codes(chosen.scored.contributions, top=1)
        m.inc(m.reasons, "channel", top[0] if top else "none")

    # --- support: GET /v1/profiles/{id}, DELETE /v1/customers/{id} ----------------------

    def profile(self, identifier: str) -> dict[str, Any] | None:
        """Return the profile an identifier resolves to, with features as of now."""
        now = self.clock()
        try:
            profile_id = self.store.resolve([identifier]) or identifier
            raw = self.store.read_profile(profile_id)
            if raw is None:
                return None
            identifiers = self.store.identifiers_of(profile_id)
            contacts = self.store.contacts_of(profile_id, now - WEEK)
        except StoreError as error:
            message = f"online store unavailable: {error}"
            raise UnavailableError(message) from error
        unreadable = None
        try:
            features = profile_features(decode_profile(raw), int(now.timestamp()))
        except _UNREADABLE_ERRORS as error:
            # Support staff need to see this state (and the identifiers, to erase or rebuild).
            log.error("profile %s unreadable: %s", profile_id, error)
            features, unreadable = {}, f"the stored profile cannot be decoded: {error}"
        prefix = "persona_"
        personas = {k[len(prefix) :]: v for k, v in features.items() if k.startswith(prefix)}
        return {
            "profile_id": profile_id,
            "identifiers": identifiers,
            "as_of": now,
            "unreadable": unreadable,
            "personas": personas,
            "features": features,
            "recent_contacts": [
                {"channel": c.channel, "sent_at": c.sent_at, "kind": c.kind, "campaign": c.campaign}
                for c in contacts
            ],
        }

    def unlink(self, request: UnlinkRequest) -> dict[str, Any]:
        """Publish one ``identity_unlink`` event per identifier (to ``events.consent``).

        The feature flow applies them (:mod:`features.identity`, rule 7): each identifier
        goes back to its own profile with its history, and is never linked to the customer
        again. They share the topic and key of the customer's erasures, so an unlink asked
        before an erasure is applied before it. The answer says which events were
        published, not that they are applied.

        Raises
        ------
        RequestError
            If an identifier is not ``field:value`` with a known weak identifier field and
            a value the event contract accepts (a hashed email is ``em:`` and 40 hex).
        UnavailableError
            If the event buffer refused some of them (those are named; asking again is
            harmless: an unlink is idempotent).

        """
        events: list[IdentityUnlink] = []
        for n, raw in enumerate(request.identifiers):
            where = f"identifiers[{n}]"
            try:
                identifier = parse_identifier(raw, "")
            except RequestError as error:
                message = f"{where}: {raw!r}: {str(error).removeprefix('id: ')}"
                raise RequestError(message, field=where) from None
            name, _, value = identifier.partition(":")
            if name == "customer_id":
                message = (f"{where}: {identifier!r} is a customer id; customers are never "
                           "linked to each other, so there is nothing to unlink")  # fmt: skip
                raise RequestError(message, field=where)
            event = IdentityUnlink(
                event_id=f"unlink-{self.new_id()}", event_time=self.clock(),
                source="contact_center", reason=request.reason,
                ids=Identifiers(customer_id=request.customer_id, **{name: value}),
            )  # fmt: skip
            events.append(_as_the_flow_reads(event, identifier, where))
        topic = topic_for("identity_unlink")
        refused = [
            e for e in events
            if not self.decisions.publish(topic, routing_key(e).encode(), encode_event(e))
        ]  # fmt: skip
        if refused:
            names = [identifiers_of(e.ids)[1] for e in refused]
            message = (f"event buffer full: the unlinks of {names} were not published "
                       f"({len(events) - len(refused)} of {len(events)} were)")  # fmt: skip
            raise UnavailableError(message)
        return {
            "customer_id": request.customer_id,
            "topic": topic,
            "events": [
                {"event_id": e.event_id, "identifier": identifiers_of(e.ids)[1]} for e in events
            ],
            "status": "published: the feature flow moves each identifier to its own profile",
        }

    def erase(self, identifier: str) -> dict[str, Any]:
        """Erase a person everywhere serving can reach, and ask the flows to forget them too.

        The decision log entries of the profile or any of its identifiers go first, with
        the training examples and journey logs; then the online store (profile, identity
        map, merges, contact log); then an ``erasure_request`` event is published on
        ``events.consent`` so the feature flow drops its state as well. In that order, a
        log that cannot be erased (Kafka down) leaves everything as it was: the
        :class:`UnavailableError` says to retry, and the retry still finds every
        identifier the person had. Every step is idempotent. While it runs, the decision
        log's erasure fence keeps the person's decisions that this host's other workers
        still buffer, or that any worker makes before the profile is gone, out of the log.

        With ``queue_erasures`` the decision log is not read here: a job naming the
        person's identifiers goes on ``decisions.erasures`` instead (after their decisions
        so far are on the broker), for :class:`serving.eraser.DecisionEraser`; the answer
        says ``queued`` and the job's id.
        """
        now = self.clock()
        field_name, _, value = identifier.partition(":")
        probe = ErasureRequest(event_id="erase-check", event_time=now, source="contact_center",
                               ids=Identifiers(**{field_name: value}))  # fmt: skip
        _as_the_flow_reads(probe, identifier, "id")
        try:
            profile_id = self.store.resolve([identifier])
            if profile_id is None and is_customer(identifier):
                profile_id = identifier
            identifiers = set(self.store.identifiers_of(profile_id)) if profile_id else set()
        except StoreError as error:
            message = f"online store unavailable: {error}"
            raise UnavailableError(message) from error
        identifiers.add(identifier)
        targets = {profile_id, *identifiers} - {None}
        with self._fenced(targets):
            erasure = person_erasure(targets)
            removed: int | None = None
            job = None
            try:
                if self.queue_erasures:
                    job = new_job(f"er-{self.new_id()}", targets, now)
                    self.decisions.deliver(DECISION_ERASURES, job.erasure_id.encode(),
                                           encode_job(job))  # fmt: skip
                else:
                    removed = self.decisions.erase(erasure)
            except Exception as error:  # the broker's or librdkafka's, whichever it is
                message = f"decision log unavailable, nothing was erased: {error}"
                raise UnavailableError(message) from error

            def example_of_person(line: bytes) -> bool:
                try:
                    return erasure.match(decode_example(line).decision)
                except ValueError:  # not an example (a cut-off line): not the person's either
                    return False

            def journey_record_of_person(line: bytes) -> bool:
                try:
                    return decode_journey_record(line).profile_id in targets
                except ValueError:
                    return False

            examples = 0
            try:
                if self.examples_path is not None:
                    examples = erase_lines(self.examples_path, example_of_person)
                journey_records = sum(
                    erase_lines(path, journey_record_of_person)
                    for path in self.journey_logs
                    if path.exists()
                )
            except OSError as error:
                # The decision log is done (idempotent): a retry redoes the files and the rest.
                done = "queued for erasure" if job is not None else "erased"
                message = (f"cannot rewrite {error.filename or 'a log file'}: "
                           f"{error.strerror or error}; the person's decisions are {done}, "
                           "the rest is not yet")  # fmt: skip
                raise UnavailableError(message) from error
            try:
                # Every key the person's data may sit under: the identifiers' own profiles
                # (a device messaged before its login), then the profile, whose identity index
                # is how a retry after a failure here still finds the others.
                keys = sorted(targets - {profile_id}) + ([profile_id] if profile_id else [])
                reports = [self.store.erase(key) for key in keys]
            except StoreError as error:
                done = "queued for erasure" if job is not None else "erased"
                message = f"online store unavailable, the person's decisions are {done}: {error}"
                raise UnavailableError(message) from error
            fields = {field_name: value}
            if profile_id is not None and is_customer(profile_id):
                # Name the person too, so the flow's person index forgets every linked
                # identifier, not only the one the caller knew.
                fields["customer_id"] = profile_id.partition(":")[2]
            event = ErasureRequest(
                event_id=f"erase-{self.new_id()}",
                event_time=now,
                source="contact_center",
                ids=Identifiers(**fields),
            )
            key = routing_key(event).encode()
            if not self.decisions.publish(CONSENT, key, encode_event(event)):
                message = "decision log buffer full: the erasure event was not published"
                raise UnavailableError(message)
            return {
                "identifier": identifier,
                "profile_id": profile_id,
                "identifiers": sorted(identifiers),
                "removed": {
                    "profiles": sum(r.profiles for r in reports),
                    "identifiers": sum(r.identifiers for r in reports),
                    "merges": sum(r.merges for r in reports),
                    "contacts": sum(r.contacts for r in reports),
                    "decisions": removed,
                    "training_examples": examples,
                    "journey_records": journey_records,
                },
                "erasure_event": CONSENT,
                "decision_log": (
                    {"status": "queued", "erasure_id": job.erasure_id, "topic": DECISION_ERASURES}
                    if job is not None else {"status": "done"}
                ),
            }


    @contextmanager
    def _fenced(self, targets: set[str]) -> Iterator[None]:
        """Keep the person's decisions out of the log while the inline erasure runs.

        Other workers' buffered decisions, and any made before the profile is gone, are
        dropped by every writer of this host (:class:`serving.fence.ErasureFence`).
        """
        fence = None if self.queue_erasures else getattr(self.decisions, "fence", None)
        if fence is None:
            yield
            return
        # What this worker decided before is written first, and counted by the erasure's
        # pass; the person's decisions kept out by the note are not in its count.
        self.decisions.flush()
        try:
            note = fence.begin(targets)
        except (OSError, ValueError) as error:  # FenceBusyError is an OSError too
            message = f"cannot note the erasure in {fence.path}: {error}; nothing was erased"
            raise UnavailableError(message) from error
        try:
            yield
        finally:
            try:
                fence.end(note)
            except Exception:  # the note then covers the person while this process lives
                log.exception("could not close the erasure note in %s", fence.path)


_Event = TypeVar("_Event", bound=Event)


def _as_the_flow_reads(event: _Event, identifier: str, where: str) -> _Event:
    """Return ``event`` if the feature flow would accept it; else a :class:`RequestError`.

    What the API publishes for the flow must not end in its dead-letter log: a value the
    event contract refuses (a hashed email is ``em:`` and 40 hex) is the caller's error.
    """
    try:
        decode_event(encode_event(event))
    except msgspec.ValidationError as error:
        name = identifier.partition(":")[0]
        message = f"{where}: {identifier!r} is not a valid {name}: {error}"
        raise RequestError(message, field=where) from None
    return event


def offers_context(request: OffersRequest) -> DecisionContext:
    """Return what the decision record keeps of an offers request besides identifiers."""
    ctx = request.context
    return DecisionContext(
        channel=ctx.channel, page=ctx.page, store_id=ctx.store_id, placement=ctx.placement,
        limit=request.limit, basket_value=ctx.basket_value,
    )  # fmt: skip


def channel_context(msg: MessageIn) -> DecisionContext:
    """Return what the decision record keeps of a message besides identifiers."""
    allowed = tuple(msg.allowed_channels) if msg.allowed_channels is not None else None
    return DecisionContext(
        channel="messaging", campaign=msg.campaign, message_kind=msg.kind, urgency=msg.urgency,
        allowed_channels=allowed, message_id=msg.message_id,
    )  # fmt: skip


def parse_identifier(raw: str, default_field: str = "customer_id") -> str:
    """Return ``field:value`` for a path id: ``cu-1`` means ``customer_id:cu-1``.

    Raises
    ------
    RequestError
        If the field is not an identifier field or the value is empty or too long.

    """
    name, sep, value = raw.partition(":")
    if not sep:
        name, value = default_field, raw
    if name not in ID_FIELDS:
        message = f"id: unknown identifier field {name!r}; expected one of {list(ID_FIELDS)}"
        raise RequestError(message, field="id")
    if not value or len(value) > 128:
        message = f"id: the value must be 1 to 128 characters; got {len(value)}"
        raise RequestError(message, field="id")
    return fragment_id(name, value)


def _offer_out(outcome: OffersOutcome, number: int) -> OfferOut:
    pick = outcome.picks[number]
    candidate = outcome.candidates[pick.index]
    scored: Scored = outcome.scored[pick.index]
    offer = candidate.offer
    words = reasons(scored.contributions)
    if pick.explored:
        words.append("exploration")
    return OfferOut(
        offer_id=candidate.action_id,
        name=offer.name if offer else candidate.action_id,
        kind=offer.kind if offer else "",
        score=round(outcome.scores[pick.index], 6),
        probability=round(scored.probability, 6),
        propensity=round(pick.propensity, 6),
        position=number,
        reasons=words,
    )


def _timing(
    send_at: datetime, now: datetime, facts: ContactFacts, quiet: Any, quiet_applies: bool,
    assumed_zone: str | None = None,
) -> str:
    if send_at <= now:
        return "send now"
    local = send_at.astimezone(local_zone(facts.tz_offset_min)).strftime("%H:%M")
    # Said, so support staff can tell a customer's own evening from an assumed one.
    where = f"{local} local time"
    if assumed_zone:  # the zone's clock at send_at, a daylight-saving change included
        local = send_at.astimezone(ZoneInfo(assumed_zone)).strftime("%H:%M")
        where = f"{local} {assumed_zone} time (the customer's own time zone is not known)"
    if quiet_applies and in_quiet_hours(now, facts.tz_offset_min, quiet):
        return f"deferred past the quiet hours to {where}"
    return f"waits for the customer's active hour, {where}"


def _channel_response(
    outcome: ChannelOutcome,
    *,
    decision_id: str,
    now: datetime,
    facts: ContactFacts,
    quiet: Any,
    assumed_zone: str | None,
    channels: Mapping[str, Any],
    version: str,
    profile_id: str | None,
    policy: str,
) -> ChannelResponse:
    options = outcome.options
    alternatives = [
        Alternative(
            channel=o.channel,
            score=round(o.score, 6),
            allowed=o.allowed,
            suppressed_by=o.rule,
            send_at=o.verdict.send_at,
        )
        for o in sorted(options, key=lambda o: (-o.score, o.channel))
    ]
    model = options[outcome.model_choice] if outcome.model_choice is not None else None
    chosen = outcome.chosen
    model_choice = ModelChoice(
        channel=model.channel if model else None,
        score=round(model.score, 6) if model else None,
        allowed=bool(model and model.allowed),
        matches=bool(model and chosen and model.channel == chosen.channel),
    )
    if chosen is None or outcome.pick is None:
        permitted = [o for o in sorted(options, key=lambda o: -o.score) if o.allowed]
        best = f" (best allowed channel: {permitted[0].channel})" if permitted else ""
        return ChannelResponse(
            decision_id=decision_id,
            channel="none",
            send_at=None,
            reason=f"suppressed by {outcome.suppressed_by}{best}",
            suppressed_by=outcome.suppressed_by,
            propensity=None,
            alternatives=alternatives,
            model_choice=model_choice,
            model_version=version,
            degraded=False,
            profile_id=profile_id,
            policy=policy,
        )
    send_at = chosen.verdict.send_at or now
    why = f"exploration ({policy})" if outcome.pick.explored else "best allowed channel"
    words = ", ".join(reasons(chosen.scored.contributions)) or "prior"
    quiet_applies = bool(channels[chosen.channel].quiet_hours_apply)
    timing = _timing(send_at, now, facts, quiet, quiet_applies, assumed_zone)
    override = ""
    if model is not None and not model.allowed:
        override = f"; the model preferred {model.channel}, which the campaign does not allow"
    return ChannelResponse(
        decision_id=decision_id,
        channel=chosen.channel,
        send_at=send_at,
        reason=f"{why} ({words}); {timing}{override}",
        suppressed_by=None,
        propensity=round(outcome.pick.propensity, 6),
        alternatives=alternatives,
        model_choice=model_choice,
        model_version=version,
        degraded=False,
        profile_id=profile_id,
        policy=policy,
    )

