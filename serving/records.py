"""Decision records (:class:`features.decisions.Decision`) from the outcomes of both surfaces.

Offers: ``candidates`` holds every eligible offer with its arbitration score and its
first-position propensity, plus each suppressed offer with propensity 0 and the reason
``suppressed_by:<rule>``; ``chosen`` holds the slate, each with its propensity at its
position and its top reason codes. Channel: one candidate per messaging channel (propensity
0 and ``suppressed_by:<rule>`` when blocked), ``chosen`` the channel with its send time, or
a ``none`` choice with ``suppressed_by`` set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from operator import attrgetter

import numpy as np

from features.channel import ChannelOutcome
from features.decisions import Choice, Decision, DecisionContext, Surface
from features.events import Identifiers
from serving.offers import OffersOutcome
from serving.reasons import codes

_ACTION_ID = attrgetter("action_id")
# A Choice's channel is a messaging or online channel; an in-store display has none yet.
_CHOICE_CHANNEL = {"web": "web", "app": "app"}


@dataclass(frozen=True, slots=True)
class Header:
    """What every decision record says about its request, whatever the surface."""

    decision_id: str
    now: datetime
    ids: Identifiers
    profile_id: str | None
    context: DecisionContext
    policy: str
    model_version: str
    degraded: bool


def round6(values: Sequence[float]) -> list[float]:
    """Return ``[round(v, 6) for v in values]``: the same floats, mostly computed by numpy.

    ``round(v, 6)`` is the double nearest to ``k / 10**6``, ``k`` the integer nearest to
    the exact ``v * 10**6`` (ties to even). numpy computes ``w = v * 1e6`` with an error
    of at most half an ulp, so ``rint(w)`` is that ``k`` unless ``w`` lies within an ulp
    or so of a half-integer (or is too large for exact integers, or not finite): those
    few values go to Python's ``round``. ``k / 1e6`` is then correctly rounded by IEEE
    division, as Python's decimal-to-double conversion of ``k`` e-6 is.
    """
    x = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # inf and nan go to Python below
        w = x * 1e6
        out = (np.rint(w) / 1e6).tolist()
        distance = np.abs(w - np.floor(w) - 0.5)
        safe = (distance > 2 * np.spacing(np.abs(w))) & (np.abs(w) < 2.0**52)
    if not safe.all():
        for i in np.flatnonzero(~safe).tolist():
            out[i] = round(values[i], 6)
    return out


def _record(
    header: Header,
    surface: Surface,
    chosen: list[Choice],
    candidates: list[Choice],
    suppressed_by: str | None,
    excluded: dict[str, int] | None = None,
    model_choice: str | None = None,
) -> Decision:
    return Decision(
        decision_id=header.decision_id,
        decided_at=header.now,
        surface=surface,
        ids=header.ids,
        policy=header.policy,
        chosen=chosen,
        context=header.context,
        profile_id=header.profile_id,
        candidates=candidates,
        model_version=header.model_version,
        suppressed_by=suppressed_by,
        degraded=header.degraded,
        excluded=excluded or {},
        model_choice=model_choice,
    )


def offers_decision(
    header: Header, outcome: OffersOutcome, suppressed_by: str | None = None
) -> Decision:
    """Return the record of one offers decision."""
    channel = _CHOICE_CHANNEL.get(header.context.channel or "", "none")
    first, n = outcome.first_slot, len(outcome.candidates)
    # 200 of these per record: positional arguments (offer_id, channel, propensity, score)
    # through map, and the scores rounded with numpy (the same floats as round(s, 6)).
    candidates = list(
        map(
            Choice,
            list(map(_ACTION_ID, outcome.candidates)),
            repeat(channel, n),
            list(map(first.get, range(n), repeat(0.0, n))),
            round6(outcome.scores),
        )
    )
    candidates += [
        Choice(
            offer_id=offer_id,
            channel=channel,  # type: ignore[arg-type]
            propensity=0.0,
            reasons=[f"suppressed_by:{rule}"],
        )
        for offer_id, rule in outcome.suppressed
    ]
    chosen = [
        Choice(
            offer_id=outcome.candidates[pick.index].action_id,
            channel=channel,  # type: ignore[arg-type]
            propensity=pick.propensity,
            score=outcome.scores[pick.index],
            position=position,
            reasons=codes(outcome.scored[pick.index].contributions),
        )
        for position, pick in enumerate(outcome.picks)
    ]
    return _record(header, "offers", chosen, candidates, suppressed_by, dict(outcome.excluded))


def channel_decision(
    header: Header,
    offer_id: str | None,
    outcome: ChannelOutcome | None,
    suppressed_by: str | None = None,
) -> Decision:
    """Return the record of one channel decision (``outcome`` is ``None`` when degraded)."""
    candidates: list[Choice] = []
    chosen: list[Choice] = []
    if outcome is not None:
        for i, option in enumerate(outcome.options):
            rule = option.rule
            candidates.append(
                Choice(
                    offer_id=offer_id,
                    channel=option.channel,  # type: ignore[arg-type]
                    propensity=outcome.first_slot.get(i, 0.0),
                    score=option.score,
                    send_at=option.verdict.send_at,
                    reasons=[f"suppressed_by:{rule}"] if rule else [],
                )
            )
        picked = outcome.chosen
        if picked is not None and outcome.pick is not None:
            chosen.append(
                Choice(
                    offer_id=offer_id,
                    channel=picked.channel,  # type: ignore[arg-type]
                    propensity=outcome.pick.propensity,
                    score=picked.score,
                    send_at=picked.verdict.send_at,
                    reasons=codes(picked.scored.contributions),
                )
            )
        suppressed_by = suppressed_by or outcome.suppressed_by
    if not chosen:
        chosen.append(Choice(offer_id=offer_id, channel="none", propensity=1.0))
    model = None
    if outcome is not None and outcome.model_choice is not None:
        model = outcome.options[outcome.model_choice].channel
    return _record(header, "channel", chosen, candidates, suppressed_by, model_choice=model)


def failed_decision(header: Header, surface: Surface, offer_id: str | None = None) -> Decision:
    """Return the record of a decision that failed inside serving and got the default answer.

    Offers: nothing shown; channel: ``none`` for the message's offer. ``suppressed_by`` is
    ``internal_error``, so the decision id the caller got is in the log, and the failures
    show in ``omnioffer decisions --suppressed``.
    """
    chosen = [] if surface == "offers" else [Choice(offer_id=offer_id, channel="none",
                                                    propensity=1.0)]  # fmt: skip
    return _record(header, surface, chosen, [], "internal_error")
