r"""Contact policy as data and as pure rules: consent, caps, duplicates, suppression, quiet hours.

Serving's channel choice and the journey flows apply the same rules, so they live here and
take plain values: the customer's :class:`ContactFacts` (from profile features), the contact
log (:class:`~features.store.ContactRecord` items) and the :class:`Policies` loaded from
``features/data/policies.yaml``. A rule returns ``None`` when it lets the message through and
its **rule name** when it suppresses it:

=====================  =====================================================================
rule                   suppresses when
=====================  =====================================================================
``offer_redeemed``     the message promotes an offer the customer already redeemed (marketing)
``offer_dismissed``    … or already dismissed (marketing)
``consent_opt_out``    the customer opted out of the channel (every kind of message)
``consent_missing``    no consent on record and the policy denies unknown consent for the kind
``duplicate_message``  the same campaign or offer went (or will go) out within the window
``channel_cap_day``    one more marketing message on the channel would exceed its daily cap
``channel_cap_week``   … its weekly cap
``total_cap_day``      … the daily cap across all channels
``total_cap_week``     … the weekly cap across all channels
=====================  =====================================================================

Caps count marketing messages in *rolling* windows (any 24 hours, any 7 days) around the send
time; transactional messages neither count nor are capped, but consent always applies. Quiet
hours never suppress: they defer (:func:`send_time`).

>>> policies = load_policies()
>>> facts = ContactFacts(consent={"email": True, "sms": False})
>>> check_consent(facts, "sms", "transactional", policies.contact.unknown_consent)
'consent_opt_out'
>>> check_consent(facts, "email", "marketing", policies.contact.unknown_consent) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo

import msgspec

from features.catalog import OfferKind
from features.datafile import DataFileError, check_document, read_document
from features.events import MessageChannel
from features.store import ContactRecord, MessageKind

DEFAULT_POLICIES_PATH = Path(__file__).parent / "data" / "policies.yaml"

Urgency = Literal["immediate", "high", "normal", "low"]
URGENCIES: tuple[str, ...] = get_args(Urgency)
MESSAGE_CHANNELS: tuple[str, ...] = get_args(MessageChannel)
DAY = timedelta(days=1)
WEEK = timedelta(days=7)
_TICK = timedelta(microseconds=1)  # datetimes resolve microseconds: the smallest step

Count = Annotated[int, msgspec.Meta(ge=0)]
# Bounded: an infinite lever or value would make scores inf or nan (null in the JSON).
MAX_AMOUNT = 1e9
Positive = Annotated[float, msgspec.Meta(gt=0, le=MAX_AMOUNT)]
NonNegative = Annotated[float, msgspec.Meta(ge=0, le=MAX_AMOUNT)]
ClockTime = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class PolicyError(DataFileError):
    """The policies file is invalid; the message names the file, the entry and the field."""


# --- the data ------------------------------------------------------------------------------


class Cap(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """At most ``day`` messages in any 24 hours and ``week`` in any 7 days; ``None``: no cap."""

    day: Count | None = None
    week: Count | None = None


class Caps(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Marketing caps per channel and across all channels."""

    per_channel: dict[MessageChannel, Cap] = {}
    all_channels: Cap = Cap()


class QuietHours(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Local clock times between which no message is sent (``start`` may be after ``end``)."""

    start: ClockTime = "21:00"
    end: ClockTime = "08:00"

    def contains(self, local: time) -> bool:
        """Return whether a local time of day falls inside the quiet hours.

        >>> QuietHours("21:00", "08:00").contains(time(23, 30)), QuietHours().contains(time(9))
        (True, False)
        """
        start, end = time.fromisoformat(self.start), time.fromisoformat(self.end)
        if start == end:
            return False
        if start < end:
            return start <= local < end
        return local >= start or local < end


class UnknownConsent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Whether a channel without any consent on record may be used, per message kind."""

    marketing: Literal["allow", "deny"] = "deny"
    transactional: Literal["allow", "deny"] = "allow"


class UrgencyRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How long a message may wait for the customer's active hour; quiet-hour exemption.

    ``skip_quiet_hours`` is honoured for transactional messages only: marketing always waits.
    """

    max_wait_hours: NonNegative = 0.0
    skip_quiet_hours: bool = False


class ContactPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything that decides whether and when one message may go out."""

    caps: Caps = Caps()
    duplicate_window_hours: NonNegative = 72.0
    quiet_hours: QuietHours = QuietHours()
    unknown_consent: UnknownConsent = UnknownConsent()
    urgency: dict[Urgency, UrgencyRule] = {}
    # Quiet hours of customers whose own offset was never seen (no page view or purchase
    # yet: a CRM import, a store sign-up): the home market's zone, daylight saving included.
    default_timezone: str = "UTC"  # checked by parse_policies (an IANA name)

    def default_offset_min(self, at: datetime) -> int:
        """Return the default zone's UTC offset at ``at``, in minutes east of UTC.

        >>> ContactPolicy(default_timezone="America/New_York").default_offset_min(
        ...     datetime(2026, 7, 1, tzinfo=UTC))
        -240
        """
        delta = at.astimezone(ZoneInfo(self.default_timezone)).utcoffset()
        return int(delta.total_seconds()) // 60 if delta is not None else 0

    def urgency_rule(self, urgency: str) -> UrgencyRule:
        """Return the rule of an urgency level (a level left out waits for nothing)."""
        return self.urgency.get(urgency, UrgencyRule())  # type: ignore[call-overload]


class Levers(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Business multipliers on the arbitration score; 1 where not listed."""

    offers: dict[str, NonNegative] = {}
    kinds: dict[OfferKind, NonNegative] = {}
    channels: dict[MessageChannel, NonNegative] = {}


class Values(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one accepted offer or one read message is worth, before its cost."""

    kinds: dict[OfferKind, NonNegative] = {}
    offers: dict[str, NonNegative] = {}
    message: NonNegative = 1.0


class Policies(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole policies file: contact policy, levers, values and offer budget spend."""

    contact: ContactPolicy = ContactPolicy()
    levers: Levers = Levers()
    values: Values = Values()
    budget_spent: dict[str, NonNegative] = {}

    def offer_lever(self, offer_id: str, kind: str) -> float:
        """Return the offer's lever: its own times its kind's (1 where not listed)."""
        return self.levers.offers.get(offer_id, 1.0) * self.levers.kinds.get(kind, 1.0)  # type: ignore[call-overload]

    def offer_value(self, offer_id: str, kind: str, cost: float) -> float:
        """Return the net value of one redemption: its value minus its cost, at least 0.01."""
        gross = self.values.offers.get(offer_id, self.values.kinds.get(kind, 1.0))  # type: ignore[call-overload]
        return max(0.01, gross - cost)

    def offer_worth(self, offer_id: str, kind: str, cost: float) -> float:
        """Return what an offer's propensity is multiplied by to rank it: value × lever."""
        return self.offer_value(offer_id, kind, cost) * self.offer_lever(offer_id, kind)

    def channel_lever(self, channel: str) -> float:
        """Return the channel's lever (1 where not listed)."""
        return self.levers.channels.get(channel, 1.0)  # type: ignore[call-overload]

    def channel_value(self, cost: float) -> float:
        """Return the net value of one message read: the message value minus the send cost."""
        return max(0.001, self.values.message - cost)


# --- loading ---------------------------------------------------------------------------------


def parse_policies(document: Any, source: str = "<policies>") -> Policies:
    """Validate a decoded policies document.

    Raises
    ------
    PolicyError
        Naming ``source``, the entry and the field, e.g.
        ``policies.yaml: entry 'contact.caps.all_channels', field 'day': Expected `int` >= 0;
        got -1``.

    """
    if document is None:
        document = {}
    check_document(document, Policies, source, PolicyError)
    policies = msgspec.convert(document, Policies, strict=True)
    zone = policies.contact.default_timezone
    try:
        ZoneInfo(zone)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        message = (f"{source}: entry 'contact', field 'default_timezone': unknown time zone "
                   f"{zone!r} (expected an IANA name such as 'Europe/Berlin')")  # fmt: skip
        raise PolicyError(message) from None
    missing = [u for u in URGENCIES if u not in policies.contact.urgency]
    if missing:
        message = (
            f"{source}: entry 'contact.urgency', field '{missing[0]}': every urgency level "
            f"needs a rule ({', '.join(URGENCIES)}); missing {missing}"
        )
        raise PolicyError(message)
    return policies


def load_policies(path: Path | str = DEFAULT_POLICIES_PATH) -> Policies:
    """Load and validate a policies file (YAML or JSON).

    Raises
    ------
    PolicyError
        If the file is missing, cannot be parsed or breaks the schema.

    """
    path = Path(path)
    return parse_policies(read_document(path, "policies", PolicyError), str(path))


def check_offer_ids(policies: Policies, offer_ids: set[str], source: str = "<policies>") -> None:
    """Reject levers, values or budget spend that name an offer the catalog does not have."""
    for entry, mapping in (
        ("levers.offers", policies.levers.offers),
        ("values.offers", policies.values.offers),
        ("budget_spent", policies.budget_spent),
    ):
        for offer_id in mapping:
            if offer_id not in offer_ids:
                message = f"{source}: entry '{entry}', field '{offer_id}': unknown offer id"
                raise PolicyError(message)


# --- the customer, as the rules see them ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContactFacts:
    """What the rules need to know about one customer (from profile features).

    ``consent`` maps a channel to ``True`` (opted in), ``False`` (opted out); a channel left
    out has no consent on record. ``active_hour`` is a local hour of day, or ``None``.
    """

    consent: Mapping[str, bool] = field(default_factory=dict)
    # Minutes east of UTC: the customer's own offset, else the policy's default zone's.
    tz_offset_min: int = 0
    active_hour: int | None = None
    redeemed: frozenset[str] = frozenset()
    dismissed: frozenset[str] = frozenset()


def contact_facts(
    features: Mapping[str, Any] | None, default_offset_min: int = 0
) -> ContactFacts:
    """Build :class:`ContactFacts` from :func:`features.profile.profile_features` output.

    ``None`` (an unknown customer) gives no consent and no active hour. A customer whose
    offset was never seen (``tz_known`` false) gets ``default_offset_min``
    (:meth:`ContactPolicy.default_offset_min` at the decision time).

    >>> contact_facts({"tz_offset_min": 0, "tz_known": False}, -300).tz_offset_min
    -300
    >>> contact_facts({"tz_offset_min": 60, "tz_known": True}, -300).tz_offset_min
    60
    """
    if not features:
        return ContactFacts(tz_offset_min=default_offset_min)
    known = features.get("tz_known")
    if known is None:  # features built by hand, not by profile_features
        known = features.get("tz_offset_min") is not None
    consent = {
        channel: bool(value)
        for channel in MESSAGE_CHANNELS
        if (value := features.get(f"consent_{channel}")) is not None
    }
    return ContactFacts(
        consent=consent,
        tz_offset_min=int(features.get("tz_offset_min") or 0) if known else default_offset_min,
        active_hour=features.get("active_hour"),
        redeemed=frozenset(features.get("offers_redeemed") or ()),
        dismissed=frozenset(features.get("offers_dismissed") or ()),
    )


# --- the rules -------------------------------------------------------------------------------


def check_offer(offer_id: str | None, facts: ContactFacts) -> str | None:
    """Suppress an offer the customer already redeemed or dismissed.

    >>> check_offer("of-1", ContactFacts(redeemed=frozenset({"of-1"})))
    'offer_redeemed'
    """
    if offer_id is None:
        return None
    if offer_id in facts.redeemed:
        return "offer_redeemed"
    if offer_id in facts.dismissed:
        return "offer_dismissed"
    return None


def check_consent(
    facts: ContactFacts,
    channel: str,
    kind: MessageKind,
    unknown: UnknownConsent,
    *,
    opt_in_required: bool = False,
) -> str | None:
    """Apply consent: an opt-out always suppresses; no record suppresses if the policy denies.

    A channel that needs an explicit opt-in denies a missing record for every kind.
    """
    granted = facts.consent.get(channel)
    if granted is False:
        return "consent_opt_out"
    if granted is None and (opt_in_required or getattr(unknown, kind) == "deny"):
        return "consent_missing"
    return None


def fits_cap(times: Sequence[datetime], at: datetime, window: timedelta, cap: int) -> bool:
    """Return whether one more contact at ``at`` keeps every window at ``cap`` or fewer.

    Windows are half-open ``[s, s + window)`` for every start ``s``: rolling, not calendar.
    Only windows that contain ``at`` change, so only those are checked; the fullest of them
    starts either just after ``at - window`` or just after ``t - window`` for a later ``t``.

    >>> t0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
    >>> fits_cap([t0], t0 + timedelta(hours=23), DAY, 1), fits_cap([t0], t0 + DAY, DAY, 1)
    (False, True)
    """
    if cap <= 0:
        return False
    near = [t for t in times if at - window < t < at + window]
    if len(near) < cap:
        return True
    starts = [at - window + _TICK]
    starts += [t - window + _TICK for t in near if t > at]
    for start in starts:
        end = start + window
        if sum(1 for t in near if start <= t < end) >= cap:
            return False
    return True


def check_caps(
    history: Sequence[ContactRecord],
    channel: str,
    at: datetime,
    kind: MessageKind,
    caps: Caps,
) -> str | None:
    """Apply the marketing caps at send time ``at``; transactional messages are exempt."""
    if kind == "transactional":
        return None
    marketing = [c for c in history if c.kind == "marketing"]
    own = caps.per_channel.get(channel)  # type: ignore[call-overload]
    if own is not None:
        times = [c.sent_at for c in marketing if c.channel == channel]
        if own.day is not None and not fits_cap(times, at, DAY, own.day):
            return "channel_cap_day"
        if own.week is not None and not fits_cap(times, at, WEEK, own.week):
            return "channel_cap_week"
    every = [c.sent_at for c in marketing]
    total = caps.all_channels
    if total.day is not None and not fits_cap(every, at, DAY, total.day):
        return "total_cap_day"
    if total.week is not None and not fits_cap(every, at, WEEK, total.week):
        return "total_cap_week"
    return None


def check_duplicate(
    history: Sequence[ContactRecord],
    campaign: str | None,
    offer_id: str | None,
    at: datetime,
    window: timedelta,
) -> str | None:
    """Suppress the same campaign or the same offer within ``window`` of another send."""
    for record in history:
        same = (campaign is not None and record.campaign == campaign) or (
            offer_id is not None and record.offer_id == offer_id
        )
        if same and abs(record.sent_at - at) < window:
            return "duplicate_message"
    return None


# Why a sender gave up: other messages to the person were being sent at the same time.
CONTACT_LOG_BUSY = "contact_log_busy"


def check_log(
    history: Sequence[ContactRecord],
    channel: str,
    message: Message,
    at: datetime,
    policy: ContactPolicy,
) -> str | None:
    """Apply the rules that read the contact log: duplicate message, then caps (marketing).

    The only rules another sender can change between a decision and its send: a sender
    checks them again against the log it writes to (see ``flows.journey_flow``).
    """
    window = timedelta(hours=policy.duplicate_window_hours)
    rule = check_same_message(history, message.message_id, at, window)
    if rule is None and message.kind == "marketing":
        rule = check_duplicate(history, message.campaign, message.offer_id, at, window)
    elif rule is None:
        rule = check_other_channel(
            history, channel, message.campaign, at, window, message.message_id
        )
    if rule:
        return rule
    return check_caps(history, channel, at, message.kind, policy.caps)


def message_key(message_id: str | None) -> str | None:
    """Return the contact log's key of a sender's message id (``None`` without one).

    Prefixed, so no key written before ids existed (those held the campaign) can match.

    >>> message_key("order-7/receipt")
    'message:order-7/receipt'
    """
    return None if message_id is None else f"message:{message_id}"


def check_same_message(
    history: Sequence[ContactRecord], message_id: str | None, at: datetime, window: timedelta
) -> str | None:
    """Suppress a message whose sender's id was already sent within ``window`` (any channel).

    >>> t0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
    >>> sent = ContactRecord(profile_id="p", decision_id="d1", channel="email", sent_at=t0,
    ...                      kind="transactional", campaign="receipt",
    ...                      message_key=message_key("order-7"))
    >>> check_same_message([sent], "order-7", t0 + timedelta(minutes=5), timedelta(hours=24))
    'duplicate_message'
    >>> check_same_message([sent], "order-8", t0, timedelta(hours=24)) is None
    True
    """
    key = message_key(message_id)
    if key is None:
        return None
    for record in history:
        if record.message_key == key and abs(record.sent_at - at) < window:
            return "duplicate_message"
    return None


def check_other_channel(
    history: Sequence[ContactRecord],
    channel: str,
    campaign: str | None,
    at: datetime,
    window: timedelta,
    message_id: str | None = None,
) -> str | None:
    """Suppress a transactional message already sent in another channel within ``window``.

    The same message in two channels is a duplicate whatever its kind; in its own channel
    a transactional message may repeat (order updates share a campaign). Two sends with
    sender ids are the same message only if the ids are (:func:`check_same_message`), so
    the update of another order may go out in another channel; without an id on either
    side, the campaign tells.

    >>> t0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
    >>> sent = ContactRecord(profile_id="p", decision_id="d1", channel="email", sent_at=t0,
    ...                      kind="transactional", campaign="order_shipped",
    ...                      message_key=message_key("order-7/shipped"))
    >>> hour, day = timedelta(hours=1), timedelta(hours=24)
    >>> check_other_channel([sent], "push", "order_shipped", t0 + hour, day)
    'duplicate_message'
    >>> check_other_channel([sent], "push", "order_shipped", t0 + hour, day, "order-8/shipped")
    """
    key = message_key(message_id)
    if campaign is None:
        return None
    for record in history:
        if key is not None and record.message_key is not None:
            continue  # both have ids: different ids, different messages
        if (record.kind == "transactional" and record.campaign == campaign
                and record.channel != channel and abs(record.sent_at - at) < window):  # fmt: skip
            return "duplicate_message"
    return None


def widen_quiet_hours(policies: Policies, minutes: int) -> Policies:
    """Return ``policies`` with the quiet hours widened by ``minutes`` on both sides.

    For sends decided ahead of time from a UTC offset that may be stale (a daylight-saving
    change since the customer's last event): a margin of an hour keeps them out of the
    quiet hours of the customer's real clock.

    >>> widen_quiet_hours(load_policies(), 60).contact.quiet_hours
    QuietHours(start='20:00', end='09:00')

    Raises ``PolicyError`` if the wider quiet hours would cover the whole day.
    """
    if minutes <= 0:
        return policies
    quiet = policies.contact.quiet_hours
    if quiet.start == quiet.end:
        return policies

    def at(clock: str) -> int:
        hours, mins = map(int, clock.split(":"))
        return hours * 60 + mins

    def shift(clock: str, delta: int) -> str:
        total = (at(clock) + delta) % (24 * 60)
        return f"{total // 60:02d}:{total % 60:02d}"

    length = (at(quiet.end) - at(quiet.start)) % (24 * 60)
    if length + 2 * minutes >= 24 * 60:
        message = (f"contact.quiet_hours {quiet.start}-{quiet.end} widened by {minutes} min on "
                   "each side (the daylight-saving margin, quiet_margin_min) cover the whole "
                   "day: shorten them or lower the margin")  # fmt: skip
        raise PolicyError(message)

    wider = QuietHours(shift(quiet.start, -minutes), shift(quiet.end, minutes))
    contact = msgspec.structs.replace(policies.contact, quiet_hours=wider)
    return msgspec.structs.replace(policies, contact=contact)


def local_zone(tz_offset_min: int) -> timezone:
    """Return the fixed-offset zone of a customer (minutes east of UTC)."""
    return timezone(timedelta(minutes=tz_offset_min))


def in_quiet_hours(at: datetime, tz_offset_min: int, quiet: QuietHours) -> bool:
    """Return whether ``at`` falls in the quiet hours of the customer's local time."""
    return quiet.contains(at.astimezone(local_zone(tz_offset_min)).time())


def after_quiet_hours(at: datetime, tz_offset_min: int, quiet: QuietHours) -> datetime:
    """Return ``at`` if it is outside the quiet hours, else the next local end of them (UTC).

    >>> late = datetime(2026, 3, 2, 22, 30, tzinfo=UTC)
    >>> after_quiet_hours(late, 60, QuietHours("21:00", "08:00")).isoformat()
    '2026-03-03T07:00:00+00:00'
    """
    if not in_quiet_hours(at, tz_offset_min, quiet):
        return at.astimezone(UTC)
    local = at.astimezone(local_zone(tz_offset_min))
    end = time.fromisoformat(quiet.end)
    candidate = local.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
    if candidate <= local:
        candidate += DAY
    return candidate.astimezone(UTC)


def send_time(
    now: datetime,
    *,
    facts: ContactFacts,
    quiet: QuietHours | None,
    max_wait: timedelta,
) -> datetime:
    """Return when to send: outside quiet hours, at the active hour if that is soon enough.

    ``quiet`` is ``None`` when quiet hours do not apply (a channel exempt from them, or an
    immediate transactional message). The earliest allowed time is ``now`` or the end of the
    quiet hours; the message then waits for the customer's next active hour (local) if that
    comes within ``max_wait`` of ``now`` and is not itself inside the quiet hours.

    >>> now = datetime(2026, 3, 2, 12, tzinfo=UTC)
    >>> facts = ContactFacts(tz_offset_min=60, active_hour=18)
    >>> send_time(now, facts=facts, quiet=QuietHours(), max_wait=timedelta(hours=6)).hour
    17
    """
    zone_min = facts.tz_offset_min
    earliest = after_quiet_hours(now, zone_min, quiet) if quiet else now.astimezone(UTC)
    if facts.active_hour is None or max_wait <= timedelta(0):
        return earliest
    local = earliest.astimezone(local_zone(zone_min))
    if local.hour == facts.active_hour:
        return earliest
    target = local.replace(hour=facts.active_hour, minute=0, second=0, microsecond=0)
    if target < local:
        target += DAY
    if quiet is not None and quiet.contains(target.time()):
        return earliest
    if target - now > max_wait:
        return earliest
    return target.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One channel's answer: suppressed by ``rule``, or allowed to send at ``send_at``."""

    channel: str
    rule: str | None
    send_at: datetime | None

    @property
    def allowed(self) -> bool:
        """Whether the message may go out on this channel."""
        return self.rule is None


@dataclass(frozen=True, slots=True)
class Message:
    """The message the rules judge: campaign, offer, kind, urgency and the sender's id of it."""

    campaign: str | None
    offer_id: str | None
    kind: MessageKind
    urgency: Urgency = "normal"
    message_id: str | None = None


def check_contact(
    message: Message,
    channel: str,
    *,
    facts: ContactFacts,
    history: Sequence[ContactRecord],
    now: datetime,
    policy: ContactPolicy,
    quiet_hours_apply: bool = True,
    opt_in_required: bool = False,
) -> Verdict:
    """Apply every rule to one channel, in a fixed order, and schedule the send.

    Order: offer suppression (marketing), consent, send time (quiet hours, active hour),
    duplicate message (transactional: in another channel only), caps at the send time
    (marketing). The first rule that suppresses names the verdict.
    """
    if message.kind == "marketing" and (rule := check_offer(message.offer_id, facts)):
        return Verdict(channel, rule, None)
    rule = check_consent(
        facts, channel, message.kind, policy.unknown_consent, opt_in_required=opt_in_required
    )
    if rule:
        return Verdict(channel, rule, None)
    urgency = policy.urgency_rule(message.urgency)
    exempt = message.kind == "transactional" and urgency.skip_quiet_hours
    quiet = policy.quiet_hours if quiet_hours_apply and not exempt else None
    at = send_time(now, facts=facts, quiet=quiet, max_wait=timedelta(hours=urgency.max_wait_hours))
    if rule := check_log(history, channel, message, at, policy):
        return Verdict(channel, rule, None)
    return Verdict(channel, None, at)
