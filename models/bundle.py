"""Train both models from one training set, and turn them into registry artifacts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson

from models.calibration import Calibrator
from models.dataset import TrainingSet
from models.registry import Registry, RegistryError, git_commit
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


class TrainingDataError(ValueError):
    """There is nothing (or not enough) to train on, or it cannot be read."""


def train_models(ts: TrainingSet, config: TrainConfig) -> Bundle:
    """Train and calibrate both models on a time split of ``ts``."""
    if len(ts) == 0:
        message = "the training set is empty: no decision with a complete attribution window"
        raise TrainingDataError(message)
    x, y, t = ts.nbo()
    nbo_split = time_split(t, config.train_share, config.calibration_share)
    nbo = train_binary("nbo", x, y, nbo_split, NBO_FEATURES, sorted(CATEGORICAL), config)
    xc, yc, tc = ts.channel()
    if len(yc) == 0:
        message = "the training set has no message decisions to train the channel model on"
        raise TrainingDataError(message)
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


def load_bundle(registry: Registry, version: str, ts: TrainingSet) -> Bundle:
    """Return a registered version as the bundle it was, its splits rebuilt from ``ts``.

    ``ts`` must be the training set the version was trained on (the same events): the
    held-out slice is then the one its metrics were measured on.

    Raises
    ------
    models.registry.RegistryError
        If the version is unknown, or ``ts`` is not its training data (the split
        boundaries or the number of examples differ).

    """
    meta = registry.metadata(version)
    folder = registry.path(version)
    for name, built in (("nbo", NBO_FEATURES), ("channel", CHANNEL_FEATURES)):
        if list(meta["features"][name]) != list(built):
            message = (f"{version}'s {name} model reads other feature columns than this code "
                       "builds: evaluate it with the code it was trained with")  # fmt: skip
            raise RegistryError(message)
    fields = set(TrainConfig.__dataclass_fields__)
    config = TrainConfig(**{k: v for k, v in meta["train_config"].items() if k in fields})
    data = meta["data_range"]
    splits = {"nbo": time_split(ts.nbo()[2], config.train_share, config.calibration_share),
              "channel": time_split(ts.channel()[2], config.train_share,
                                    config.calibration_share)}  # fmt: skip
    for name, split in splits.items():
        stored = data["split_boundaries"][name]
        if len(ts) != data["examples"] or [_iso(b) for b in split.boundaries] != stored:
            message = (
                f"{version} was trained on {data['examples']:,} examples split at {stored}; "
                f"these events give {len(ts):,} split at "
                f"{[_iso(b) for b in split.boundaries]}: pass the events it was trained on"
            )
            raise RegistryError(message)

    def model(name: str) -> TrainedModel:
        calibration = orjson.loads((folder / f"{name}.calibration.json").read_bytes())
        return TrainedModel(
            name=name,
            model_text=(folder / f"{name}.txt").read_text(),
            feature_names=tuple(meta["features"][name]),
            calibrator=Calibrator.from_json(calibration),
            best_iteration=int(meta["best_iteration"][name]),
            params=config.lgb_params(),
        )

    return Bundle(
        model("nbo"), model("channel"), splits["nbo"], splits["channel"], config,
        datetime.fromisoformat(data["first_decision"]),
        datetime.fromisoformat(data["last_decision"]), int(data["examples"]),
    )  # fmt: skip
