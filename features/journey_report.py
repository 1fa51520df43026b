"""Treated vs control conversion per journey and step, from the journeys' own records.

An entry *reaches* step ``s`` when the step falls due: treated entries then have a ``sent``
or ``suppressed`` record (intention to treat: a suppressed step still counts as treated),
control entries a ``held_out`` record. It *converts after* step ``s`` when its goal
(``converted`` record) happens after that, within the journey's goal window. The lift is
the treated rate minus the control rate. Its 95 % interval is a **cluster bootstrap over
customers** (seeded, so the same records give the same interval): one customer's carts or
orders are not independent (a procrastinator returns to most of theirs), so resampling
entries one by one would give too narrow an interval.

>>> rate = Rate(treated=Share(40, 100), control=Share(20, 100))
>>> round(rate.lift, 2), [round(x, 2) for x in rate.interval]
(0.2, [0.08, 0.32])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from features.journeys import Converted, Entered, HeldOut, JourneyRecord, Outbound, Suppressed

BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 20261125


@dataclass(frozen=True, slots=True)
class Share:
    """``hits`` out of ``n``; ``units`` splits them by customer as ``(hits, n)`` pairs.

    Without ``units`` every entry counts as its own customer.
    """

    hits: int
    n: int
    units: Sequence[tuple[int, int]] = ()

    def by_unit(self) -> np.ndarray:
        """Return the ``(hits, n)`` pairs per customer as an array of shape (customers, 2)."""
        if self.units:
            return np.asarray(self.units, dtype=np.int64).reshape(-1, 2)
        ones = np.ones(self.n, dtype=np.int64)
        hits = np.zeros(self.n, dtype=np.int64)
        hits[: self.hits] = 1
        return np.stack([hits, ones], axis=1)

    @property
    def rate(self) -> float:
        """The share, 0 when ``n`` is 0."""
        return self.hits / self.n if self.n else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """Return plain values for JSON."""
        return {"n": self.n, "converted": self.hits, "rate": round(self.rate, 6)}


@dataclass(frozen=True, slots=True)
class Rate:
    """Treated and control shares, and their difference."""

    treated: Share
    control: Share

    @property
    def lift(self) -> float:
        """Treated rate minus control rate."""
        return self.treated.rate - self.control.rate

    @property
    def interval(self) -> tuple[float, float]:
        """The 95 % cluster-bootstrap interval of the lift (``nan`` if a group is empty)."""
        if not self.treated.n or not self.control.n:
            return (math.nan, math.nan)
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        treated = _resampled_rates(self.treated.by_unit(), rng)
        control = _resampled_rates(self.control.by_unit(), rng)
        low, high = np.quantile(treated - control, [0.025, 0.975])
        return (float(low), float(high))

    def as_dict(self) -> dict[str, object]:
        """Return plain values for JSON."""
        low, high = self.interval
        return {
            "treated": self.treated.as_dict(),
            "control": self.control.as_dict(),
            "lift": round(self.lift, 6),
            "lift_95": [round(low, 6), round(high, 6)],
        }


def _resampled_rates(units: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rates of ``BOOTSTRAP_DRAWS`` resamples of the customers (with replacement)."""
    picks = rng.integers(0, len(units), size=(BOOTSTRAP_DRAWS, len(units)))
    hits, n = units[:, 0][picks].sum(axis=1), units[:, 1][picks].sum(axis=1)
    return hits / np.maximum(n, 1)


@dataclass
class JourneyReport:
    """One journey: entries, overall conversion, and conversion after each step."""

    journey: str
    entries: Rate
    steps: dict[str, Rate] = field(default_factory=dict)


@dataclass
class _Tally:
    entries: dict[tuple[str, str], bool] = field(default_factory=dict)  # (profile, entry) -> ctl
    reached: dict[int, dict[tuple[str, str], bool]] = field(default_factory=dict)
    converted: dict[tuple[str, str], int] = field(default_factory=dict)  # -> after_step
    step_names: dict[int, str] = field(default_factory=dict)


def journey_report(records: Iterable[JourneyRecord]) -> list[JourneyReport]:
    """Aggregate journey records into treated-vs-control conversion, per journey and step."""
    tallies: dict[str, _Tally] = {}
    for record in records:
        tally = tallies.setdefault(record.journey, _Tally())
        key = (record.profile_id, record.entry_id)
        if isinstance(record, Entered):
            tally.entries[key] = record.control
        elif isinstance(record, Outbound | Suppressed | HeldOut):
            tally.reached.setdefault(record.step_index, {})[key] = record.control
            tally.step_names[record.step_index] = record.step
        elif isinstance(record, Converted):
            tally.converted[key] = max(tally.converted.get(key, -1), record.after_step)
    reports = []
    for journey in sorted(tallies):
        tally = tallies[journey]
        report = JourneyReport(journey, _rate(tally.entries, tally.converted, -1))
        for index in sorted(tally.reached):
            name = tally.step_names[index]
            report.steps[name] = _rate(tally.reached[index], tally.converted, index)
        reports.append(report)
    return reports


def _rate(
    group: dict[tuple[str, str], bool], converted: dict[tuple[str, str], int], step: int
) -> Rate:
    per_unit: dict[bool, dict[str, list[int]]] = {True: {}, False: {}}
    for key, control in group.items():
        unit = per_unit[control].setdefault(key[0], [0, 0])  # by profile (customer)
        unit[1] += 1
        if converted.get(key, -2) >= step:
            unit[0] += 1
    treated, control = (
        Share(
            sum(u[0] for u in per_unit[held].values()),
            sum(u[1] for u in per_unit[held].values()),
            tuple((u[0], u[1]) for _, u in sorted(per_unit[held].items())),
        )
        for held in (False, True)
    )
    return Rate(treated, control)


def report_table(reports: list[JourneyReport]) -> list[list[str]]:
    """Return rows for a printed table: journey, step, treated, control, lift [95 %]."""
    rows = []
    for report in reports:
        for step, rate in [("(entry)", report.entries), *report.steps.items()]:
            low, high = rate.interval
            rows.append(
                [
                    report.journey,
                    step,
                    f"{rate.treated.hits}/{rate.treated.n} = {rate.treated.rate:.3f}",
                    f"{rate.control.hits}/{rate.control.n} = {rate.control.rate:.3f}",
                    f"{rate.lift:+.3f} [{low:+.3f}, {high:+.3f}]",
                ]
            )
    return rows
