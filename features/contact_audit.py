"""An independent check of sent messages against the contact policy: count the violations.

Written apart from :mod:`features.policy` on purpose (a sweep over what was sent, not the
rule functions that decided it), so the benchmark and the tests check the decisions with
a second implementation:

* **consent** — a marketing message on a channel the customer had not opted in to at the
  send time (any message, on a channel that needs an explicit opt-in), or any message on a
  channel they had opted out of;
* **caps** — a marketing message that makes some rolling 24-hour or 7-day window hold more
  than the cap, per channel or across channels;
* **quiet_hours** — a message sent inside the local quiet hours on a channel where they
  apply (transactional messages of an urgency that skips them excepted);
* **duplicates** — the same marketing campaign or offer twice (any channels) within the
  window, or the same transactional campaign in two channels.

>>> from datetime import UTC, datetime, timedelta
>>> from features.policy import load_policies
>>> t = datetime(2026, 3, 2, 12, tzinfo=UTC)
>>> sent = [Sent("p", "email", t, "marketing", "c1"), Sent("p", "email", t, "marketing", "c1")]
>>> audit(sent, load_policies(), consent=lambda p, ch, at: True,
...       tz_offset_min=lambda p, at: 0, quiet_channels={"push", "sms", "messenger"}).counts
{'consent': 0, 'caps': 1, 'quiet_hours': 0, 'duplicates': 1}
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from features.policy import Policies

KINDS = ("consent", "caps", "quiet_hours", "duplicates")


@dataclass(frozen=True, slots=True)
class Sent:
    """One message as it went out."""

    profile_id: str
    channel: str
    at: datetime
    kind: str
    campaign: str | None = None
    offer_id: str | None = None
    urgency: str = "normal"
    decision_id: str = ""


@dataclass
class AuditResult:
    """Violation counts by kind, and up to ``keep`` examples of each."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    examples: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    keep: int = 5

    def add(self, kind: str, example: str) -> None:
        """Count one violation."""
        self.counts[kind] += 1
        if len(self.examples[kind]) < self.keep:
            self.examples[kind].append(example)

    @property
    def total(self) -> int:
        """All violations."""
        return sum(self.counts.values())


def audit(
    sent: Iterable[Sent],
    policies: Policies,
    *,
    consent: Callable[[str, str, datetime], bool | None],
    tz_offset_min: Callable[[str, datetime], int],
    quiet_channels: set[str],
    opt_in_channels: frozenset[str] | set[str] = frozenset(),
) -> AuditResult:
    """Count violations in ``sent``.

    ``consent(profile, channel, at)`` is the customer's consent at that time (``True``,
    ``False`` for an opt-out, ``None`` when none is on record);
    ``tz_offset_min(profile, at)`` their UTC offset in minutes at that time (daylight
    saving changes it); ``quiet_channels`` the channels where quiet hours apply;
    ``opt_in_channels`` those that need an opt-in for every message (push).
    """
    result = AuditResult()
    contact = policies.contact
    by_profile: dict[str, list[Sent]] = defaultdict(list)
    for message in sent:
        by_profile[message.profile_id].append(message)
        _consent(message, consent, contact.unknown_consent.marketing, opt_in_channels, result)
        _quiet(message, tz_offset_min, quiet_channels, policies, result)
    window = timedelta(hours=contact.duplicate_window_hours)
    for profile_id, messages in by_profile.items():
        marketing = sorted((m for m in messages if m.kind == "marketing"), key=lambda m: m.at)
        _duplicates(marketing, window, result)
        transactional = sorted((m for m in messages if m.kind != "marketing"),
                               key=lambda m: m.at)  # fmt: skip
        _in_another_channel(transactional, window, result)
        caps = contact.caps
        for channel, cap in caps.per_channel.items():
            times = [m.at for m in marketing if m.channel == channel]
            _over(times, timedelta(days=1), cap.day, f"{profile_id} {channel} day", result)
            _over(times, timedelta(days=7), cap.week, f"{profile_id} {channel} week", result)
        every = [m.at for m in marketing]
        _over(every, timedelta(days=1), caps.all_channels.day, f"{profile_id} all day", result)
        _over(every, timedelta(days=7), caps.all_channels.week, f"{profile_id} all week", result)
    return result


def _consent(
    message: Sent,
    consent: Callable[[str, str, datetime], bool | None],
    unknown_marketing: str,
    opt_in_channels: frozenset[str] | set[str],
    result: AuditResult,
) -> None:
    granted = consent(message.profile_id, message.channel, message.at)
    needs_opt_in = message.channel in opt_in_channels or (
        message.kind == "marketing" and unknown_marketing == "deny"
    )
    missing = granted is None and needs_opt_in
    if granted is False or missing:
        result.add("consent", f"{message.profile_id} {message.channel} at {message.at}")


def _quiet(
    message: Sent,
    tz_offset_min: Callable[[str, datetime], int],
    quiet_channels: set[str],
    policies: Policies,
    result: AuditResult,
) -> None:
    if message.channel not in quiet_channels:
        return
    rule = policies.contact.urgency.get(message.urgency)  # type: ignore[call-overload]
    if message.kind == "transactional" and rule is not None and rule.skip_quiet_hours:
        return
    local = message.at + timedelta(minutes=tz_offset_min(message.profile_id, message.at))
    minute = local.hour * 60 + local.minute
    start_h, start_m = map(int, policies.contact.quiet_hours.start.split(":"))
    end_h, end_m = map(int, policies.contact.quiet_hours.end.split(":"))
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    inside = start <= minute < end if start <= end else (minute >= start or minute < end)
    if start != end and inside:
        result.add("quiet_hours", f"{message.profile_id} {message.channel} local {local:%H:%M}")


def _duplicates(marketing: list[Sent], window: timedelta, result: AuditResult) -> None:
    last_seen: dict[tuple[str, str], datetime] = {}
    for message in marketing:
        keys = [("campaign", message.campaign), ("offer", message.offer_id)]
        clash = False
        for name, value in keys:
            if value is None:
                continue
            previous = last_seen.get((name, value))
            if previous is not None and message.at - previous < window:
                clash = True
            last_seen[(name, value)] = message.at
        if clash:
            result.add("duplicates", f"{message.profile_id} {message.campaign} at {message.at}")


def _in_another_channel(transactional: list[Sent], window: timedelta, result: AuditResult,
                        ) -> None:  # fmt: skip
    """Count a transactional campaign that went out in another channel within the window.

    The same channel may repeat it (order updates share a campaign); another may not.
    """
    last_seen: dict[tuple[str, str], datetime] = {}
    for message in transactional:
        if message.campaign is None:
            continue
        clash = any(
            message.at - at < window
            for (campaign, channel), at in last_seen.items()
            if campaign == message.campaign and channel != message.channel
        )
        last_seen[(message.campaign, message.channel)] = message.at
        if clash:
            result.add("duplicates", f"{message.profile_id} {message.campaign} at {message.at}")


def _over(
    times: list[datetime], window: timedelta, cap: int | None, label: str, result: AuditResult
) -> None:
    """Count messages that are the (cap+1)-th or later within any window ending at them."""
    if cap is None:
        return
    for j, at in enumerate(times):
        # Messages in (at - window, at]: from the first one after at - window up to j.
        first = bisect_right(times, at - window)
        if j - first + 1 > cap:
            result.add("caps", f"{label}: {j - first + 1} > {cap} ending {at}")
