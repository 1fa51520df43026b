"""Policies, levers and caps are data: reloaded without a restart, invalid files rejected."""

from __future__ import annotations

import os
import shutil

import pytest
import yaml

from features.policy import DEFAULT_POLICIES_PATH, PolicyError
from omnioffer.settings import Settings
from serving.app import create_app
from tests.serving.conftest import offers_body


@pytest.fixture
def policies_file(tmp_path):
    path = tmp_path / "policies.yaml"
    shutil.copy(DEFAULT_POLICIES_PATH, path)
    return path


def _edit(path, change) -> None:
    document = yaml.safe_load(path.read_text())
    change(document)
    stat = path.stat()
    path.write_text(yaml.safe_dump(document))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_a_changed_lever_takes_effect_without_a_restart(filled_store, make_client, policies_file,
                                                        tmp_path):  # fmt: skip
    settings = Settings(data_dir=tmp_path / "data", policies_path=policies_file,
                        explore_epsilon=0.0)  # fmt: skip
    client = make_client(filled_store, settings=settings)
    client.app.state.engine.policies.check_interval_s = 0.0  # check the file on every request
    body = {"context": {"channel": "web"}, "limit": 1}
    before = client.post("/v1/offers", json=body).json()["offers"][0]["offer_id"]
    assert before != "of-xsell-pet"
    _edit(policies_file, lambda d: d["levers"]["offers"].update({"of-xsell-pet": 50.0}))
    after = client.post("/v1/offers", json=body).json()["offers"][0]["offer_id"]
    assert after == "of-xsell-pet"
    assert 'omnioffer_serve_policy_reloads_total{result="reloaded"} 1.0' in client.get(
        "/metrics"
    ).text


def test_an_invalid_file_is_rejected_and_the_last_good_policies_stay(
    filled_store, make_client, policies_file, tmp_path, customers
):
    settings = Settings(data_dir=tmp_path / "data", policies_path=policies_file)
    client = make_client(filled_store, settings=settings)
    _edit(policies_file, lambda d: d["contact"]["caps"]["all_channels"].update({"day": "two"}))
    reload = client.post("/admin/reload").json()
    assert reload["policies"] == "rejected"
    assert "entry 'contact.caps.all_channels', field 'day'" in reload["error"]
    assert str(policies_file) in reload["error"]
    assert client.get("/readyz").json()["policies_error"] == reload["error"]
    answer = client.post("/v1/offers", json=offers_body(customer_id=customers[0]))
    assert answer.status_code == 200 and answer.json()["offers"]
    _edit(policies_file, lambda d: d["contact"]["caps"]["all_channels"].update({"day": 2}))
    assert client.post("/admin/reload").json() == {"policies": "reloaded", "error": None}


def test_serving_refuses_to_start_on_an_invalid_policies_file(filled_store, policies_file,
                                                              tmp_path):  # fmt: skip
    _edit(policies_file, lambda d: d["levers"]["offers"].update({"of-nope": 1.0}))
    settings = Settings(data_dir=tmp_path, policies_path=policies_file)
    with pytest.raises(PolicyError, match=r"entry 'levers\.offers', field 'of-nope'"):
        create_app(settings, store=filled_store)
