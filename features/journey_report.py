"""Treated vs control conversion per journey and step, from the journeys' own records.

An entry *reaches* step ``s`` when the step falls due: treated entries then have a ``sent``
or ``suppressed`` record (intention to treat: a suppressed step still counts as treated),
control entries a ``held_out`` record. It *converts after* step ``s`` when its goal
(``converted`` record) happens after that, within the journey's goal window. The lift is
the treated rate minus the control rate, with a 95 % normal-approximation interval.

>>> rate = Rate(treated=Share(40, 100), control=Share(20, 100))
>>> round(rate.lift, 2), [round(x, 3) for x in rate.interval]
(0.2, [0.076, 0.324])
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from features.journeys import Converted, Entered, HeldOut, JourneyRecord, Outbound, Suppressed

Z95 = 1.959964


@dataclass(frozen=True, slots=True)
class Share:
    """``hits`` out of ``n``."""

    hits: int
    n: int

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
        """The 95 % interval of the lift (Wald; ``(nan, nan)`` if a group is empty)."""
        t, c = self.treated, self.control
        if not t.n or not c.n:
            return (math.nan, math.nan)
        se = math.sqrt(t.rate * (1 - t.rate) / t.n + c.rate * (1 - c.rate) / c.n)
        return (self.lift - Z95 * se, self.lift + Z95 * se)

    def as_dict(self) -> dict[str, object]:
        """Return plain values for JSON."""
        low, high = self.interval
        return {
            "treated": self.treated.as_dict(),
            "control": self.control.as_dict(),
            "lift": round(self.lift, 6),
            "lift_95": [round(low, 6), round(high, 6)],
        }


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
    counts = {True: [0, 0], False: [0, 0]}
    for key, control in group.items():
        counts[control][1] += 1
        if converted.get(key, -2) >= step:
            counts[control][0] += 1
    return Rate(Share(*counts[False]), Share(*counts[True]))


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
