"""Training: a time split, calibrated models, and byte-identical files for the same seed."""

import numpy as np
import pytest

from models import metrics
from models.bundle import artifacts, train_models
from models.calibration import Calibrator
from models.train import TrainConfig, time_split
from tests.models.conftest import SMALL_TRAIN


def test_same_seed_and_data_give_identical_model_files(training_set, bundle):
    again = artifacts(train_models(training_set, SMALL_TRAIN))
    first = artifacts(bundle)
    assert set(first) == {"nbo.txt", "nbo.calibration.json", "channel.txt",
                          "channel.calibration.json"}
    for name, data in first.items():
        assert again[name] == data, name


def test_split_is_by_time_and_leaves_a_test_slice():
    times = np.repeat(np.arange(100), 3)
    split = time_split(times, 0.7, 0.15)
    assert times[split.train].max() < times[split.calibration].min()
    assert times[split.calibration].max() < times[split.test].min()
    assert len(split.train) + len(split.calibration) + len(split.test) == len(times)


def test_models_predict_probabilities_on_the_held_out_slice(training_set, bundle):
    x, y, _ = training_set.nbo()
    p = bundle.nbo.predict(x[bundle.nbo_split.test])
    assert np.all((p > 0) & (p < 1))
    assert metrics.logloss(p, y[bundle.nbo_split.test]) < 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_share": 0.9, "calibration_share": 0.1}, "must be < 1 to leave a test slice"),
        ({"train_share": 0.0}, "must be within \\(0, 1\\)"),
    ],
)
def test_bad_split_shares_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_calibration_is_monotone_and_round_trips():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 0.3, 4000)
    y = (rng.uniform(size=4000) < p * 0.5).astype(int)
    for method in ("platt", "isotonic"):
        cal = Calibrator.fit(p, y, method)
        grid = np.linspace(0.01, 0.3, 50)
        assert np.all(np.diff(cal.apply(grid)) >= 0)
        assert metrics.ece(cal.apply(p), y) < metrics.ece(p, y)
        assert Calibrator.from_json(cal.to_json()) == cal
    with pytest.raises(ValueError, match="method must be"):
        Calibrator.fit(p, y, "magic")  # type: ignore[arg-type]


def test_ece_of_a_perfect_forecast_is_zero():
    assert metrics.ece([0.0, 0.0, 1.0, 1.0], [0, 0, 1, 1], bins=2) == 0.0
    with pytest.raises(ValueError, match="p and y must be 1-D of equal length"):
        metrics.ece([0.1], [0, 1])
