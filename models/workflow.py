"""Train and evaluate end to end: the thin I/O layer the CLI, the demo and notebooks call.

``train(...)`` builds a training set from a file event log, trains both models and
registers a version. ``train_and_evaluate(...)`` also simulates a fresh world, runs the
off-policy estimators and the closed loop there, measures training time and scoring
latency, draws the plots and returns the evaluation document (``omnioffer evaluate``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from features.attribution import AttributionWindows
from features.catalog import Catalog, load_catalog
from models import plots
from models.bench import reasons_agreement, scoring_latency, training_time
from models.bundle import Bundle, TrainingDataError, load_bundle, register, train_models
from models.closed_loop import customer_index
from models.dataset import TrainingSet, build_training_set, load_decisions, load_segments
from models.evaluate import build_rounds, closed_loop_report, heldout_report, ope_report
from models.registry import Registry
from models.rows import OfferTable
from models.train import TrainConfig
from omnioffer.settings import Settings

Progress = Callable[[str, int, int], None]
GROUND_TRUTH = "ground_truth.jsonl"
# Monte Carlo draws per decision for Thompson's first-position probabilities in evaluation.
THOMPSON_EVALUATION_DRAWS = 2000


def _quiet(stage: str, done: int, total: int) -> None:
    return None


@dataclass(frozen=True)
class EvaluationConfig:
    """Sizes of the fresh evaluation world and of the measurements.

    Decisions of the fresh world count from ``warmup_days`` on (customers need a history)
    and until the conversion window still fits in the world (complete labels).
    """

    eval_customers: int = 2500
    eval_days: int = 21
    warmup_days: int = 7
    eval_seed_offset: int = 1000
    n_bootstrap: int = 1000
    bench_rows: int = 1_000_000
    bench_rounds: int = 200
    latency_candidates: int = 200
    measure: bool = True


def catalog_of(settings: Settings) -> Catalog:
    """Load the configured catalog (the shipped one by default)."""
    return load_catalog(settings.catalog_dir) if settings.catalog_dir else load_catalog()


def simulate_world(
    out: Path, customers: int, days: int, seed: int, settings: Settings, catalog: Catalog,
    progress: Progress = _quiet,
) -> Any:
    """Simulate a world into ``out`` (file event log + ground truth); return its config."""
    from simulator import FileSink, SimulationConfig, simulate

    config = SimulationConfig(
        customers=customers, days=days, seed=seed, contact_hash_key=settings.hash_key
    )
    simulate(config, catalog, FileSink(out),
             progress=lambda done, total: progress(f"simulate {out.name}", done, total))
    return config


def load_training_set(
    events_dir: Path | None,
    settings: Settings,
    catalog: Catalog,
    progress: Progress = _quiet,
    *,
    bootstrap: str | None = None,
) -> TrainingSet:
    """Read the event log and build its training set (complete windows only).

    From the file event log ``events_dir``, or with ``bootstrap`` from Kafka: the event
    topics and the ``decisions`` topic (erased decisions left out), read whole.
    """
    if bootstrap is not None:
        from features.kafka_log import KAFKA_ERRORS, load_kafka_events, read_kafka_decisions

        progress("read Kafka", 0, 1)
        timeout = settings.decision_log_timeout_s
        try:
            events = load_kafka_events(
                bootstrap, key=settings.hash_key, max_bytes=settings.max_event_bytes,
                timeout=timeout,
            )  # fmt: skip
            decisions = read_kafka_decisions(bootstrap, timeout=timeout)
        except KAFKA_ERRORS as error:
            message = f"cannot read the Kafka topics at {bootstrap}: {error}"
            raise TrainingDataError(message) from error
        progress("read Kafka", 1, 1)
    elif events_dir is not None:
        from features.eventlog import load_events

        events = load_events(events_dir, key=settings.hash_key,
                             max_bytes=settings.max_event_bytes)  # fmt: skip
        decisions = load_decisions(events_dir)
    else:
        message = "load_training_set needs an event log folder or a Kafka bootstrap"
        raise ValueError(message)
    return build_training_set(
        events, decisions, OfferTable.from_catalog(catalog), settings.attribution_windows,
        progress=lambda done, total: progress("point-in-time features", done, total),
    )


def train(
    settings: Settings,
    events_dir: Path | None,
    *,
    config: TrainConfig | None = None,
    promote: bool = False,
    progress: Progress = _quiet,
    bootstrap: str | None = None,
) -> tuple[str, Bundle, TrainingSet, dict[str, Any]]:
    """Build the training set, train both models, register (and maybe promote) a version.

    From the file event log ``events_dir``, or with ``bootstrap`` from Kafka's topics.
    """
    catalog = catalog_of(settings)
    config = config or TrainConfig(seed=settings.seed)
    ts = load_training_set(events_dir, settings, catalog, progress, bootstrap=bootstrap)
    progress("train", 0, 1)
    bundle = train_models(ts, config)
    progress("train", 1, 1)
    # Segments come from the simulator's ground truth: reporting only, absent in production.
    segments = load_segments(events_dir / GROUND_TRUTH) if events_dir is not None else {}
    report = heldout_report(bundle, ts, segments)
    registry = Registry(settings.model_registry_dir)
    source = ({"kafka_bootstrap": bootstrap} if bootstrap is not None
              else {"events_dir": str(events_dir)})  # fmt: skip
    version = register(registry, bundle, _metrics_only(report), source)
    if promote:
        registry.promote(version)
    return version, bundle, ts, report


def _registered(settings: Settings, events_dir: Path, version: str, progress: Progress,
                ) -> tuple[Bundle, TrainingSet, dict[str, Any]]:  # fmt: skip
    """Return a registered version's bundle, its training set and its held-out report."""
    registry = Registry(settings.model_registry_dir)
    registry.path(version)  # an unknown version fails before the training set is built
    ts = load_training_set(events_dir, settings, catalog_of(settings), progress)
    bundle = load_bundle(registry, version, ts)
    return bundle, ts, heldout_report(bundle, ts, load_segments(events_dir / GROUND_TRUTH))


def _metrics_only(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "calibration_bins"}


def _windows_fit(windows: AttributionWindows, start: Any, days: int, warmup: int):
    begin = start + timedelta(days=warmup)
    end = start + timedelta(days=days) - timedelta(seconds=windows.conversion + windows.lateness)
    return begin, end


def run_evaluation(
    settings: Settings,
    events_dir: Path,
    *,
    run_dir: Path | None = None,
    config: TrainConfig | None = None,
    evaluation: EvaluationConfig | None = None,
    promote: bool = True,
    progress: Progress = _quiet,
    version: str | None = None,
) -> dict[str, Any]:
    """Train on ``events_dir``, evaluate on a fresh simulated world; return the document.

    With ``version``, train nothing: evaluate that registered version, ``events_dir``
    being the events it was trained on (its held-out slice is rebuilt from them), and
    promote it only if ``promote``. Plots and the fresh world go to ``run_dir`` (default:
    ``data_dir/runs/<version>``). The document's keys ``nbo``, ``channel``, ``ope``,
    ``ope_true_value`` and ``closed_loop`` are the contract of ``omnioffer evaluate --json``.
    """
    evaluation = evaluation or EvaluationConfig()
    started = time.perf_counter()
    evaluated_registered = version is not None
    if version is None:
        version, bundle, ts, report = train(
            settings, events_dir, config=config, promote=False, progress=progress
        )
    else:
        bundle, ts, report = _registered(settings, events_dir, version, progress)
    trained_s = time.perf_counter() - started
    run_dir = run_dir or settings.data_dir / "runs" / version
    run_dir.mkdir(parents=True, exist_ok=True)
    catalog = catalog_of(settings)

    # A fresh world: customers the models never saw, with their own history.
    fresh_dir = run_dir / "fresh_world"
    world_config = simulate_world(
        fresh_dir, evaluation.eval_customers, evaluation.eval_days,
        settings.seed + evaluation.eval_seed_offset, settings, catalog, progress,
    )
    fresh = load_training_set(fresh_dir, settings, catalog, progress)
    begin, end = _windows_fit(settings.attribution_windows, world_config.start,
                              evaluation.eval_days, evaluation.warmup_days)
    from simulator import ClosedLoop, make_world

    world = make_world(world_config, catalog)
    ids = customer_index(world)
    keep_rows = [begin <= x.decision.decided_at < end for x in fresh.examples]
    served = served_policy(settings, catalog)
    rounds = build_rounds(
        fresh, bundle, ids.get, keep=lambda i: keep_rows[i], worth_of=served.pop("worth_of"),
        exploration=served.pop("exploration_policy"), seed=settings.seed,
    )  # fmt: skip
    if not rounds:
        message = "the fresh world has no decision to evaluate; use more customers or days"
        raise ValueError(message)
    progress("closed loop", 0, 1)
    loop_seed = settings.seed + 17
    closed = closed_loop_report(rounds, lambda: ClosedLoop(world, catalog, loop_seed), loop_seed)
    progress("closed loop", 1, 1)
    ope = ope_report(rounds, evaluation.n_bootstrap, settings.seed)
    truth = closed["expected"]["model"]
    ope_served = ope_report(rounds, evaluation.n_bootstrap, settings.seed, policy="served")
    served_truth = closed["expected"]["served"]

    document: dict[str, Any] = {
        "nbo": {k: report["nbo"][k] for k in ("auc", "logloss", "ece")},
        "channel": {k: report["channel"][k] for k in ("auc", "logloss", "ece")},
        "ope": {k: ope[k] for k in ("ips", "snips", "dr")},
        "ope_true_value": truth,
        "closed_loop": closed["sampled"],
        "closed_loop_expected": closed["expected"],
        "model_version": version,
        "targets": {**_targets(closed, ope, report, truth),
                    "served_dr_interval_contains_truth": (
                        ope_served["dr"]["ci_low"] <= served_truth <= ope_served["dr"]["ci_high"])},
        "heldout": _metrics_only(report),
        "ope_diagnostics": ope["_diagnostics"],
        # The policy serving runs with this model: probability × value × lever, explored.
        "served_policy": served,
        "ope_served": {k: ope_served[k] for k in ("ips", "snips", "dr")},
        "ope_served_true_value": served_truth,
        "ope_served_diagnostics": ope_served["_diagnostics"],
        "closed_loop_details": {k: v for k, v in closed.items() if k not in ("sampled",)},
        "data": {
            "training_examples": len(ts),
            "training_events_dir": str(events_dir),
            "fresh_world": {"customers": evaluation.eval_customers,
                            "days": evaluation.eval_days, "seed": world_config.seed,
                            "decisions_evaluated": len(rounds),
                            "from": begin.isoformat(), "to": end.isoformat()},
        },
        "seed": settings.seed,
        "train_and_register_s": round(trained_s, 1),
        "trained": "registered before" if evaluated_registered else "this run",
    }
    if evaluation.measure:
        document["bench"] = _measure(settings, bundle, ts, fresh, version, evaluation, progress)
        document["targets"].update(_bench_targets(document["bench"]))
    document["plots"] = _plots(report, ope, truth, closed["expected"], run_dir)
    document["run_dir"] = str(run_dir)
    (run_dir / "evaluate.json").write_bytes(
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    if promote:  # only once the evaluation ran to its end
        Registry(settings.model_registry_dir).promote(version)
    return document


def served_policy(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    """Describe the policy serving runs with a model, and give what evaluating it needs.

    Two entries are removed before the description is written out: ``worth_of`` maps an
    offer id to its value × lever under the policies file in force (the settings' or the
    shipped one), and ``exploration_policy`` is the settings' exploration. Thompson sampling has
    no closed-form propensities: its first-position probabilities are shares of
    :data:`THOMPSON_EVALUATION_DRAWS` draws per decision (serving logs shares of
    ``thompson_draws``, 100 by default; more draws estimate the same probabilities closer).
    """
    from features.policy import DEFAULT_POLICIES_PATH, load_policies

    path = settings.policies_path or DEFAULT_POLICIES_PATH
    policies = load_policies(path)
    worths = {offer.id: policies.offer_worth(offer.id, offer.kind, offer.cost)
              for offer in catalog.offers.values()}  # fmt: skip
    described: dict[str, Any] = {
        "ranks_by": "probability × value × lever (first position)",
        "exploration": settings.exploration,
        "policies": str(path),
    }
    if settings.exploration == "thompson":
        draws = max(settings.thompson_draws, THOMPSON_EVALUATION_DRAWS)
        described |= {"thompson_strength": settings.thompson_strength, "draws": draws}
        exploration = settings.exploration_policy(draws=draws)
    else:
        described["epsilon"] = settings.explore_epsilon
        exploration = settings.exploration_policy()
    described["policy"] = exploration.name
    return described | {"worth_of": worths.__getitem__, "exploration_policy": exploration}


def _targets(closed: dict[str, Any], ope: dict[str, Any], report: dict[str, Any],
             truth: float) -> dict[str, Any]:
    sampled, expected = closed["sampled"], closed["expected"]
    dr = ope["dr"]
    return {
        "model_ge_logging_sampled": sampled["model"] >= sampled["logging"],
        "model_ge_logging_expected": expected["model"] >= expected["logging"],
        "normalized_gain_sampled": closed["normalized_gain_sampled"],
        "normalized_gain_expected": closed["normalized_gain_expected"],
        "normalized_gain_ge_0.6": closed["normalized_gain_expected"] >= 0.6,
        "dr_interval_contains_truth": dr["ci_low"] <= truth <= dr["ci_high"],
        "nbo_ece_le_0.02": report["nbo"]["ece"] <= 0.02,
        "channel_ece_le_0.02": report["channel"]["ece"] <= 0.02,
    }


def _bench_targets(bench: dict[str, Any]) -> dict[str, Any]:
    out = {"train_1m_under_120s": bench["training"]["seconds"] < 120}
    latency = bench["latency"]
    if "faster" in latency:
        out["scorer_backend"] = latency["faster"] if latency["outputs_match_1e-6"] else "booster"
    return out


def _measure(settings: Settings, bundle: Bundle, ts: TrainingSet, fresh: TrainingSet,
             version: str, evaluation: EvaluationConfig, progress: Progress) -> dict[str, Any]:
    progress("benchmark: train on 1M rows", 0, 1)
    x, y, _ = ts.nbo()
    training = training_time(x, y, evaluation.bench_rows, evaluation.bench_rounds,
                             replace(bundle.config, num_threads=2))
    progress("benchmark: train on 1M rows", 1, 1)
    # 200 candidates of one request: a customer's view crossed with offers and channels.
    rows = []
    for i in range(len(fresh)):
        _, matrix = fresh.candidates(i)
        rows.append(matrix)
        if sum(len(r) for r in rows) >= evaluation.latency_candidates:
            break
    candidates = np.vstack(rows)[: evaluation.latency_candidates]
    folder = Registry(settings.model_registry_dir).path(version)
    progress("benchmark: scoring latency", 0, 1)
    latency = scoring_latency(folder / "nbo.txt", bundle.nbo.calibrator, candidates)
    progress("benchmark: scoring latency", 1, 1)
    reasons = reasons_agreement(folder / "nbo.txt", candidates)
    return {"training": training, "latency": latency, "reasons": reasons}


def _plots(report: dict[str, Any], ope: dict[str, Any], truth: float,
           closed: dict[str, float], run_dir: Path) -> dict[str, str]:
    return {
        "calibration": str(plots.calibration_plot(report["calibration_bins"],
                                                  run_dir / "calibration.png")),
        "lift_by_segment": str(plots.lift_plot(report["nbo_by_segment"],
                                               run_dir / "lift_by_segment.png",
                                               "next best offer: conversion by persona")),
        "ope": str(plots.ope_plot(ope, truth, closed, run_dir / "ope_vs_closed_loop.png")),
    }


DEMO_EVALUATION = EvaluationConfig(eval_customers=800, eval_days=16, warmup_days=5,
                                   n_bootstrap=300, measure=False)


def train_and_evaluate(
    settings: Settings,
    events_dir: Path,
    *,
    evaluation: EvaluationConfig = DEMO_EVALUATION,
    promote: bool = True,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """Train on ``events_dir``, evaluate on a small fresh world; return a small summary.

    What ``omnioffer demo`` calls; the whole document is in ``<run_dir>/evaluate.json``.
    """
    return summary(run_evaluation(settings, events_dir, evaluation=evaluation,
                                  promote=promote, progress=progress))


def summary(document: dict[str, Any]) -> dict[str, Any]:
    """Return the few figures the demo prints."""
    return {
        "model_version": document["model_version"],
        "nbo_auc": document["nbo"]["auc"],
        "channel_auc": document["channel"]["auc"],
        "nbo_ece": document["nbo"]["ece"],
        "closed_loop": document["closed_loop_expected"],
        "dr": document["ope"]["dr"],
        "ope_true_value": document["ope_true_value"],
        "run_dir": document["run_dir"],
    }
