"""The heuristic scorer's documented formula and reasons in words."""

from __future__ import annotations

import math

import pytest

from features.catalog import load_catalog
from features.scoring import Candidate, HeuristicScorer, ScoreContext, Scorer
from serving.reasons import reasons

CATALOG = load_catalog()
OFFERS_CTX = ScoreContext(surface="offers", channel="web")


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_the_heuristic_is_a_scorer():
    assert isinstance(HeuristicScorer(), Scorer)
    assert HeuristicScorer().version == "heuristic-v1"


def test_offer_formula_matches_the_documentation():
    offer = CATALOG.offers["of-disc-dairy"]
    features = {"category_affinity": {"dairy": 0.4}, "persona_discount_hunter": 0.5}
    [scored] = HeuristicScorer().score(features, [Candidate.of(offer)], OFFERS_CTX)
    z = -2.5 + 0.6 + 3 * 0.4 + 1.5 * 0.5 * 1.0
    assert scored.probability == pytest.approx(sigmoid(z))
    assert dict(scored.contributions) == pytest.approx(
        {"prior:discount": 0.6, "affinity:dairy": 1.2, "persona:discount_hunter": 0.75}
    )


def test_affinity_raises_the_matching_offer_above_the_others():
    dairy, pet = CATALOG.offers["of-disc-dairy"], CATALOG.offers["of-disc-pet"]
    features = {"category_affinity": {"pet": 0.9}}
    a, b = HeuristicScorer().score(features, [Candidate.of(dairy), Candidate.of(pet)], OFFERS_CTX)
    assert b.probability > a.probability


def test_a_channel_specific_offer_fits_its_channel():
    app = CATALOG.offers["of-pts-app-install"]
    [on_app] = HeuristicScorer().score(None, [Candidate.of(app)], ScoreContext("offers", "app"))
    [on_web] = HeuristicScorer().score(None, [Candidate.of(app)], OFFERS_CTX)
    assert on_app.probability > on_web.probability
    assert ("channel_fit:app", 0.5) in on_app.contributions


def test_channel_score_is_the_open_rate_with_a_social_boost():
    features = {"open_rate_email": 0.6, "open_rate_push": 0.4, "persona_social": 0.5}
    ctx = ScoreContext(surface="channel")
    email, push, sms = HeuristicScorer().score(
        features, [Candidate.via("email"), Candidate.via("push"), Candidate.via("sms")], ctx
    )
    assert email.probability == pytest.approx(0.6)
    assert push.probability == pytest.approx(0.4 * (1 + 0.5 * 0.5))
    assert sms.probability == pytest.approx(0.5)  # never tried: the smoothed prior


def test_reasons_are_the_top_positive_contributions_in_words():
    words = reasons([("prior:discount", 0.6), ("affinity:dairy", 1.2), ("x", -3.0),
                     ("persona:newcomer", 0.1), ("channel_fit:app", 0.5)])  # fmt: skip
    assert words == ["buys and browses dairy", "popular: discount offers", "made for the app"]
    model_words = reasons([("category_affinity_pet", 0.3), ("persona_discount_hunter", 0.2)])
    assert model_words == ["buys and browses pet", "likes a deal"]
