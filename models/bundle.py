"""Train both models from one training set, and turn them into registry artifacts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson

from models.dataset import TrainingSet
from models.registry import Registry, git_commit
from models.rows import CATEGORICAL, CHANNEL_FEATURES, NBO_FEATURES
from models.train import Split, TrainConfig, TrainedModel, time_split, train_binary


@dataclass(frozen=True)
class Bundle:
    """The next-best-offer and channel models with the splits they were trained on."""

    nbo: TrainedModel
    channel: TrainedModel
    nbo_split: Split
    channel_split: Split
    config: TrainConfig
    first_decision: datetime
    last_decision: datetime
    examples: int


def train_models(ts: TrainingSet, config: TrainConfig) -> Bundle:
    """Train and calibrate both models on a time split of ``ts``."""
    if len(ts) == 0:
        message = "the training set is empty: no decision with a complete attribution window"
        raise ValueError(message)
    x, y, t = ts.nbo()
    nbo_split = time_split(t, config.train_share, config.calibration_share)
    nbo = train_binary("nbo", x, y, nbo_split, NBO_FEATURES, sorted(CATEGORICAL), config)
    xc, yc, tc = ts.channel()
    if len(yc) == 0:
        message = "the training set has no message decisions to train the channel model on"
        raise ValueError(message)
    channel_split = time_split(tc, config.train_share, config.calibration_share)
    channel = train_binary(
        "channel", xc, yc, channel_split, CHANNEL_FEATURES, sorted(CATEGORICAL), config
    )
    times = [x.decision.decided_at for x in ts.examples]
    return Bundle(nbo, channel, nbo_split, channel_split, config, min(times), max(times), len(ts))


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def artifacts(bundle: Bundle) -> dict[str, bytes]:
    """Return the model files: LightGBM text and calibration maps (deterministic bytes)."""
    return {
        "nbo.txt": bundle.nbo.model_text.encode(),
        "nbo.calibration.json": _json(bundle.nbo.calibrator.to_json()),
        "channel.txt": bundle.channel.model_text.encode(),
        "channel.calibration.json": _json(bundle.channel.calibrator.to_json()),
    }


def metadata(bundle: Bundle, metrics: dict[str, Any], extra: dict[str, Any] | None = None):
    """Return a version's metadata: data range, features, metrics, seed, git commit."""
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_range": {
            "first_decision": bundle.first_decision.isoformat(),
            "last_decision": bundle.last_decision.isoformat(),
            "examples": bundle.examples,
            "split_boundaries": {
                "nbo": [_iso(b) for b in bundle.nbo_split.boundaries],
                "channel": [_iso(b) for b in bundle.channel_split.boundaries],
            },
        },
        "features": {"nbo": list(bundle.nbo.feature_names),
                     "channel": list(bundle.channel.feature_names),
                     "categorical": sorted(CATEGORICAL)},
        "metrics": metrics,
        "seed": bundle.config.seed,
        "train_config": asdict(bundle.config),
        "best_iteration": {"nbo": bundle.nbo.best_iteration,
                           "channel": bundle.channel.best_iteration},
        "git_commit": git_commit(),
        "lightgbm": lgb.__version__,
        **(extra or {}),
    }


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).isoformat()


def register(registry: Registry, bundle: Bundle, metrics: dict[str, Any],
             extra: dict[str, Any] | None = None) -> str:
    """Store the bundle as a new registry version; return the version name."""
    return registry.register(artifacts(bundle), metadata(bundle, metrics, extra))


def heldout_predictions(bundle: Bundle, ts: TrainingSet) -> dict[str, np.ndarray]:
    """Return test-slice predictions and labels of both models (for metrics and plots)."""
    x, y, _ = ts.nbo()
    xc, yc, _ = ts.channel()
    test, ctest = bundle.nbo_split.test, bundle.channel_split.test
    return {
        "nbo_p": bundle.nbo.predict(x[test]),
        "nbo_y": y[test],
        "channel_p": bundle.channel.predict(xc[ctest]),
        "channel_y": yc[ctest],
    }
