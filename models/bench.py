"""Measurements: training time at a given row count, scoring latency per backend, reasons.

Both compare side by side in one run (the machine is shared and noisy): backends are
timed interleaved, and the reported figure is the median over repetitions.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.calibration import Calibrator
from models.rows import CATEGORICAL, NBO_FEATURES
from models.scoring import (
    BoosterPredictor,
    LleavesPredictor,
    PathContrib,
    lleaves_available,
    single_row_shap,
)
from models.train import TrainConfig, train_fixed_rounds


def replicate(x: np.ndarray, y: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Tile real examples up to ``rows`` rows (the simulator makes fewer per run)."""
    reps = -(-rows // len(y))
    return np.tile(x, (reps, 1))[:rows], np.tile(y, reps)[:rows]


def training_time(
    x: np.ndarray, y: np.ndarray, rows: int, rounds: int, config: TrainConfig
) -> dict[str, Any]:
    """Train ``rounds`` trees on ``rows`` rows (replicated from ``x``); return the time."""
    big_x, big_y = replicate(x, y, rows)
    started = time.perf_counter()
    train_fixed_rounds(big_x, big_y, NBO_FEATURES, sorted(CATEGORICAL), config, rounds)
    elapsed = time.perf_counter() - started
    return {
        "rows": rows,
        "distinct_rows": len(y),
        "rounds": rounds,
        "threads": config.num_threads,
        "seconds": round(elapsed, 2),
    }


def scoring_latency(
    model_file: Path, calibrator: Calibrator, candidates: np.ndarray, repeats: int = 300
) -> dict[str, Any]:
    """Time one request of ``len(candidates)`` rows on the Booster and on lleaves."""
    import lightgbm as lgb

    booster = lgb.Booster(model_file=str(model_file))
    backends: dict[str, Any] = {"booster": BoosterPredictor(booster)}
    result: dict[str, Any] = {"candidates": len(candidates), "repeats": repeats}
    if lleaves_available():
        started = time.perf_counter()
        backends["lleaves"] = LleavesPredictor(model_file)
        result["lleaves_compile_s"] = round(time.perf_counter() - started, 2)
    else:
        result["lleaves"] = "not installed"
    times: dict[str, list[float]] = {name: [] for name in backends}
    outputs = {name: b.predict(candidates) for name, b in backends.items()}
    for _ in range(repeats):
        for name, backend in backends.items():
            started = time.perf_counter()
            calibrator.apply(backend.predict(candidates))
            times[name].append(time.perf_counter() - started)
    for name, samples in times.items():
        result[f"{name}_ms_median"] = round(statistics.median(samples) * 1000, 4)
        result[f"{name}_ms_p99"] = round(float(np.quantile(samples, 0.99)) * 1000, 4)
    if "lleaves" in outputs:
        diff = float(np.max(np.abs(outputs["lleaves"] - outputs["booster"])))
        result["max_abs_difference"] = diff
        result["outputs_match_1e-6"] = diff <= 1e-6
        faster = min(("booster", "lleaves"), key=lambda n: result[f"{n}_ms_median"])
        result["faster"] = faster
        result["speedup"] = round(result["booster_ms_median"] / result["lleaves_ms_median"], 2)
    return result


def reasons_agreement(
    model_file: Path, rows: np.ndarray, shown: int = 5, repeats: int = 200
) -> dict[str, Any]:
    """Compare path attributions with TreeSHAP on ``rows``: their top reasons and cost.

    Agreement is over the rows' contributions: the strongest feature by absolute value,
    the three strongest (as a set, and their overlap), and the strongest positive one
    (serving's first reason). Cost: explaining ``shown`` rows (one page of offers), both
    timed interleaved through the single-row API serving uses, median over ``repeats``.
    """
    import lightgbm as lgb

    booster = lgb.Booster(model_file=str(model_file))
    path, shap = PathContrib(booster, booster.num_feature()), single_row_shap(booster)
    full_path = path.predict(rows)
    full_shap = booster.predict(rows, pred_contrib=True, num_threads=1)
    by_path, by_shap = full_path[:, :-1], full_shap[:, :-1]  # without the bias

    def top(c: np.ndarray, k: int) -> np.ndarray:
        return np.argsort(-np.abs(c), axis=1, kind="stable")[:, :k]

    top3_path, top3_shap = top(by_path, 3).tolist(), top(by_shap, 3).tolist()
    pairs = list(zip(top3_path, top3_shap, strict=True))
    overlap = [len(set(a) & set(b)) / 3 for a, b in pairs]
    same_set = [set(a) == set(b) for a, b in pairs]
    same_top = [a[0] == b[0] for a, b in pairs]
    same_positive = np.argmax(by_path, axis=1) == np.argmax(by_shap, axis=1)
    page = rows[:shown]
    times: dict[str, list[float]] = {"path": [], "shap": []}
    for _ in range(repeats):
        for name, explain in (("path", path.predict), ("shap", shap.predict)):
            started = time.perf_counter()
            explain(page)
            times[name].append(time.perf_counter() - started)
    path_ms, shap_ms = (statistics.median(times[n]) * 1000 for n in ("path", "shap"))
    return {
        "rows": len(rows),
        "top1_same": round(float(np.mean(same_top)), 4),
        "top3_same_set": round(float(np.mean(same_set)), 4),
        "top3_overlap": round(float(np.mean(overlap)), 4),
        "top_positive_same": round(float(np.mean(same_positive)), 4),
        # Both add up (with their bias) to the raw score.
        "max_abs_total_difference": float(np.max(np.abs(full_path.sum(1) - full_shap.sum(1)))),
        f"path_ms_{shown}_rows": round(path_ms, 4),
        f"shap_ms_{shown}_rows": round(shap_ms, 4),
        "speedup": round(shap_ms / path_ms, 1),
    }
