"""The command line: every subcommand is listed and the contract commands answer."""

import orjson
import yaml
from typer.testing import CliRunner

from features.catalog import DEFAULT_CATALOG_DIR
from features.events import KINDS
from omnioffer.cli import app

runner = CliRunner()


def test_help_lists_each_subcommand_with_a_line():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "simulate", "schema", "catalog", "flow", "features", "bench"):
        assert command in result.output


def test_schema_prints_every_event_kind():
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    document = orjson.loads(result.stdout)
    tags = {
        spec["properties"]["kind"]["enum"][0]
        for spec in document["$defs"].values()
        if "kind" in spec.get("properties", {})
    }
    assert tags == set(KINDS)
    one = orjson.loads(runner.invoke(app, ["schema", "--kind", "purchase"]).stdout)
    assert "items" in one["properties"]
    assert runner.invoke(app, ["schema", "--kind", "teleport"]).exit_code == 2


def test_catalog_check_names_the_broken_entry(tmp_path):
    import shutil

    target = tmp_path / "catalog"
    shutil.copytree(DEFAULT_CATALOG_DIR, target)
    assert runner.invoke(app, ["catalog", str(target)]).exit_code == 0
    offers = yaml.safe_load((target / "offers.yaml").read_text())
    offers[0]["cost"] = "free"
    (target / "offers.yaml").write_text(yaml.safe_dump(offers))
    result = runner.invoke(app, ["catalog", str(target)])
    assert result.exit_code == 2
    assert offers[0]["id"] in result.output and "cost" in result.output


def test_simulate_writes_an_event_log_and_ground_truth(tmp_path):
    out = tmp_path / "world"
    result = runner.invoke(
        app, ["simulate", "--customers", "30", "--days", "2", "--seed", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "events.clickstream.jsonl").stat().st_size > 0
    assert (out / "ground_truth.jsonl").read_bytes().count(b"\n") == 30
