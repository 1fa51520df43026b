"""LightGBM training with a time-based split, calibration on a held-out slice, and baselines.

Reproducible: the same data, configuration and seed give byte-identical model text
(``deterministic``, ``force_col_wise`` and a fixed thread count; no wall-clock inputs).

The split is by time: the oldest ``train`` share of decisions trains, the next
``calibration`` share picks the number of trees (early stopping) and fits the calibration
map, the newest rest is the held-out test slice every reported metric comes from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from models.calibration import Calibrator, Method


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters and the split; every field is part of a model's metadata."""

    seed: int = 7
    num_threads: int = 2
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 40
    feature_fraction: float = 0.8
    lambda_l2: float = 5.0
    max_rounds: int = 400
    early_stopping_rounds: int = 40
    train_share: float = 0.7
    calibration_share: float = 0.15
    calibration: Method = "platt"

    def __post_init__(self) -> None:
        if not 0 < self.train_share < 1 or not 0 < self.calibration_share < 1:
            message = "train_share and calibration_share must be within (0, 1)"
            raise ValueError(message)
        if self.train_share + self.calibration_share >= 1:
            message = (
                "train_share + calibration_share must be < 1 to leave a test slice; got "
                f"{self.train_share} + {self.calibration_share}"
            )
            raise ValueError(message)

    def lgb_params(self) -> dict[str, object]:
        """Return the LightGBM parameters (deterministic on a fixed thread count)."""
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "num_threads": self.num_threads,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
            "max_bin": 63,
            "min_data_per_group": 50,
            "cat_smooth": 10.0,
        }


@dataclass(frozen=True)
class Split:
    """Row indices of the three time slices."""

    train: np.ndarray
    calibration: np.ndarray
    test: np.ndarray
    boundaries: tuple[int, int]


def time_split(times: np.ndarray, train_share: float, calibration_share: float) -> Split:
    """Split rows by time quantiles; rows at the same second stay in one slice."""
    times = np.asarray(times)
    if len(times) == 0:
        message = "times must not be empty"
        raise ValueError(message)
    ordered = np.sort(times)
    last = len(ordered) - 1
    first = int(ordered[min(last, int(len(ordered) * train_share))])
    second = int(ordered[min(last, int(len(ordered) * (train_share + calibration_share)))])
    return Split(
        train=np.flatnonzero(times < first),
        calibration=np.flatnonzero((times >= first) & (times < second)),
        test=np.flatnonzero(times >= second),
        boundaries=(first, second),
    )


@dataclass(frozen=True)
class TrainedModel:
    """A trained, calibrated binary model: LightGBM text plus its calibration map."""

    name: str
    model_text: str
    feature_names: tuple[str, ...]
    calibrator: Calibrator
    best_iteration: int
    params: dict[str, object] = field(default_factory=dict)

    def booster(self) -> lgb.Booster:
        """Load the model text into a Booster (what serving and evaluation run)."""
        return lgb.Booster(model_str=self.model_text)

    def predict_raw(self, x: np.ndarray, booster: lgb.Booster | None = None) -> np.ndarray:
        """Return uncalibrated probabilities."""
        return (booster or self.booster()).predict(x, num_threads=1)

    def predict(self, x: np.ndarray, booster: lgb.Booster | None = None) -> np.ndarray:
        """Return calibrated probabilities."""
        return self.calibrator.apply(self.predict_raw(x, booster))


def train_binary(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    split: Split,
    feature_names: Sequence[str],
    categorical: Sequence[str],
    config: TrainConfig,
) -> TrainedModel:
    """Train on the train slice, stop early and calibrate on the calibration slice."""
    params = config.lgb_params()
    cats = [n for n in feature_names if n in set(categorical)]
    names = list(feature_names)
    train = lgb.Dataset(
        x[split.train], y[split.train], feature_name=names, categorical_feature=cats,
        free_raw_data=True, params={"max_bin": params["max_bin"], "verbosity": -1},
    )
    valid = lgb.Dataset(x[split.calibration], y[split.calibration], reference=train)
    booster = lgb.train(
        params,
        train,
        num_boost_round=config.max_rounds,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
    )
    best = booster.best_iteration or config.max_rounds
    text = booster.model_to_string(num_iteration=best)
    reloaded = lgb.Booster(model_str=text)
    raw = reloaded.predict(x[split.calibration], num_threads=1)
    calibrator = Calibrator.fit(raw, y[split.calibration], config.calibration)
    return TrainedModel(name, text, tuple(names), calibrator, best, params)


def train_fixed_rounds(
    x: np.ndarray, y: np.ndarray, feature_names: Sequence[str], categorical: Sequence[str],
    config: TrainConfig, rounds: int,
) -> lgb.Booster:
    """Train ``rounds`` trees on all rows (the training-time benchmark)."""
    params = config.lgb_params()
    cats = [n for n in feature_names if n in set(categorical)]
    data = lgb.Dataset(x, y, feature_name=list(feature_names), categorical_feature=cats,
                       params={"max_bin": params["max_bin"], "verbosity": -1})
    return lgb.train(params, data, num_boost_round=rounds)


# --- baselines ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PopularityBaseline:
    r"""The observed rate per key (offer x channel), shrunk towards the global rate.

    :math:`\hat p_k = (s_k + m \bar p) / (n_k + m)` with ``m`` pseudo-observations.
    """

    rates: dict[tuple[float, ...], float]
    prior: float

    @classmethod
    def fit(cls, keys: np.ndarray, y: np.ndarray, strength: float = 20.0) -> PopularityBaseline:
        """Count successes and trials per key row."""
        prior = float(np.mean(y)) if len(y) else 0.0
        sums: dict[tuple[float, ...], list[float]] = {}
        for key, label in zip(map(tuple, keys), y, strict=True):
            entry = sums.setdefault(key, [0.0, 0.0])
            entry[0] += float(label)
            entry[1] += 1.0
        rates = {k: (s + strength * prior) / (n + strength) for k, (s, n) in sums.items()}
        return cls(rates, prior)

    def predict(self, keys: np.ndarray) -> np.ndarray:
        """Return the rate of each key row (the prior for unseen keys)."""
        return np.array([self.rates.get(tuple(k), self.prior) for k in keys], dtype=np.float64)


def logistic_baseline(
    x: np.ndarray, y: np.ndarray, feature_names: Sequence[str], categorical: Sequence[str],
    seed: int,
) -> Pipeline:
    """Fit a standardized, one-hot logistic regression (missing values imputed)."""
    cats = [i for i, n in enumerate(feature_names) if n in set(categorical)]
    nums = [i for i, n in enumerate(feature_names) if n not in set(categorical)]
    prep = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                                  StandardScaler()), nums),
            ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value=-1,
                                                keep_empty_features=True),
                                  OneHotEncoder(handle_unknown="ignore")), cats),
        ]
    )
    model = make_pipeline(prep, LogisticRegression(C=0.1, max_iter=2000, random_state=seed))
    return model.fit(np.nan_to_num(x, nan=np.nan), y)
