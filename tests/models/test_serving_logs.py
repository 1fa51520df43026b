"""Training on what serving logs: empty slates, unsent messages, offers shown in a store."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from features.attribution import AttributionWindows, LabelledExample, Labels
from features.catalog import load_catalog
from features.decisions import Choice, Decision, DecisionContext
from features.events import Identifiers
from models.bundle import train_models
from models.dataset import TrainingSet, build_training_set
from models.evaluate import heldout_report
from models.rows import CustomerView, OfferTable
from models.train import TrainConfig

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
OFFERS = OfferTable.from_catalog(load_catalog())


def _decision(n: int, surface: str, chosen: list[Choice], context: str | None = None,
              **kw: object) -> Decision:  # fmt: skip
    return Decision(decision_id=f"d-{n:05d}", decided_at=T0 + timedelta(minutes=n),
                    surface=surface, policy="p", ids=Identifiers(customer_id=f"c-{n}"),
                    context=DecisionContext(channel=context), chosen=chosen,
                    **kw)  # type: ignore[arg-type]  # fmt: skip


def _shown(offer: str = "of-disc-dairy", channel: str = "web") -> list[Choice]:
    return [Choice(offer_id=offer, channel=channel, propensity=0.5)]  # type: ignore[arg-type]


def test_empty_slates_and_unsent_messages_are_not_examples_but_store_offers_are():
    decisions = [
        _decision(0, "offers", _shown(), "web"),
        _decision(1, "offers", [], "web", suppressed_by="no_eligible_offer"),
        _decision(2, "offers", _shown(channel="none"), "store"),  # shown at the till
        _decision(3, "channel", _shown(channel="email"), "messaging"),
        _decision(4, "channel", _shown(channel="none"), "messaging",
                  suppressed_by="frequency_cap"),  # never sent
    ]
    ts = build_training_set([], decisions, OFFERS, AttributionWindows(), complete_only=False)
    assert len(ts) == 5
    _, y, times = ts.nbo()
    kept = sorted(int(t) for t in times)
    assert kept == sorted(int(decisions[i].decided_at.timestamp()) for i in (0, 2, 3))
    assert len(y) == 3 and ts.nbo_mask().tolist() == [True, False, True, True, False]
    _, yc, _ = ts.channel()
    assert len(yc) == 1 and ts.channel_mask().tolist() == [False, False, False, True, False]


def test_the_heldout_report_names_an_offer_shown_in_a_store():
    rng = random.Random(0)
    examples = []
    for n in range(600):
        surface, channel, context = (("offers", "web", "web") if n % 2
                                     else ("channel", "email", "messaging"))  # fmt: skip
        if n >= 540 and surface == "offers":
            channel, context = "none", "store"  # the last ones, in the test slice
        happened = rng.random() < 0.3
        examples.append(LabelledExample(_decision(n, surface, _shown(channel=channel), context),
                                        Labels(converted=happened, opened=happened), True,
                                        0.5))  # fmt: skip
    ts = TrainingSet(examples, [CustomerView.empty()] * len(examples), OFFERS)
    report = heldout_report(train_models(ts, TrainConfig(min_data_in_leaf=5, max_rounds=20)), ts)
    assert "none" in report["nbo_by_channel"]


def test_an_offer_retired_from_the_catalog_since_is_left_out_not_a_crash():
    decisions = [
        _decision(0, "offers", _shown(), "web"),
        _decision(1, "offers", _shown(offer="of-retired-2025"), "web"),
    ]
    ts = build_training_set([], decisions, OFFERS, AttributionWindows(), complete_only=False)
    _, y, _ = ts.nbo()
    assert len(y) == 1 and ts.nbo_mask().tolist() == [True, False]
