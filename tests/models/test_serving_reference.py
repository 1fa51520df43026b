"""The fast decision path answers and logs byte for byte what the reference path does.

The reference is the decision path as it was before it was optimized, kept here in plain
form: rows one by one (``nbo_vector``), every probable candidate explained eagerly with
the Booster's own ``pred_contrib``, eligibility without the cache, Python sorting and
rounding. Both apps serve the same requests from copies of the same store, with the same
trained model, clock and decision ids; their HTTP bodies and decision logs must be equal.
"""

from __future__ import annotations

import itertools
import random
import shutil
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from features.arbitration import explore, first_slot_propensities, rank
from features.catalog import load_catalog
from features.decisions import Choice
from features.pipeline import recompute
from features.policy import check_offer
from features.scoring import Scored
from features.store import IdentityWrite, ProfileWrite, StoreBatch, open_store
from features.topics import DECISIONS
from models.adapter import EXPLAIN_TOP, RegistryScorer, _name
from models.bundle import register
from models.registry import Registry
from models.rows import ActionContext, CustomerView, OfferTable, channel_vector, nbo_vector
from models.scoring import BinaryScorer, Reason, load_version
from omnioffer.settings import Settings
from serving import engine as engine_module
from serving.app import create_app
from serving.offers import OffersOutcome, eligible_plans
from serving.reasons import codes
from serving.records import _CHOICE_CHANNEL, _record
from tests.serving.conftest import WORLD_NOW

# --- the reference path ------------------------------------------------------------------


def reference_explain(model: BinaryScorer, x: np.ndarray, top: int) -> list[tuple[Reason, ...]]:
    contrib = model.booster.predict(x, pred_contrib=True, num_threads=1)[:, :-1]
    names = model.feature_names
    return [
        tuple(Reason(names[j], "", float(row[j]))
              for j in np.argsort(-np.abs(row), kind="stable")[:top])
        for row in contrib
    ]  # fmt: skip


Rows = list[tuple[float, tuple[Reason, ...]]]


def reference_score_matrix(model: BinaryScorer, x: np.ndarray, top: int,
                           explain_top: int | None) -> Rows:  # fmt: skip
    p = model.predict_matrix(x)
    chosen = np.arange(len(x))
    if explain_top is not None:
        chosen = np.argsort(-p, kind="stable")[:explain_top]
    reasons = dict(zip(chosen.tolist(), reference_explain(model, x[chosen], top), strict=True))
    return [(float(p[i]), reasons.get(i, ())) for i in range(len(x))]


class ReferenceScorer:
    """The registry scorer computed the plain way: row by row, all probable ones explained."""

    def __init__(self, fast: RegistryScorer) -> None:
        self.fast = fast
        self.version = fast.version

    def score(self, features: Mapping[str, Any] | None, candidates: Sequence[Any],
              context: Any) -> list[Scored]:  # fmt: skip
        if not candidates:
            return []
        view = CustomerView.from_features(features)
        ctx = ActionContext(at=context.now, surface=context.surface, page=context.page,
                            store_id=context.store_id)  # fmt: skip
        offers = self.fast.offers
        if context.surface == "offers":
            sales = context.channel or "web"
            x = np.array([nbo_vector(view, offers, c.offer.id, sales, ctx) for c in candidates])
            scored = reference_score_matrix(self.fast.nbo, x, 3, EXPLAIN_TOP)
            keys = [(offers.offer(c.offer.id).category, sales) for c in candidates]
        else:
            x = np.array([channel_vector(view, c.channel, ctx) for c in candidates])
            scored = reference_score_matrix(self.fast.channel, x, 3, None)
            keys = [(None, c.channel) for c in candidates]
        return [
            Scored(p, tuple((_name(r, *key), r.contribution) for r in why))
            for (p, why), key in zip(scored, keys, strict=True)
        ]


def reference_decide_offers(plans, *, features, facts, context, score_context, scorer, policies,
                            limit, exploration, rng, cache=None,
                            spent=None) -> OffersOutcome:  # fmt: skip
    epsilon = exploration.epsilon  # the ε-greedy serving runs with by default
    spent = policies.budget_spent if spent is None else spent
    passing, excluded = eligible_plans(plans, context, spent)
    suppressed, eligible = [], []
    for plan in passing:
        if rule := check_offer(plan.candidate.action_id, facts):
            suppressed.append((plan.candidate.action_id, rule))
        else:
            eligible.append(plan)
    candidates = [p.candidate for p in eligible]
    scored = scorer.score(features, candidates, score_context) if candidates else []
    scores = [s.probability * p.worth for s, p in zip(scored, eligible, strict=True)]
    order = rank([c.action_id for c in candidates], scores)
    picks = explore(order, limit, epsilon, rng)
    first = dict(zip(order, first_slot_propensities(len(order), epsilon), strict=True))
    return OffersOutcome(candidates, scored, scores, order, picks, first, suppressed, excluded)


def reference_offers_decision(header, outcome: OffersOutcome, suppressed_by=None):
    channel = _CHOICE_CHANNEL.get(header.context.channel or "", "none")
    candidates = [
        Choice(c.action_id, channel, outcome.first_slot.get(i, 0.0), round(outcome.scores[i], 6))
        for i, c in enumerate(outcome.candidates)
    ]
    candidates += [
        Choice(offer_id=o, channel=channel, propensity=0.0, reasons=[f"suppressed_by:{rule}"])
        for o, rule in outcome.suppressed
    ]
    chosen = [
        Choice(offer_id=outcome.candidates[p.index].action_id, channel=channel,
               propensity=p.propensity, score=outcome.scores[p.index], position=n,
               reasons=codes(outcome.scored[p.index].contributions))
        for n, p in enumerate(outcome.picks)
    ]  # fmt: skip
    return _record(header, "offers", chosen, candidates, suppressed_by, dict(outcome.excluded))


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store_file(small_world_events, tmp_path_factory) -> Path:
    result = recompute(small_world_events)
    path = tmp_path_factory.mktemp("reference_store") / "online.sqlite3"
    profiles = [ProfileWrite(p, v) for p, v in result.profiles.items()]
    identity = [IdentityWrite(i, p) for i, p in result.identity.items()]
    with open_store("sqlite", sqlite_path=path) as store:
        store.write(StoreBatch(profiles=profiles, identity=identity))
    return path


@pytest.fixture(scope="module")
def model(bundle, catalog, tmp_path_factory) -> RegistryScorer:
    registry = Registry(tmp_path_factory.mktemp("reference_registry"))
    version = register(registry, bundle, {"nbo": {}, "channel": {}})
    _, nbo, channel = load_version(registry.root, version, reasons="shap")
    return RegistryScorer(version, nbo, channel, OfferTable.from_catalog(catalog))


def _client(store_file: Path, folder: Path, scorer: Any) -> TestClient:
    folder.mkdir(parents=True)
    shutil.copy(store_file, folder / "online.sqlite3")
    store = open_store("sqlite", sqlite_path=folder / "online.sqlite3")
    ids = itertools.count()
    app = create_app(Settings(data_dir=folder / "data"), store=store, scorer=scorer,
                     model_loader=lambda _t: scorer, clock=lambda: WORLD_NOW,
                     new_id=lambda: f"d-{next(ids)}")  # fmt: skip
    return TestClient(app)


def _bodies(customers: list[str], n: int) -> Iterator[tuple[str, dict[str, Any]]]:
    rng = random.Random(3)
    pages = ["home", "product", "cart", "offers"]
    stores = [s for s in sorted(load_catalog().stores)]
    for i in range(n):
        ids: dict[str, Any] = {}
        who = rng.random()
        if who < 0.75:
            ids["customer_id"] = rng.choice(customers)
        elif who < 0.85:
            ids["anonymous_id"] = f"new-{i}"
        context: dict[str, Any] = {"channel": rng.choice(["web", "app", "store"]),
                                   "page": rng.choice(pages)}  # fmt: skip
        if context["channel"] == "store" and rng.random() < 0.8:
            context["store_id"] = rng.choice(stores)
        if rng.random() < 0.3:
            context["basket_value"] = rng.choice([0.0, 4.99, 15.0, 60.0])
        yield "/v1/offers", {**ids, "context": context, "limit": rng.choice([1, 3, 5, 12, 50])}
        if "customer_id" in ids:
            message: dict[str, Any] = {
                "campaign": f"c-{i % 7}", "kind": rng.choice(["marketing", "transactional"]),
                "urgency": rng.choice(["immediate", "high", "normal", "low"]),
            }  # fmt: skip
            if rng.random() < 0.3:
                message["offer_id"] = rng.choice(sorted(load_catalog().offers))
            if rng.random() < 0.3:
                message["allowed_channels"] = rng.sample(["email", "push", "sms", "messenger"], 2)
            yield "/v1/channel", {"customer_id": ids["customer_id"], "message": message}


# --- the test ------------------------------------------------------------------------------


def test_fast_path_answers_and_logs_what_the_reference_path_does(
    store_file, model, small_world_events, tmp_path, monkeypatch
):
    customers = sorted({e.ids.customer_id for e in small_world_events if e.ids.customer_id})
    requests = list(_bodies(customers, 160))
    answers: dict[str, list[bytes]] = {}
    logs: dict[str, bytes] = {}
    for name in ("fast", "reference"):
        with monkeypatch.context() as patch:
            scorer: Any = model
            if name == "reference":
                patch.setattr(engine_module, "decide_offers", reference_decide_offers)
                patch.setattr(engine_module, "offers_decision", reference_offers_decision)
                scorer = ReferenceScorer(model)
            with _client(store_file, tmp_path / name, scorer) as client:
                answers[name] = []
                for path, body in requests:
                    response = client.post(path, json=body)
                    assert response.status_code == 200, response.text
                    answers[name].append(response.content)
                client.app.state.engine.decisions.flush()
            logs[name] = (tmp_path / name / "data" / "events" / f"{DECISIONS}.jsonl").read_bytes()
    fast, reference = answers["fast"], answers["reference"]
    assert len(fast) == len(requests) > 200
    for number, (a, b) in enumerate(zip(fast, reference, strict=True)):
        assert a == b, f"request {number} {requests[number]}"
    assert logs["fast"] == logs["reference"]
    # The comparison saw the cases that matter: model reasons, exploration, suppressions.
    joined = b"\n".join(fast)
    assert joined.count(b'"channel":"none"') and joined.count(b'"exploration"')
    assert b"suppressed_by:offer_" in logs["fast"] and logs["fast"].count(b"\n") == len(requests)
    assert model.nbo._contrib is not None  # the single-row contributions were in use


def test_lazy_scores_match_the_eager_scorer(model, small_world_events):
    from features.profile import decode_profile, profile_features
    from features.scoring import Candidate, ScoreContext

    result = recompute(small_world_events)
    catalog = load_catalog()
    candidates = [Candidate.of(o) for o in sorted(catalog.offers.values(), key=lambda o: o.id)]
    channels = [Candidate.via(c) for c in ("email", "messenger", "push", "sms")]
    reference = ReferenceScorer(model)
    at = int(WORLD_NOW.timestamp())
    profiles = [v for p, v in sorted(result.profiles.items()) if p.startswith("customer_id:")]
    for raw in profiles[:25]:
        features = profile_features(decode_profile(raw), at)
        for context, pool in (
            (ScoreContext(surface="offers", channel="app", page="home", now=WORLD_NOW), candidates),
            (ScoreContext(surface="channel", now=WORLD_NOW), channels),
        ):
            lazy = model.score(features, tuple(pool), context)
            eager = reference.score(features, pool, context)
            assert lazy.probabilities == [s.probability for s in eager]
            assert [(s.probability, s.contributions) for s in lazy] == [
                (s.probability, s.contributions) for s in eager
            ]


def test_explaining_is_only_for_what_is_read(model):
    from features.scoring import Candidate, ScoreContext

    catalog = load_catalog()
    pool = tuple(Candidate.of(o) for o in sorted(catalog.offers.values(), key=lambda o: o.id))
    context = ScoreContext(surface="offers", channel="web", now=datetime(2026, 3, 8, tzinfo=UTC))
    scores = model.score(None, pool, context)
    assert scores._batch._reasons == {}  # nothing explained yet
    best = int(np.argmax(scores.probabilities))
    scores.explain([best, best])
    assert list(scores._batch._reasons) == [best]
    worst = int(np.argmin(scores.probabilities))
    assert scores[worst].contributions == ()  # outside the most probable: no reasons
    assert list(scores._batch._reasons) == [best]
    assert scores[-1].probability == scores.probabilities[-1]
    assert [s.probability for s in scores[:2]] == scores.probabilities[:2]


def test_a_reloaded_catalog_is_what_the_model_reads_offers_and_stores_from(
    bundle, catalog, tmp_path
):
    import dataclasses

    import msgspec

    from features.scoring import Candidate, ScoreContext

    registry = Registry(tmp_path / "registry")
    version = register(registry, bundle, {"nbo": {}, "channel": {}})
    _, nbo, channel = load_version(registry.root, version)

    def scorer_for(table_catalog):
        return RegistryScorer(version, nbo, channel, OfferTable.from_catalog(table_catalog))

    # Serving reloaded an edited catalog: every offer's value and minimum basket changed.
    edited = dataclasses.replace(catalog, offers={
        i: msgspec.structs.replace(o, value=o.value * 3 + 1, min_basket=(o.min_basket or 0) + 40)
        for i, o in catalog.offers.items()
    })  # fmt: skip
    pool = tuple(Candidate.of(o) for o in sorted(edited.offers.values(), key=lambda o: o.id))
    context = ScoreContext(surface="offers", channel="web", now=WORLD_NOW)
    reloaded = scorer_for(catalog)
    before = reloaded.score(None, pool, context).probabilities
    reloaded.use_catalog(edited)
    after = reloaded.score(None, pool, context).probabilities
    assert after == scorer_for(edited).score(None, pool, context).probabilities
    assert after != before
