"""Contact-policy rules, one by one, and the policies file's validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.policy import (
    DAY,
    WEEK,
    Cap,
    Caps,
    ContactFacts,
    ContactPolicy,
    Message,
    PolicyError,
    QuietHours,
    UnknownConsent,
    check_caps,
    check_consent,
    check_contact,
    check_duplicate,
    check_log,
    check_offer,
    check_offer_ids,
    contact_facts,
    fits_cap,
    in_quiet_hours,
    load_policies,
    message_key,
    parse_policies,
    send_time,
)
from features.store import ContactRecord

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
POLICIES = load_policies()
CONTACT = POLICIES.contact
CHANNELS = ("email", "push", "sms", "messenger")
ALL_IN = ContactFacts(consent=dict.fromkeys(CHANNELS, True))


def contact(at: datetime, channel: str = "email", kind: str = "marketing", **kw) -> ContactRecord:
    n = kw.pop("n", at.isoformat() + channel)
    return ContactRecord(
        profile_id="customer_id:c-1", decision_id=str(n), channel=channel, sent_at=at, kind=kind,
        **kw,
    )  # fmt: skip


# --- consent --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["marketing", "transactional"])
def test_an_opt_out_suppresses_every_kind_of_message(kind):
    facts = ContactFacts(consent={"sms": False})
    assert check_consent(facts, "sms", kind, UnknownConsent()) == "consent_opt_out"


def test_unknown_consent_follows_the_policy_per_kind():
    facts = ContactFacts()
    deny_marketing = UnknownConsent(marketing="deny", transactional="allow")
    assert check_consent(facts, "push", "marketing", deny_marketing) == "consent_missing"
    assert check_consent(facts, "push", "transactional", deny_marketing) is None
    deny_all = UnknownConsent(marketing="deny", transactional="deny")
    assert check_consent(facts, "push", "transactional", deny_all) == "consent_missing"


def test_contact_facts_read_consent_and_time_zone_from_profile_features():
    facts = contact_facts(
        {"consent_email": True, "consent_sms": False, "consent_push": None, "tz_offset_min": 120,
         "active_hour": 19, "offers_redeemed": ["of-1"], "offers_dismissed": ["of-2"]}
    )  # fmt: skip
    assert facts.consent == {"email": True, "sms": False}
    assert (facts.tz_offset_min, facts.active_hour) == (120, 19)
    assert check_offer("of-1", facts) == "offer_redeemed"
    assert check_offer("of-2", facts) == "offer_dismissed"
    assert check_offer("of-3", facts) is None
    assert contact_facts(None) == ContactFacts()


@given(
    consent=st.fixed_dictionaries({c: st.sampled_from([True, False, None]) for c in CHANNELS}),
    kind=st.sampled_from(["marketing", "transactional"]),
    minutes=st.integers(0, 7 * 24 * 60),
)
@settings(max_examples=150, deadline=None)
def test_an_opted_out_channel_is_never_allowed(consent, kind, minutes):
    facts = ContactFacts(consent={c: v for c, v in consent.items() if v is not None})
    now = T0 + timedelta(minutes=minutes)
    message = Message("camp", None, kind)
    for channel in CHANNELS:
        verdict = check_contact(
            message, channel, facts=facts, history=[], now=now, policy=CONTACT
        )
        if consent[channel] is False:
            assert verdict.rule == "consent_opt_out"
            assert verdict.send_at is None


# --- caps -----------------------------------------------------------------------------------


def test_fits_cap_uses_rolling_windows():
    assert fits_cap([], T0, DAY, 1)
    assert not fits_cap([T0], T0 + timedelta(hours=23, minutes=59), DAY, 1)
    assert fits_cap([T0], T0 + DAY, DAY, 1)
    # A planned future send counts as well: a window ahead of `at` is checked too.
    assert not fits_cap([T0 + timedelta(hours=5)], T0, DAY, 1)
    assert not fits_cap([T0], T0, DAY, 0)
    # Two in 24 h with cap 2: a third is refused anywhere in between and up to 24 h after.
    assert not fits_cap([T0, T0 + timedelta(hours=10)], T0 + timedelta(hours=20), DAY, 2)
    assert fits_cap([T0, T0 + timedelta(hours=10)], T0 + timedelta(hours=24), DAY, 2)


def test_each_cap_names_its_rule():
    caps = Caps(per_channel={"email": Cap(day=1, week=2)}, all_channels=Cap(day=2, week=3))
    day_ago = T0 - timedelta(hours=30)
    assert check_caps([contact(T0 - timedelta(hours=2))], "email", T0, "marketing", caps) == (
        "channel_cap_day"
    )
    two = [contact(day_ago), contact(day_ago - DAY)]
    assert check_caps(two, "email", T0, "marketing", caps) == "channel_cap_week"
    mixed = [contact(T0 - timedelta(hours=1), "push"), contact(T0 - timedelta(hours=2), "sms")]
    assert check_caps(mixed, "email", T0, "marketing", caps) == "total_cap_day"
    spread = [contact(T0 - timedelta(days=d), c) for d, c in ((2, "push"), (3, "sms"), (4, "push"))]
    assert check_caps(spread, "email", T0, "marketing", caps) == "total_cap_week"
    assert check_caps(spread[:1], "email", T0, "marketing", caps) is None


def test_transactional_messages_ignore_caps_and_do_not_count_against_them():
    caps = Caps(per_channel={"email": Cap(day=1)}, all_channels=Cap(day=1))
    history = [contact(T0 - timedelta(hours=1), "email", "marketing")]
    assert check_caps(history, "email", T0, "transactional", caps) is None
    transactional = [contact(T0 - timedelta(hours=h), "email", "transactional") for h in (1, 2, 3)]
    assert check_caps(transactional, "email", T0, "marketing", caps) is None


def test_transactional_ignores_caps_but_never_consent():
    full = [contact(T0 - timedelta(hours=h), c) for h, c in ((1, "email"), (2, "push"))]
    message = Message("receipt", None, "transactional", "high")
    verdict = check_contact(message, "email", facts=ALL_IN, history=full, now=T0, policy=CONTACT)
    assert verdict.allowed
    opted_out = ContactFacts(consent={"email": False})
    verdict = check_contact(message, "email", facts=opted_out, history=[], now=T0, policy=CONTACT)
    assert verdict.rule == "consent_opt_out"


TICK = timedelta(microseconds=1)


def _fullest_window_with(times: list[datetime], at: datetime, window: timedelta) -> int:
    """Brute force: the most contacts in any window [s, s + window) that contains ``at``."""
    starts = {at - window + TICK, at}
    for t in times:
        starts.update({t, t + TICK, t - window + TICK})
    return max(
        sum(1 for t in times if s <= t < s + window)
        for s in starts
        if at - window < s <= at
    )


@given(
    history=st.lists(
        st.tuples(st.integers(-14 * 24, 14 * 24), st.sampled_from(CHANNELS)), max_size=12
    ),
    requests=st.lists(
        st.tuples(st.integers(0, 10 * 24 * 60), st.sampled_from(CHANNELS)),
        min_size=1,
        max_size=40,
    ),
)
@settings(max_examples=200, deadline=None)
def test_caps_are_never_exceeded_over_random_histories(history, requests):
    caps = CONTACT.caps
    log = [contact(T0 + timedelta(hours=h), c, n=f"h{i}") for i, (h, c) in enumerate(history)]
    accepted = []
    for i, (minute, channel) in enumerate(requests):  # in arrival order, not time order
        at = T0 + timedelta(minutes=minute)
        if check_caps(log, channel, at, "marketing", caps) is None:
            record = contact(at, channel, n=f"r{i}")
            log.append(record)
            accepted.append(record)
    # Every window holding an accepted contact respects every cap, counting the history too
    # (the history alone may break them; nothing may be added to such a window).
    for record in accepted:
        own = [c.sent_at for c in log if c.channel == record.channel]
        every = [c.sent_at for c in log]
        cap = caps.per_channel[record.channel]
        assert _fullest_window_with(own, record.sent_at, DAY) <= cap.day
        assert _fullest_window_with(own, record.sent_at, WEEK) <= cap.week
        assert _fullest_window_with(every, record.sent_at, DAY) <= caps.all_channels.day
        assert _fullest_window_with(every, record.sent_at, WEEK) <= caps.all_channels.week
    if not history:  # something is accepted: the rule does not just refuse everything
        assert accepted


# --- duplicates and offer suppression ----------------------------------------------------------


def test_the_same_campaign_or_offer_is_not_sent_twice_within_the_window():
    window = timedelta(hours=72)
    sent = [contact(T0 - timedelta(hours=10), "push", campaign="spring", offer_id="of-1")]
    assert check_duplicate(sent, "spring", None, T0, window) == "duplicate_message"
    assert check_duplicate(sent, "other", "of-1", T0, window) == "duplicate_message"
    assert check_duplicate(sent, "other", "of-2", T0, window) is None
    assert check_duplicate(sent, "spring", None, T0 + timedelta(hours=63), window) is None


def test_a_message_already_sent_on_one_channel_is_suppressed_on_every_other():
    sent = [contact(T0 - timedelta(hours=3), "push", campaign="spring")]
    message = Message("spring", None, "marketing")
    for channel in ("email", "sms", "messenger", "push"):
        verdict = check_contact(
            message, channel, facts=ALL_IN, history=sent, now=T0, policy=CONTACT
        )
        assert verdict.rule == "duplicate_message"


def test_redeemed_or_dismissed_offers_are_suppressed_for_marketing_only():
    facts = ContactFacts(consent=dict.fromkeys(CHANNELS, True), redeemed=frozenset({"of-1"}))
    marketing = Message("c", "of-1", "marketing")
    verdict = check_contact(marketing, "email", facts=facts, history=[], now=T0, policy=CONTACT)
    assert verdict.rule == "offer_redeemed"
    receipt = Message("c", "of-1", "transactional")
    verdict = check_contact(receipt, "email", facts=facts, history=[], now=T0, policy=CONTACT)
    assert verdict.allowed


# --- quiet hours ----------------------------------------------------------------------------


@given(
    offset=st.integers(-12 * 60, 14 * 60).map(lambda m: m - m % 15),
    minute=st.integers(0, 7 * 24 * 60),
    active=st.one_of(st.none(), st.integers(0, 23)),
    urgency=st.sampled_from(["immediate", "high", "normal", "low"]),
    kind=st.sampled_from(["marketing", "transactional"]),
)
@settings(max_examples=300, deadline=None)
def test_quiet_hours_are_respected_in_every_time_zone(offset, minute, active, urgency, kind):
    facts = ContactFacts(
        consent=dict.fromkeys(CHANNELS, True), tz_offset_min=offset, active_hour=active
    )
    now = T0 + timedelta(minutes=minute)
    message = Message(f"c{minute}", None, kind, urgency)
    verdict = check_contact(message, "push", facts=facts, history=[], now=now, policy=CONTACT)
    assert verdict.send_at is not None
    assert verdict.send_at >= now
    wait = CONTACT.urgency_rule(urgency).max_wait_hours
    exempt = kind == "transactional" and CONTACT.urgency_rule(urgency).skip_quiet_hours
    if exempt:
        assert verdict.send_at == now
        return
    assert not in_quiet_hours(verdict.send_at, offset, CONTACT.quiet_hours)
    # Never later than the end of the quiet hours plus the allowed wait (11 h of quiet max).
    assert verdict.send_at - now <= timedelta(hours=11 + wait)


def test_a_send_inside_quiet_hours_is_deferred_to_their_local_end():
    quiet = QuietHours("21:00", "08:00")
    tokyo = ContactFacts(tz_offset_min=540)  # 23:00 in Tokyo is 14:00 UTC
    late = datetime(2026, 3, 2, 14, tzinfo=UTC)
    at = send_time(late, facts=tokyo, quiet=quiet, max_wait=timedelta(0))
    assert at == datetime(2026, 3, 2, 23, tzinfo=UTC)  # 08:00 in Tokyo
    new_york = ContactFacts(tz_offset_min=-300)  # 14:00 UTC is 09:00 in New York: awake
    assert send_time(late, facts=new_york, quiet=quiet, max_wait=timedelta(0)) == late


def test_a_deferred_send_waits_for_the_active_hour_when_urgency_allows():
    quiet = QuietHours("21:00", "08:00")
    facts = ContactFacts(tz_offset_min=60, active_hour=18)
    noon = datetime(2026, 3, 2, 11, tzinfo=UTC)  # 12:00 local
    assert send_time(noon, facts=facts, quiet=quiet, max_wait=timedelta(hours=6)) == (
        datetime(2026, 3, 2, 17, tzinfo=UTC)  # 18:00 local
    )
    # Too far for the urgency: send now.
    assert send_time(noon, facts=facts, quiet=quiet, max_wait=timedelta(hours=2)) == noon
    # An active hour inside the quiet hours is never waited for.
    owl = ContactFacts(tz_offset_min=60, active_hour=23)
    assert send_time(noon, facts=owl, quiet=quiet, max_wait=timedelta(hours=24)) == noon


def test_channels_exempt_from_quiet_hours_send_at_night():
    facts = ContactFacts(consent={"email": True}, tz_offset_min=0)
    night = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)
    message = Message("c", None, "marketing", "high")
    exempt = check_contact(
        message, "email", facts=facts, history=[], now=night, policy=CONTACT,
        quiet_hours_apply=False,
    )  # fmt: skip
    assert exempt.send_at == night
    quiet = check_contact(message, "email", facts=facts, history=[], now=night, policy=CONTACT)
    assert quiet.send_at == datetime(2026, 3, 3, 8, tzinfo=UTC)


# --- the policies file ----------------------------------------------------------------------


def test_the_shipped_policies_file_is_valid_and_complete():
    assert POLICIES.contact.caps.per_channel["sms"].week == 1
    assert set(POLICIES.contact.urgency) == {"immediate", "high", "normal", "low"}
    assert POLICIES.offer_lever("of-spring-produce", "discount") == pytest.approx(1.3)
    assert POLICIES.offer_value("of-x", "discount", 1.2) == pytest.approx(4.8)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"contact": {"caps": {"all_channels": {"day": -1}}}},
         "entry 'contact.caps.all_channels', field 'day': Expected `int` >= 0; got -1"),
        ({"contact": {"caps": {"per_channel": {"fax": {"day": 1}}}}},
         "entry 'contact.caps.per_channel', field 'fax': not a valid key"),
        ({"levers": {"offers": {"of-1": "high"}}},
         "entry 'levers.offers', field 'of-1': Expected `float`, got `str`; got 'high'"),
        ({"contact": {"quiet_hours": {"start": "25:00"}}},
         "entry 'contact.quiet_hours', field 'start': expected a local time 'HH:MM'; got '25:00'"),
        ({"contact": {"capz": {}}}, "entry 'contact', field 'capz': unknown field"),
        ([1, 2], "expected a mapping; got list"),
        ({"contact": {"urgency": {"high": {}}}},
         "entry 'contact.urgency', field 'immediate': every urgency level needs a rule"),
        ({"levers": {"offers": {"of-1": float("inf")}}},
         "entry 'levers.offers', field 'of-1': Expected `float` <= 1000000000.0; got inf"),
        ({"contact": {"default_timezone": "Mars/Olympus"}},
         "entry 'contact', field 'default_timezone': unknown time zone 'Mars/Olympus'"),
    ],
)  # fmt: skip
def test_invalid_policies_name_the_file_the_entry_and_the_field(document, expected):
    with pytest.raises(PolicyError) as error:
        parse_policies(document, "policies.yaml")
    assert str(error.value).startswith("policies.yaml: ")
    assert expected in str(error.value)


def test_unreadable_policy_files_name_the_file(tmp_path):
    with pytest.raises(PolicyError, match="cannot read the policies file"):
        load_policies(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("contact: [unclosed")
    with pytest.raises(PolicyError, match=r"broken\.yaml: cannot be parsed"):
        load_policies(broken)


def test_levers_for_unknown_offers_are_rejected():
    policies = parse_policies(
        {**_urgency(), "levers": {"offers": {"of-nope": 2.0}}}, "policies.yaml"
    )
    expected = r"entry 'levers\.offers', field 'of-nope': unknown offer"
    with pytest.raises(PolicyError, match=expected):
        check_offer_ids(policies, {"of-1"}, "policies.yaml")


def _urgency() -> dict:
    return {"contact": {"urgency": {u: {} for u in ("immediate", "high", "normal", "low")}}}


def test_contact_policy_defaults_are_safe():
    policy = ContactPolicy()
    assert policy.unknown_consent.marketing == "deny"
    assert policy.urgency_rule("normal").max_wait_hours == 0


def test_a_transactional_message_never_goes_out_in_a_second_channel():
    receipt = Message("order_shipped", None, "transactional")
    sent = [contact(T0, "email", kind="transactional", campaign="order_shipped")]
    later = T0 + timedelta(hours=1)

    def rule(channel, history=sent, message=receipt):
        return check_log(history, channel, message, later, CONTACT)

    assert {c: rule(c) for c in CHANNELS} == {
        "email": None, "push": "duplicate_message", "sms": "duplicate_message",
        "messenger": "duplicate_message",
    }  # fmt: skip
    # Other campaigns, marketing sends of the same campaign, and sends outside the window
    # do not count; caps still never apply to transactional messages.
    assert rule("sms", [contact(T0, "email", kind="transactional", campaign="receipt")]) is None
    assert rule("sms", [contact(T0, "email", campaign="order_shipped")]) is None
    outside = T0 - timedelta(hours=CONTACT.duplicate_window_hours + 1)
    assert rule("sms", [contact(outside, "email", kind="transactional",
                                campaign="order_shipped")]) is None  # fmt: skip


def test_the_update_of_another_order_may_go_out_in_another_channel():
    shipped = contact(T0, "email", kind="transactional", campaign="order_shipped",
                      message_key=message_key("order-7/shipped"))  # fmt: skip
    later = T0 + timedelta(hours=1)

    def rule(channel, message_id):
        message = Message("order_shipped", None, "transactional", message_id=message_id)
        return check_log([shipped], channel, message, later, CONTACT)

    assert rule("push", "order-8/shipped") is None  # another order: another message
    assert rule("push", "order-7/shipped") == "duplicate_message"  # the same one again
    assert rule("email", "order-7/shipped") == "duplicate_message"  # a retry, same channel
    assert rule("push", None) == "duplicate_message"  # no id: the campaign tells
