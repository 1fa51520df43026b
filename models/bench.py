"""Measurements: training time at a given row count, and scoring latency per backend.

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
from models.scoring import BoosterPredictor, LleavesPredictor, lleaves_available
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
