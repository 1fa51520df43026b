"""Fixtures for the model tests: small settings, a training set and a trained bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.catalog import load_catalog
from models.bundle import Bundle, train_models
from models.dataset import TrainingSet
from models.train import TrainConfig
from models.workflow import load_training_set
from omnioffer.settings import Settings
from tests.conftest import TEST_HASH_KEY

# Small worlds cover a few days: a one-day conversion window keeps most labels complete.
SMALL_TRAIN = TrainConfig(seed=5, num_threads=1, max_rounds=30, early_stopping_rounds=10,
                          min_data_in_leaf=10)


def small_settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        contact_hash_key=TEST_HASH_KEY,
        conversion_window_days=1,
        outcome_lateness_hours=1,
        seed=5,
    )


@pytest.fixture(scope="session")
def catalog():
    return load_catalog()


@pytest.fixture(scope="session")
def model_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return small_settings(tmp_path_factory.mktemp("models_data"))


@pytest.fixture(scope="session")
def training_set(small_world: Path, model_settings: Settings, catalog) -> TrainingSet:
    return load_training_set(small_world, model_settings, catalog)


@pytest.fixture(scope="session")
def bundle(training_set: TrainingSet) -> Bundle:
    return train_models(training_set, SMALL_TRAIN)
