"""`omnioffer train` / `omnioffer evaluate` end to end on a small world, and the demo hook."""

import orjson
import pytest
from typer.testing import CliRunner

from models.closed_loop import POLICIES
from models.registry import Registry
from models.workflow import summary
from omnioffer.cli import app
from omnioffer.settings import Settings
from tests.conftest import TEST_HASH_KEY


@pytest.fixture
def env(tmp_path, monkeypatch):
    for name, value in {
        "OMNIOFFER_DATA_DIR": str(tmp_path),
        "OMNIOFFER_CONTACT_HASH_KEY": TEST_HASH_KEY.decode(),
        "OMNIOFFER_CONVERSION_WINDOW_DAYS": "1",
        "OMNIOFFER_OUTCOME_LATENESS_HOURS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    return tmp_path


def test_evaluate_writes_the_contract_keys(small_world, env):
    out = env / "evaluate.json"
    result = CliRunner().invoke(app, [
        "evaluate", "--json", str(out), "--events", str(small_world), "--eval-customers", "120",
        "--eval-days", "6", "--warmup-days", "2", "--bootstrap", "50", "--no-measure",
    ])
    assert result.exit_code == 0, result.output
    doc = orjson.loads(out.read_bytes())
    for model in ("nbo", "channel"):
        assert set(doc[model]) == {"auc", "logloss", "ece"}
    assert set(doc["ope"]) == {"ips", "snips", "dr"}
    assert all(set(v) == {"value", "ci_low", "ci_high"} for v in doc["ope"].values())
    assert set(doc["closed_loop"]) == {"model", "logging", "random", "oracle", "served"}
    assert 0 <= doc["ope_true_value"] <= 1
    # The policy serving would run with this model is evaluated too, against its truth.
    assert set(doc["ope_served"]) == {"ips", "snips", "dr"}
    assert doc["ope_served_true_value"] == doc["closed_loop_expected"]["served"]
    assert doc["served_policy"]["epsilon"] == Settings().explore_epsilon
    assert "worth_of" not in doc["served_policy"]
    assert doc["ope_served_diagnostics"]["rounds"] == doc["ope_diagnostics"]["rounds"]
    assert "served_dr_interval_contains_truth" in doc["targets"]
    assert "served" in result.output  # a closed-loop row and an estimates column
    assert Registry(env / "registry").promoted() == doc["model_version"]
    assert all((env / "runs" / doc["model_version"] / f).exists()
               for f in ("calibration.png", "lift_by_segment.png", "ope_vs_closed_loop.png"))
    # What `train_and_evaluate` (the demo's hook) returns is this document, summarized.
    brief = summary(doc)
    assert brief["model_version"] == "v0001" and set(brief["closed_loop"]) == set(POLICIES)

    # A registered version is evaluated as it is: nothing trained, nothing promoted, and
    # the same figures (its held-out slice rebuilt from the events it names).
    # v0002: the same data and seed, so the same model, registered but not promoted.
    trained = CliRunner().invoke(app, ["train", "--events", str(small_world)])
    assert trained.exit_code == 0, trained.output
    registry = Registry(env / "registry")
    again = env / "again.json"
    result = CliRunner().invoke(app, [
        "evaluate", "--json", str(again), "--model-version", "v0002", "--eval-customers", "120",
        "--eval-days", "6", "--warmup-days", "2", "--bootstrap", "50", "--no-measure",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "evaluated registered v0002 (not promoted" in result.output
    second = orjson.loads(again.read_bytes())
    assert registry.versions() == ["v0001", "v0002"] and registry.promoted() == "v0001"
    assert (second["model_version"], second["trained"]) == ("v0002", "registered before")
    for key in ("heldout", "nbo", "channel", "ope", "closed_loop", "ope_true_value",
                "ope_served"):
        assert second[key] == doc[key], key
    unknown = CliRunner().invoke(app, ["evaluate", "--model-version", "v0009", "--no-measure"])
    assert unknown.exit_code == 2 and "unknown model version 'v0009'" in unknown.output


def test_train_command_registers_a_version(small_world, env):
    result = CliRunner().invoke(app, ["train", "--events", str(small_world), "--promote"])
    assert result.exit_code == 0, result.output
    assert "v0001 promoted" in result.output
    missing = CliRunner().invoke(app, ["train", "--events", str(env / "nothing")])
    assert missing.exit_code == 2 and "no decisions.jsonl" in missing.output


def test_the_served_policy_description_names_its_exploration(catalog):
    from features.arbitration import EpsilonGreedy, Thompson
    from models.workflow import THOMPSON_EVALUATION_DRAWS, served_policy

    greedy = served_policy(Settings(explore_epsilon=0.1), catalog)
    assert greedy["exploration_policy"] == EpsilonGreedy(0.1)
    assert greedy["epsilon"] == 0.1 and greedy["policy"] == "egreedy-0.1"
    thompson = served_policy(Settings(exploration="thompson", thompson_strength=30), catalog)
    assert thompson["exploration_policy"] == Thompson(30, THOMPSON_EVALUATION_DRAWS)
    assert thompson["exploration"] == "thompson" and "epsilon" not in thompson
    assert thompson["draws"] == THOMPSON_EVALUATION_DRAWS
    offer = next(iter(catalog.offers))
    assert thompson["worth_of"](offer) == greedy["worth_of"](offer) > 0


def test_evaluate_evaluates_thompson_sampling_when_serving_runs_it(small_world, env, monkeypatch):
    monkeypatch.setenv("OMNIOFFER_EXPLORATION", "thompson")
    out = env / "evaluate.json"
    result = CliRunner().invoke(app, [
        "evaluate", "--json", str(out), "--events", str(small_world), "--eval-customers", "120",
        "--eval-days", "6", "--warmup-days", "2", "--bootstrap", "50", "--no-measure",
        "--no-promote",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = orjson.loads(out.read_bytes())
    assert doc["served_policy"]["exploration"] == "thompson"
    assert doc["served_policy"]["policy"] == "thompson-100"
    served_truth = doc["closed_loop_expected"]["served"]
    assert doc["ope_served_true_value"] == served_truth
    assert all(0 <= v["value"] <= 1 for v in doc["ope_served"].values())
