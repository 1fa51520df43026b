"""Evaluation: held-out metrics with baselines and segments, OPE, and the closed loop.

Pure functions over a trained :class:`~models.bundle.Bundle` and training sets; the
orchestration (simulating worlds, writing files) is in :mod:`models.workflow`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from features.arbitration import EpsilonGreedy, Exploration
from models import metrics
from models.bundle import Bundle, heldout_predictions
from models.closed_loop import (
    POLICIES,
    Round,
    normalized_gain,
    run_closed_loop,
    served_probabilities,
)
from models.dataset import TrainingSet, acted, actions_of, segment_of
from models.ope import ESTIMATORS, effective_sample_size
from models.rows import CATEGORICAL, CHANNEL_FEATURES, CHANNELS, NBO_FEATURES, OFFER_KINDS
from models.train import PopularityBaseline, logistic_baseline
from simulator import ClosedLoop


def _metrics(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    m = metrics.summary(p, y)
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in m.items()}


def _by(groups: Sequence[str], p: np.ndarray, y: np.ndarray, min_n: int = 30):
    index: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        index[g].append(i)
    return {
        g: _metrics(p[rows], y[rows]) for g, rows in sorted(index.items()) if len(rows) >= min_n
    }


def heldout_report(
    bundle: Bundle, ts: TrainingSet, segments: dict[str, str] | None = None
) -> dict[str, Any]:
    """Return test-slice metrics of both models, their baselines, per segment and channel."""
    pred = heldout_predictions(bundle, ts)
    x, y, _ = ts.nbo()
    xc, yc, _ = ts.channel()
    nbo_examples = [e for e, keep in zip(ts.examples, ts.nbo_mask(), strict=True) if keep]
    ch_examples = [e for e, keep in zip(ts.examples, ts.channel_mask(), strict=True) if keep]
    split, csplit = bundle.nbo_split, bundle.channel_split
    seg = segments or {}
    nbo_test = [nbo_examples[i] for i in split.test]
    ch_test = [ch_examples[i] for i in csplit.test]

    ci = NBO_FEATURES.index("channel")
    ki = NBO_FEATURES.index("offer_kind")
    # Popularity: rate per (offer kind, value, channel) — what a non-personal ranking knows.
    keys = x[:, [ki, NBO_FEATURES.index("offer_value"), ci]]
    pop = PopularityBaseline.fit(keys[split.train], y[split.train])
    lr = logistic_baseline(x[split.train], y[split.train], NBO_FEATURES, CATEGORICAL,
                           bundle.config.seed)
    cpop = PopularityBaseline.fit(xc[csplit.train][:, [CHANNEL_FEATURES.index("channel")]],
                                  yc[csplit.train])
    clr = logistic_baseline(xc[csplit.train], yc[csplit.train], CHANNEL_FEATURES, CATEGORICAL,
                            bundle.config.seed)
    # A code is NaN where the row has none: an offer shown in a store (no online channel).
    channel_name = [CHANNELS[int(v)] if v == v else "none" for v in x[split.test, ci]]
    kind_name = [OFFER_KINDS[int(v)] if v == v else "none" for v in x[split.test, ki]]
    return {
        "nbo": _metrics(pred["nbo_p"], pred["nbo_y"]),
        "channel": _metrics(pred["channel_p"], pred["channel_y"]),
        "baselines": {
            "nbo": {
                "popularity": _metrics(pop.predict(keys[split.test]), y[split.test]),
                "logistic": _metrics(lr.predict_proba(x[split.test])[:, 1], y[split.test]),
            },
            "channel": {
                "popularity": _metrics(
                    cpop.predict(xc[csplit.test][:, [CHANNEL_FEATURES.index("channel")]]),
                    yc[csplit.test],
                ),
                "logistic": _metrics(clr.predict_proba(xc[csplit.test])[:, 1], yc[csplit.test]),
            },
        },
        "nbo_by_segment": _by([segment_of(e.decision, seg) for e in nbo_test],
                              pred["nbo_p"], pred["nbo_y"]),
        "nbo_by_channel": _by(channel_name, pred["nbo_p"], pred["nbo_y"]),
        "nbo_by_offer_kind": _by(kind_name, pred["nbo_p"], pred["nbo_y"]),
        "channel_by_segment": _by([segment_of(e.decision, seg) for e in ch_test],
                                  pred["channel_p"], pred["channel_y"]),
        "channel_by_channel": _by([str(e.decision.chosen[0].channel) for e in ch_test],
                                  pred["channel_p"], pred["channel_y"]),
        "calibration_bins": {
            "nbo": metrics.calibration_bins(pred["nbo_p"], pred["nbo_y"]),
            "channel": metrics.calibration_bins(pred["channel_p"], pred["channel_y"]),
        },
        "test_slice": {"nbo": len(split.test), "channel": len(csplit.test)},
    }


def build_rounds(
    ts: TrainingSet,
    bundle: Bundle,
    customer_of: Callable[[str], str | None],
    keep: Callable[[int], bool] = lambda i: True,
    *,
    worth_of: Callable[[str], float] | None = None,
    exploration: Exploration | None = None,
    seed: int = 0,
) -> list[Round]:
    """Return the closed-loop rounds of a (fresh) world's logged decisions.

    The model scores every logged candidate from the customer's point-in-time view;
    ``customer_of`` maps an identifier value to the simulator's customer (environment only).
    With ``worth_of`` (an offer's value × lever, :meth:`features.policy.Policies.offer_worth`)
    each round also gets the served policy's probabilities (``Round.served``): serving's
    ranking by probability × value × lever with ``exploration`` (greedy when ``None``;
    Thompson's draws come from one generator seeded with ``seed``).
    """
    booster = bundle.nbo.booster()
    chosen_rows, spans, meta = [], [], []
    for i, example in enumerate(ts.examples):
        if not keep(i):
            continue
        decision = example.decision
        customer = next(
            (c for v in decision.ids.present().values() if (c := customer_of(v)) is not None),
            None,
        )
        actions = actions_of(decision)
        if customer is None or not actions or not acted(decision) or (
            decision.chosen[0].offer_id is None
        ) or not all(offer in ts.offers.offers for offer, _ in actions):
            continue  # nothing shown, or an offer the catalog no longer has to score
        logged = (decision.chosen[0].offer_id, str(decision.chosen[0].channel))
        if logged not in actions:
            continue
        _, rows = ts.candidates(i)
        start = sum(len(r) for r in chosen_rows)
        chosen_rows.append(rows)
        spans.append((start, start + len(rows)))
        pool = decision.candidates or decision.chosen
        props = np.array([c.propensity for c in pool if c.offer_id is not None])
        meta.append((customer, decision.decided_at, tuple(actions), props,
                     actions.index(logged), float(example.labels.kept_conversion)))
    if not chosen_rows:
        return []
    scores = bundle.nbo.predict(np.vstack(chosen_rows), booster)
    rounds = []
    policy = exploration or EpsilonGreedy(0.0)
    rng = random.Random(seed)
    for (c, at, acts, props, logged, reward), (a, b) in zip(meta, spans, strict=True):
        served = None
        if worth_of is not None:
            ids = [offer_id for offer_id, _channel in acts]
            worths = np.array([worth_of(offer_id) for offer_id in ids])
            served = served_probabilities(scores[a:b], worths, ids, policy, rng)
        rounds.append(Round(c, at, acts, props, scores[a:b], logged, reward, served))
    return rounds


def target_policy(rounds: Sequence[Round], policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the target policy's probability of each round's logged action, and its reward.

    The reward is as the model expects it (``q_policy``); ``policy`` is ``model`` (argmax)
    or ``served``.
    """
    if policy == "model":
        picks = [int(np.argmax(r.scores)) for r in rounds]
        action_prob = np.array([float(p == r.logged) for p, r in zip(picks, rounds, strict=True)])
        return action_prob, np.array([r.scores[p] for p, r in zip(picks, rounds, strict=True)])
    if policy == "served":
        if any(r.served is None for r in rounds):
            message = "the served policy needs rounds built with worth_of (build_rounds)"
            raise ValueError(message)
        served = [r.served for r in rounds]
        action_prob = np.array([s[r.logged] for s, r in zip(served, rounds, strict=True)])
        q_policy = np.array([float(s @ r.scores) for s, r in zip(served, rounds, strict=True)])
        return action_prob, q_policy
    message = f"policy must be 'model' or 'served'; got {policy!r}"
    raise ValueError(message)


def ope_report(rounds: Sequence[Round], n_bootstrap: int, seed: int, policy: str = "model",
               ) -> dict[str, Any]:  # fmt: skip
    """Estimate a target policy's value from the logged rounds with IPS, SNIPS and DR.

    ``policy`` is the model's argmax (``model``) or the policy serving runs with it
    (``served``: probability × value × lever, with its exploration; see
    :func:`build_rounds`).
    """
    reward = np.array([r.reward for r in rounds])
    pscore = np.array([r.propensities[r.logged] for r in rounds])
    action_prob, q_policy = target_policy(rounds, policy)
    q_logged = np.array([r.scores[r.logged] for r in rounds])
    out: dict[str, Any] = {}
    for estimator in ESTIMATORS:
        interval = estimator.interval(
            reward, pscore, action_prob, q_logged, q_policy, n_bootstrap=n_bootstrap, seed=seed
        )
        out[estimator.name] = {k: round(v, 6) for k, v in interval.as_dict().items()}
    out["_diagnostics"] = {
        "rounds": len(rounds),
        # The argmax matches a logged action or not; a stochastic policy in expectation.
        "matches": int(action_prob.sum()) if policy == "model" else round(
            float(action_prob.sum()), 3),
        "effective_sample_size": round(effective_sample_size(action_prob, pscore), 1),
        "logged_value": round(float(reward.mean()), 6),
        "direct_method": round(float(q_policy.mean()), 6),
    }
    return out


def closed_loop_report(
    rounds: Sequence[Round], make_loop: Callable[[], ClosedLoop], seed: int
) -> dict[str, Any]:
    """Run the four policies; return sampled and expected reward per decision."""
    values = run_closed_loop(rounds, make_loop, seed, POLICIES)
    sampled = {p: round(v.reward, 6) for p, v in values.items()}
    expected = {p: round(v.expected, 6) for p, v in values.items()}
    return {
        "sampled": sampled,
        "expected": expected,
        "rounds": len(rounds),
        "normalized_gain_sampled": round(normalized_gain(sampled), 4),
        "normalized_gain_expected": round(normalized_gain(expected), 4),
    }
