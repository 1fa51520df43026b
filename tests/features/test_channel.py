"""Channel choice as a pure function: consent, campaign restrictions, the model's own choice."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.arbitration import EpsilonGreedy, Thompson
from features.catalog import load_catalog
from features.channel import decide_channel
from features.policy import ContactFacts, Message, contact_facts, in_quiet_hours, load_policies
from features.scoring import HeuristicScorer, ScoreContext
from features.store import ContactRecord

CATALOG = load_catalog()
POLICIES = load_policies()
CHANNELS = ("email", "messenger", "push", "sms")
GREEDY = EpsilonGreedy(0.0)
NOW = datetime(2026, 3, 8, 12, tzinfo=UTC)


def decide(features, *, allowed=None, history=(), kind="marketing", exploration=GREEDY, seed=0,
           campaign="spring", offer_id=None, urgency="normal", now=NOW,
           offer_valid_at=None):  # fmt: skip
    return decide_channel(
        Message(campaign, offer_id, kind, urgency),
        channels=CATALOG.channels,
        allowed=allowed,
        features=features,
        facts=contact_facts(features),
        history=list(history),
        now=now,
        policies=POLICIES,
        scorer=HeuristicScorer(),
        score_context=ScoreContext(surface="channel"),
        exploration=exploration,
        rng=random.Random(seed),
        offer_valid_at=offer_valid_at,
    )


def profile(consent: dict, **rates) -> dict:
    features = {f"consent_{c}": v for c, v in consent.items()}
    features.update({f"open_rate_{c}": r for c, r in rates.items()})
    return features


@given(
    consent=st.fixed_dictionaries({c: st.sampled_from([True, False, None]) for c in CHANNELS}),
    rates=st.fixed_dictionaries({c: st.floats(0.01, 0.99) for c in CHANNELS}),
    kind=st.sampled_from(["marketing", "transactional"]),
    exploration=st.sampled_from([GREEDY, EpsilonGreedy(0.5), EpsilonGreedy(1.0),
                                 Thompson(strength=5, draws=20)]),
    seed=st.integers(0, 1000),
    allowed=st.one_of(st.none(), st.lists(st.sampled_from(CHANNELS), min_size=1, unique=True)),
)
@settings(max_examples=300, deadline=None)
def test_an_opted_out_channel_is_never_chosen(consent, rates, kind, exploration, seed, allowed):
    outcome = decide(profile(consent, **rates), kind=kind, exploration=exploration, seed=seed,
                     allowed=allowed)  # fmt: skip
    chosen = outcome.chosen
    if chosen is None:
        assert outcome.suppressed_by
        return
    assert consent[chosen.channel] is not False
    if kind == "marketing":
        assert consent[chosen.channel] is True  # unknown consent is denied for marketing
    if allowed is not None:
        assert chosen.channel in allowed
    assert sum(outcome.first_slot.values()) == pytest.approx(1.0)


def test_the_best_reader_channel_wins_and_the_model_choice_agrees():
    features = profile(dict.fromkeys(CHANNELS, True), email=0.2, push=0.9, sms=0.3, messenger=0.4)
    outcome = decide(features)
    assert outcome.chosen.channel == "push"
    assert outcome.options[outcome.model_choice].channel == "push"


def test_allowed_channels_override_the_model_and_say_so():
    features = profile(dict.fromkeys(CHANNELS, True), email=0.2, push=0.9, sms=0.3, messenger=0.4)
    outcome = decide(features, allowed=["email", "sms"])
    assert outcome.chosen.channel == "email"
    model = outcome.options[outcome.model_choice]
    assert model.channel == "push" and not model.allowed
    forced = decide(features, allowed=["sms"])
    assert forced.chosen.channel == "sms"


def test_nothing_left_names_the_rule():
    features = profile({"email": False, "push": False, "sms": False, "messenger": False})
    outcome = decide(features)
    assert outcome.chosen is None and outcome.suppressed_by == "consent_opt_out"
    consented = profile(dict.fromkeys(CHANNELS, True))
    sent = ContactRecord(profile_id="p", decision_id="d", channel="push", kind="marketing",
                         sent_at=NOW - timedelta(hours=1), campaign="spring")  # fmt: skip
    duplicate = decide(consented, history=[sent])
    assert duplicate.chosen is None and duplicate.suppressed_by == "duplicate_message"
    restricted = decide(profile({"email": True}), allowed=["sms"])
    assert restricted.chosen is None and restricted.suppressed_by == "consent_missing"


def test_unknown_customers_get_transactional_messages_but_no_marketing():
    assert decide(None, kind="marketing").chosen is None
    assert decide(None, kind="transactional").chosen is not None


@given(offset=st.integers(-11, 13).map(lambda h: h * 60), hour=st.integers(0, 23))
@settings(max_examples=100, deadline=None)
def test_the_chosen_send_time_is_outside_quiet_hours(offset, hour):
    features = profile(dict.fromkeys(CHANNELS, True), push=0.9)
    features["tz_offset_min"] = offset
    now = NOW.replace(hour=hour)
    outcome = decide(features, now=now, allowed=["push"])
    send_at = outcome.chosen.verdict.send_at
    assert not in_quiet_hours(send_at, offset, POLICIES.contact.quiet_hours)
    assert send_at >= now


def test_contact_facts_of_unknown_customers_are_empty():
    assert contact_facts(None) == ContactFacts()


def test_a_marketing_message_goes_out_only_while_its_offer_is_valid():
    features = profile(dict.fromkeys(CHANNELS, True), push=0.9, sms=0.5)
    features["tz_offset_min"] = 0
    evening = NOW.replace(hour=21, minute=30)  # quiet hours: push and sms wait until 08:00
    midnight = NOW.replace(hour=23, minute=59, second=59)
    ends_tonight = lambda at: at <= midnight  # noqa: E731
    deferred = decide(features, now=evening, allowed=["push", "sms"], offer_valid_at=ends_tonight)
    assert deferred.chosen is None and deferred.suppressed_by == "offer_not_valid"
    # The same message while the offer runs goes out; a transactional one is not promoting.
    assert decide(features, allowed=["push"], offer_valid_at=ends_tonight).chosen is not None
    receipt = decide(features, now=evening, allowed=["push"], kind="transactional",
                     offer_valid_at=ends_tonight)  # fmt: skip
    assert receipt.chosen is not None
    # An offer that starts by the deferred send time may be promoted for then.
    tomorrow = NOW.replace(hour=0) + timedelta(days=1)
    starts = decide(features, now=evening, allowed=["push"],
                    offer_valid_at=lambda at: at >= tomorrow)  # fmt: skip
    assert starts.chosen is not None and starts.chosen.verdict.send_at >= tomorrow
