import math
from collections import defaultdict
from datetime import timedelta

from features.decisions import decode_decision
from features.events import Engagement, Purchase
from features.topics import DECISIONS
from simulator.policy import LOGGING_POLICY
from tests.simulator.helpers import owner_of


def decisions(simulated):
    return [decode_decision(line) for line in simulated.lines(DECISIONS)]


def test_propensities_are_positive_and_sum_to_one(simulated):
    found = decisions(simulated)
    assert {d.surface for d in found} == {"channel", "offers"}
    for d in found:
        assert d.policy == LOGGING_POLICY
        assert len(d.chosen) == 1 and d.candidates
        assert all(0 < c.propensity <= 1 for c in d.candidates)
        assert math.isclose(sum(c.propensity for c in d.candidates), 1.0, abs_tol=1e-9)
        chosen = d.chosen[0]
        same = [
            c for c in d.candidates if (c.offer_id, c.channel) == (chosen.offer_id, chosen.channel)
        ]
        assert len(same) == 1 and same[0].propensity == chosen.propensity


def test_message_decisions_use_consented_channels_and_carry_send_time(simulated, truth):
    for d in decisions(simulated):
        if d.surface != "channel":
            continue
        consent = truth[d.ids.customer_id]["consent"]
        assert all(consent[c.channel] for c in d.candidates)
        assert d.context.campaign and d.chosen[0].send_at == d.decided_at


def test_outcomes_join_back_to_their_decisions(simulated, events):
    logged = {d.decision_id: d for d in decisions(simulated)}
    actions: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if isinstance(e, Engagement) and e.decision_id:
            d = logged[e.decision_id]
            assert e.offer_id == d.chosen[0].offer_id and e.channel == d.chosen[0].channel
            assert e.event_time >= d.decided_at
            assert (e.event_time - d.decided_at).days < 7
            actions[e.decision_id].add(e.action)
    for found in actions.values():
        if "converted" in found and found & {"delivered"}:
            assert "opened" in found  # a redeemed message was opened first


def test_every_redemption_comes_with_a_purchase_using_the_offer(simulated, events, owners):
    end = simulated.config.start + timedelta(days=simulated.config.days)
    purchases = defaultdict(list)
    for e in events:
        if isinstance(e, Purchase):
            purchases[owner_of(e, owners)].append(e)
    converted = [e for e in events if isinstance(e, Engagement) and e.action == "converted"]
    assert converted
    for e in converted:
        window = (e.event_time, e.event_time + timedelta(minutes=20))
        if window[1] >= end:
            continue
        assert any(
            e.offer_id in p.offers_redeemed and window[0] <= p.event_time <= window[1]
            for p in purchases[owner_of(e, owners)]
        ), e


def test_conversion_rates_are_realistic(events):
    counts: dict[str, int] = defaultdict(int)
    for e in events:
        if isinstance(e, Engagement) and e.channel in ("email", "push", "sms", "messenger"):
            counts[e.action] += 1
    rate = counts["converted"] / counts["delivered"]
    assert 0.005 < rate < 0.1, counts
    assert counts["opened"] > counts["clicked"] > counts["converted"] > 0
