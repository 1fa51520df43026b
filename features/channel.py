"""Channel choice for one message, as a pure function of its inputs.

Every messaging channel of the catalog is judged by the contact policy
(:func:`features.policy.check_contact`: offer suppression, consent, quiet hours and active
hour, duplicates, caps) and scored (probability the customer reads it × (message value −
channel cost) × channel lever). The **model's choice** is the best channel the policy allows,
ignoring the campaign's ``allowed_channels``; the answer is the best among the channels that
are also allowed (explored ε-greedily or by Thompson sampling: :mod:`features.arbitration`),
so marketers see when their restriction overrides the model. With no channel left the answer
is ``none``, and ``suppressed_by`` names the rule that blocked the best-scoring allowed
channel with consent (or, when no allowed channel has consent, the consent rule of the
best-scoring one).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from features.arbitration import Exploration, Pick, rank
from features.catalog import ChannelSpec
from features.policy import ContactFacts, Message, Policies, Verdict, check_contact
from features.scoring import Candidate, ScoreContext, Scored, Scorer
from features.store import ContactRecord

NOT_ALLOWED = "not_allowed"
OFFER_NOT_VALID = "offer_not_valid"
CONSENT_RULES = frozenset({"consent_opt_out", "consent_missing"})


@dataclass(frozen=True, slots=True)
class ChannelOption:
    """One channel: policy verdict, score, arbitration score, campaign permission."""

    channel: str
    verdict: Verdict
    scored: Scored
    score: float
    allowed: bool

    @property
    def rule(self) -> str | None:
        """The rule that blocks this channel (policy first, then the campaign), or ``None``."""
        return self.verdict.rule or (None if self.allowed else NOT_ALLOWED)


@dataclass(frozen=True, slots=True)
class ChannelOutcome:
    """The pick (or none), every option, the model's own choice and the deciding rule."""

    options: list[ChannelOption]
    pick: Pick | None
    eligible: list[int]
    first_slot: dict[int, float]
    model_choice: int | None
    suppressed_by: str | None

    @property
    def chosen(self) -> ChannelOption | None:
        """The chosen option, or ``None``."""
        return None if self.pick is None else self.options[self.pick.index]


def decide_channel(
    message: Message,
    *,
    channels: Mapping[str, ChannelSpec],
    allowed: Sequence[str] | None,
    features: Mapping[str, Any] | None,
    facts: ContactFacts,
    history: Sequence[ContactRecord],
    now: datetime,
    policies: Policies,
    scorer: Scorer,
    score_context: ScoreContext,
    exploration: Exploration,
    rng: random.Random,
    offer_rule: str | None = None,
    offer_valid_at: Callable[[datetime], bool] | None = None,
) -> ChannelOutcome:
    """Choose the channel and send time for ``message``; see the module docstring.

    ``offer_rule`` names why the message's offer may not be promoted (tier, budget:
    :func:`serving.eligibility.message_offer_rule`); it suppresses a marketing message on
    every channel. ``offer_valid_at`` says whether the offer is valid at a time: a
    marketing message goes out on a channel only if its offer is valid when it is sent
    there (quiet hours may defer it past the offer's end, or into its start).
    """
    names = sorted(channels)
    scored = scorer.score(features, [Candidate.via(c) for c in names], score_context)
    if len(scored) != len(names):
        message_text = f"scorer returned {len(scored)} scores for {len(names)} channels"
        raise ValueError(message_text)
    options, worths = [], []
    for name, score in zip(names, scored, strict=True):
        spec = channels[name]
        if offer_rule is not None and message.kind == "marketing":
            verdict = Verdict(name, offer_rule, None)
        else:
            verdict = check_contact(
                message,
                name,
                facts=facts,
                history=history,
                now=now,
                policy=policies.contact,
                quiet_hours_apply=spec.quiet_hours_apply,
                opt_in_required=spec.opt_in_required,
            )
            if (
                offer_valid_at is not None and message.kind == "marketing"
                and verdict.send_at is not None and not offer_valid_at(verdict.send_at)
            ):  # fmt: skip
                verdict = Verdict(name, OFFER_NOT_VALID, None)
        value = policies.channel_value(spec.cost) * policies.channel_lever(name)
        permitted = allowed is None or name in allowed
        options.append(ChannelOption(name, verdict, score, score.probability * value, permitted))
        worths.append(value)
    scores = [o.score for o in options]
    by_score = rank(names, scores)
    passing = [i for i in by_score if options[i].verdict.allowed]
    model_choice = passing[0] if passing else None
    eligible = [i for i in passing if options[i].allowed]
    probabilities = np.array([o.scored.probability for o in options], dtype=np.float64)
    slate = exploration.choose(eligible, probabilities, np.array(worths), 1, rng)
    picks, first = slate.picks, slate.first_slot
    suppressed_by = None
    if not picks:
        suppressed_by = _deciding_rule([options[i] for i in by_score if options[i].allowed])
    return ChannelOutcome(
        options=options,
        pick=picks[0] if picks else None,
        eligible=eligible,
        first_slot=first,
        model_choice=model_choice,
        suppressed_by=suppressed_by,
    )


def _deciding_rule(permitted: Sequence[ChannelOption]) -> str:
    """Name the rule that kept the message from the best channel the customer consented to.

    Consent is a standing fact per channel; when a channel with consent exists, the rule
    that blocked it (a cap, a duplicate, …) is the one worth reporting.
    """
    if not permitted:
        return NOT_ALLOWED
    for option in permitted:
        if option.rule not in CONSENT_RULES:
            return option.rule or NOT_ALLOWED
    return permitted[0].rule or NOT_ALLOWED
