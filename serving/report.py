"""Who was capped or suppressed, and why: a query over the decision log (pure).

``omnioffer decisions --suppressed`` prints :func:`suppressions` of the decision log as a
table and counts by rule, in one pass that holds only the newest ``keep`` rows (a day of
decisions at 500 req/s does not fit in memory), between ``since`` and ``until``. A
decision is *suppressed* when nothing was chosen and ``suppressed_by`` names the rule; a
candidate is *blocked* when its reasons say ``suppressed_by:<rule>`` (a channel over its
cap while another channel was used, say).

>>> from datetime import UTC, datetime
>>> from features.decisions import Choice, Decision, Identifiers
>>> d = Decision(decision_id="d", decided_at=datetime(2026, 3, 2, tzinfo=UTC), surface="channel",
...     ids=Identifiers(customer_id="c"), policy="p", suppressed_by="total_cap_day",
...     chosen=[Choice(offer_id=None, channel="none", propensity=1.0)])
>>> report = suppressions([d])
>>> report.by_rule, report.rows[0].who, report.suppressed
({'total_cap_day': 1}, 'customer_id:c', 1)
>>> suppressions([d], since=datetime(2026, 3, 3, tzinfo=UTC)).decisions
0
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from features.decisions import Decision

PREFIX = "suppressed_by:"


@dataclass(frozen=True, slots=True)
class Suppressed:
    """One suppressed decision."""

    decided_at: datetime
    decision_id: str
    surface: str
    who: str
    about: str
    rule: str
    degraded: bool


@dataclass(frozen=True, slots=True)
class SuppressionReport:
    """The newest suppressed decisions (oldest first), counts by rule and of first choices."""

    rows: list[Suppressed]
    by_rule: dict[str, int]
    blocked_by_rule: dict[str, int]
    decisions: int
    suppressed: int = 0
    # (surface, offer or channel) of each decision's first choice: what was chosen most.
    first_choices: dict[tuple[str, str], int] | None = None


def _who(decision: Decision) -> str:
    if decision.profile_id:
        return decision.profile_id
    present = decision.ids.present()
    return ", ".join(f"{k}:{v}" for k, v in present.items()) or "(anonymous)"


def _about(decision: Decision) -> str:
    context = decision.context
    if decision.surface == "channel":
        offer = decision.chosen[0].offer_id if decision.chosen else None
        parts = [context.campaign or "", context.message_kind or "", offer or ""]
        return " / ".join(p for p in parts if p)
    return " / ".join(p for p in (context.channel, context.page, context.store_id) if p)


def _excluded(counts: dict[str, int]) -> str:
    """`` (tier: 3, budget: 1)``: why offers were not candidates, most common first."""
    if not counts:
        return ""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return " (" + ", ".join(f"{rule}: {n}" for rule, n in ranked) + ")"


def suppressions(
    decisions: Iterable[Decision],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    keep: int | None = None,
) -> SuppressionReport:
    """Collect the suppressed decisions and count rules (decisions and blocked candidates).

    Only decisions with ``since <= decided_at < until`` count; ``keep`` bounds the rows
    held to the newest ones (every one is counted).
    """
    newest: list[tuple[datetime, int, Suppressed]] = []  # a min-heap: the oldest on top
    by_rule: Counter[str] = Counter()
    blocked: Counter[str] = Counter()
    chosen: Counter[tuple[str, str]] = Counter()
    total = 0
    for n, decision in enumerate(decisions):
        if (since is not None and decision.decided_at < since) or (
            until is not None and decision.decided_at >= until
        ):
            continue
        total += 1
        blocked.update(decision.excluded)
        for candidate in decision.candidates:
            for reason in candidate.reasons:
                if reason.startswith(PREFIX):
                    blocked[reason[len(PREFIX) :]] += 1
        for choice in decision.chosen[:1]:
            what = choice.channel if decision.surface == "channel" else choice.offer_id
            chosen[(decision.surface, what or "")] += 1
        if decision.suppressed_by is None:
            continue
        by_rule[decision.suppressed_by] += 1
        row = Suppressed(
            decided_at=decision.decided_at,
            decision_id=decision.decision_id,
            surface=decision.surface,
            who=_who(decision),
            about=_about(decision),
            rule=decision.suppressed_by + _excluded(decision.excluded),
            degraded=decision.degraded,
        )
        entry = (decision.decided_at, n, row)
        if keep is None or len(newest) < keep:
            heapq.heappush(newest, entry)
        elif entry[:2] > newest[0][:2]:
            heapq.heapreplace(newest, entry)
    rows = [row for _at, _n, row in sorted(newest, key=lambda e: e[:2])]
    return SuppressionReport(rows, dict(by_rule.most_common()), dict(blocked.most_common()),
                             total, sum(by_rule.values()), dict(chosen))  # fmt: skip
