"""Policies, levers, caps and the catalog are data: reloaded without a restart, bad ones refused."""

from __future__ import annotations

import os
import shutil

import pytest
import yaml

from features.catalog import DEFAULT_CATALOG_DIR
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


def check_on_every_request(client) -> None:
    """Look at the files on every request and reload before answering (serving's reload
    runs in a thread of its own, see the background test below)."""
    policies = client.app.state.engine.policies
    policies.check_interval_s, policies.in_background = 0.0, False


def test_a_changed_lever_takes_effect_without_a_restart(filled_store, make_client, policies_file,
                                                        tmp_path):  # fmt: skip
    settings = Settings(data_dir=tmp_path / "data", policies_path=policies_file,
                        explore_epsilon=0.0)  # fmt: skip
    client = make_client(filled_store, settings=settings)
    check_on_every_request(client)
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


NEW_OFFER = {
    "id": "of-new-winter", "name": "winter special", "kind": "discount", "value": 15,
    "cost": 1.5, "valid_from": "2026-01-01T00:00:00+00:00",
    "valid_to": "2027-12-31T23:59:59+00:00", "category": "dairy",
}  # fmt: skip


def test_a_new_offer_in_the_catalog_is_served_without_a_restart(
    filled_store, make_client, policies_file, tmp_path, customers
):
    catalog = tmp_path / "catalog"
    shutil.copytree(DEFAULT_CATALOG_DIR, catalog)
    settings = Settings(data_dir=tmp_path / "data", policies_path=policies_file,
                        catalog_dir=catalog, explore_epsilon=0.0)  # fmt: skip
    client = make_client(filled_store, settings=settings)
    check_on_every_request(client)
    message = {"customer_id": customers[0],
               "message": {"campaign": "winter", "kind": "marketing", "offer_id": "of-new-winter"}}
    refused = client.post("/v1/channel", json=message)
    assert refused.status_code == 422 and refused.json()["field"] == "message.offer_id"
    _edit(catalog / "offers.yaml", lambda offers: offers.append(NEW_OFFER))
    assert client.post("/v1/channel", json=message).status_code == 200
    # A lever naming it is valid now (it would have been rejected before the catalog had it).
    _edit(policies_file, lambda d: d["levers"]["offers"].update({"of-new-winter": 50.0}))
    body = {"context": {"channel": "web"}, "limit": 1}
    assert client.post("/v1/offers", json=body).json()["offers"][0]["offer_id"] == "of-new-winter"

    # A catalog edit that breaks it is rejected; the offers in force stay.
    broken = {**NEW_OFFER, "id": "of-bad", "category": "no-such"}
    _edit(catalog / "offers.yaml", lambda offers: offers.append(broken))
    reload = client.post("/admin/reload").json()
    assert reload["policies"] == "rejected"
    assert "offers.yaml" in reload["error"] and "no-such" in reload["error"]
    assert client.get("/readyz").json()["policies_error"] == reload["error"]
    assert client.post("/v1/offers", json=body).json()["offers"][0]["offer_id"] == "of-new-winter"


def test_journey_flow_policies_follow_the_file(policies_file, tmp_path):
    from flows.journey_flow import _Runtime

    setup = Settings(data_dir=tmp_path, policies_path=policies_file).journey_setup(
        shared_contacts=False
    )
    context = _Runtime(setup, open_store=lambda: None).context()  # type: ignore[arg-type, return-value]
    context.policies.__self__.check_interval_s = 0.0  # type: ignore[attr-defined]
    assert context.policies().contact.caps.all_channels.day != 9
    _edit(policies_file, lambda d: d["contact"]["caps"]["all_channels"].update({"day": 9}))
    assert context.policies().contact.caps.all_channels.day == 9
    _edit(policies_file, lambda d: d["contact"]["caps"]["all_channels"].update({"day": "nine"}))
    assert context.policies().contact.caps.all_channels.day == 9  # the bad edit is not taken


def test_quiet_hours_that_the_margin_would_stretch_over_the_whole_day_are_refused(
    filled_store, policies_file, tmp_path
):
    _edit(policies_file, lambda d: d["contact"].update(
        {"quiet_hours": {"start": "18:00", "end": "12:00"}}))  # fmt: skip
    settings = Settings(data_dir=tmp_path, policies_path=policies_file, quiet_margin_min=180)
    with pytest.raises(PolicyError, match="cover the whole day"):
        create_app(settings, store=filled_store)
    app = create_app(settings.model_copy(update={"quiet_margin_min": 60}), store=filled_store)
    app.state.engine.decisions.close()


def test_serving_reloads_in_the_background_and_answers_with_the_version_in_force(
    filled_store, make_client, policies_file, tmp_path
):
    settings = Settings(data_dir=tmp_path / "data", policies_path=policies_file,
                        explore_epsilon=0.0)  # fmt: skip
    client = make_client(filled_store, settings=settings)
    policies = client.app.state.engine.policies
    assert policies.in_background
    policies.check_interval_s = 0.0
    body = {"context": {"channel": "web"}, "limit": 1}
    before = client.post("/v1/offers", json=body).json()["offers"][0]["offer_id"]
    assert policies.reloading is None  # nothing changed: no reload started
    _edit(policies_file, lambda d: d["levers"]["offers"].update({"of-xsell-pet": 50.0}))
    loaded = policies.current
    # This request sees the change and starts the reload, but answers with what is in force.
    assert client.post("/v1/offers", json=body).json()["offers"][0]["offer_id"] == before
    assert policies.reloading is not None
    policies.reloading.join(timeout=30)
    assert policies.current is not loaded
    assert client.post("/v1/offers", json=body).json()["offers"][0]["offer_id"] == "of-xsell-pet"
