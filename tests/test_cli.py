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


def test_plain_serve_after_demo_serves_the_demos_store(tmp_path, monkeypatch):
    import uvicorn

    from features.store import open_store

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda api, **_: served.append(api))
    monkeypatch.setenv("OMNIOFFER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("OMNIOFFER_SQLITE_PATH", raising=False)
    monkeypatch.delenv("OMNIOFFER_EVENTS_DIR", raising=False)
    monkeypatch.delenv("OMNIOFFER_STORE", raising=False)
    demo_store = tmp_path / "demo" / "online.sqlite3"
    demo_store.parent.mkdir()
    open_store("sqlite", sqlite_path=demo_store).close()

    assert runner.invoke(app, ["serve"]).exit_code == 0
    assert served[-1].state.engine.store.path == str(demo_store)
    served[-1].state.engine.decisions.close()
    # Once a store of its own exists at the default path, plain serve uses that.
    open_store("sqlite", sqlite_path=tmp_path / "online.sqlite3").close()
    assert runner.invoke(app, ["serve"]).exit_code == 0
    assert served[-1].state.engine.store.path == str(tmp_path / "online.sqlite3")
    served[-1].state.engine.decisions.close()
