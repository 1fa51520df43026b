"""`omnioffer train --source kafka` reads the topics whole and trains the model files give."""

from __future__ import annotations

import orjson
from typer.testing import CliRunner

from features.catalog import load_catalog
from features.topics import DECISIONS, EVENT_TOPICS
from models.registry import Registry
from omnioffer.cli import app
from omnioffer.services import create_topics
from simulator import FileSink, KafkaSink, SimulationConfig, simulate
from tests.conftest import TEST_HASH_KEY


def test_training_from_kafka_gives_the_model_training_from_files_gives(
    private_kafka_broker, tmp_path, monkeypatch
):
    bootstrap = private_kafka_broker.bootstrap
    # One partition per topic: the records keep the files' order (ties in time included).
    create_topics(bootstrap, [*EVENT_TOPICS, DECISIONS], partitions=1)
    config = SimulationConfig(customers=120, days=6, seed=11, contact_hash_key=TEST_HASH_KEY)
    simulate(config, load_catalog(), FileSink(tmp_path / "files"))
    to_kafka = KafkaSink(bootstrap)
    simulate(config, load_catalog(), to_kafka)
    assert to_kafka.sent > 0 and to_kafka.failed == 0
    for name, value in {
        "OMNIOFFER_DATA_DIR": str(tmp_path / "data"),
        "OMNIOFFER_CONTACT_HASH_KEY": TEST_HASH_KEY.decode(),
        "OMNIOFFER_CONVERSION_WINDOW_DAYS": "1",
        "OMNIOFFER_OUTCOME_LATENESS_HOURS": "1",
        "OMNIOFFER_DECISION_LOG_TIMEOUT_S": "3",
    }.items():
        monkeypatch.setenv(name, value)

    from_files = CliRunner().invoke(app, ["train", "--events", str(tmp_path / "files")])
    from_kafka = CliRunner().invoke(app, ["train", "--source", "kafka", "--bootstrap", bootstrap])

    assert from_files.exit_code == 0, from_files.output
    assert from_kafka.exit_code == 0, from_kafka.output
    registry = Registry(tmp_path / "data" / "registry")
    assert registry.versions() == ["v0001", "v0002"]
    files, kafka = registry.path("v0001"), registry.path("v0002")
    for artifact in ("nbo.txt", "channel.txt", "nbo.calibration.json"):
        assert (files / artifact).read_bytes() == (kafka / artifact).read_bytes(), artifact
    meta = orjson.loads((kafka / "metadata.json").read_bytes())
    assert meta["kafka_bootstrap"] == bootstrap and "events_dir" not in meta
    assert meta["data_range"] == registry.metadata("v0001")["data_range"]

    down = CliRunner().invoke(app, ["train", "--source", "kafka", "--bootstrap", "127.0.0.1:9"])
    assert down.exit_code == 2 and "cannot train" in down.output
