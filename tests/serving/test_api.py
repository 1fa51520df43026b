"""The HTTP API: happy paths, bad inputs, unknown ids, sizes, docs and metrics."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest

from features.catalog import load_catalog
from omnioffer.settings import Settings
from tests.serving.conftest import channel_body, offers_body

CATALOG = load_catalog()


@pytest.fixture
def client(filled_store, make_client):
    return make_client(filled_store)


def test_offers_for_a_known_customer_are_ranked_with_reasons(client, customers):
    response = client.post("/v1/offers", json=offers_body(customer_id=customers[0]))
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "heuristic-v1"
    assert body["degraded"] is False and body["cold_start"] is False
    assert body["profile_id"] == f"customer_id:{customers[0]}"
    assert body["decision_id"]
    assert len(body["offers"]) == 3
    for position, offer in enumerate(body["offers"]):
        assert set(offer) == {"offer_id", "name", "kind", "score", "probability", "propensity",
                              "position", "reasons"}  # fmt: skip
        assert offer["position"] == position
        assert offer["reasons"] and all(isinstance(r, str) for r in offer["reasons"])
        assert 0 < offer["propensity"] <= 1
    assert len({o["offer_id"] for o in body["offers"]}) == 3


def test_an_unknown_visitor_gets_popular_offers_for_the_context(client):
    web = client.post("/v1/offers", json={"anonymous_id": "c-81f", "context": {"channel": "web",
                      "page": "home"}, "limit": 5}).json()  # fmt: skip
    assert web["cold_start"] is True and web["degraded"] is False
    assert len(web["offers"]) == 5
    app = client.post("/v1/offers", json={"context": {"channel": "app"}, "limit": 50}).json()
    ids = {o["offer_id"] for o in app["offers"]}
    assert "of-pts-app-install" in ids
    assert not ids & {"of-pts-web-pay", "of-free-delivery-web", "of-coffee-corner"}


def test_store_context_limits_offers_to_that_store(client):
    body = {"context": {"channel": "store", "store_id": "st-007"}, "limit": 50}
    ids = {o["offer_id"] for o in client.post("/v1/offers", json=body).json()["offers"]}
    assert {"of-coffee-corner", "of-hyper-household"} <= ids  # st-007: hypermarket + coffee
    body["context"]["store_id"] = "st-001"  # supermarket without coffee corner
    ids = {o["offer_id"] for o in client.post("/v1/offers", json=body).json()["offers"]}
    assert not ids & {"of-coffee-corner", "of-hyper-household", "of-conv-snacks"}
    assert "of-super-bakery" in ids


def test_channel_choice_for_a_customer(client, customers):
    response = client.post("/v1/channel", json=channel_body(customers[1], offer_id="of-disc-dairy",
                           urgency="low"))  # fmt: skip
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"channel", "send_at", "alternatives", "reason", "suppressed_by",
                         "model_choice", "model_version", "decision_id", "degraded"}  # fmt: skip
    assert body["channel"] in {"email", "push", "sms", "messenger", "none"}
    assert {a["channel"] for a in body["alternatives"]} == {"email", "push", "sms", "messenger"}
    if body["channel"] == "none":
        assert body["suppressed_by"]
    else:
        assert body["send_at"] and body["suppressed_by"] is None and body["reason"]


def test_allowed_channels_are_honoured_and_compared_with_the_model(client, customers):
    for customer in customers[:20]:
        body = client.post("/v1/channel", json=channel_body(
            customer, campaign=f"c-{customer}", allowed_channels=["email"])).json()  # fmt: skip
        assert body["channel"] in {"email", "none"}
        choice = body["model_choice"]
        if choice["channel"] not in (None, "email"):
            assert choice["allowed"] is False and choice["matches"] is False
            if body["channel"] == "email":
                assert "does not allow" in body["reason"]


def test_a_second_send_of_the_same_campaign_is_suppressed(client, customers):
    consented = next(
        c for c in customers
        if client.get(f"/v1/profiles/{c}").json()["features"]["consent_email"] is True
    )
    first = client.post("/v1/channel", json=channel_body(
        consented, kind="transactional", urgency="immediate", allowed_channels=["email"]))
    assert first.json()["channel"] == "email"
    # The first decision wrote the contact log, so the duplicate rule sees it at once.
    again = client.post("/v1/channel", json=channel_body(consented, allowed_channels=["email"]))
    assert again.json()["channel"] == "none"
    assert again.json()["suppressed_by"] == "duplicate_message"
    recent = client.get(f"/v1/profiles/{consented}").json()["recent_contacts"]
    assert [c["campaign"] for c in recent] == ["spring"]


def test_a_retried_message_with_its_id_is_never_sent_twice(client, customers):
    consented = [
        c for c in customers
        if client.get(f"/v1/profiles/{c}").json()["features"]["consent_email"] is True
    ][:2]  # fmt: skip
    who, other = consented

    def receipt(customer: str, **message) -> dict:
        return client.post("/v1/channel", json=channel_body(
            customer, campaign="order-updates", kind="transactional", urgency="immediate",
            allowed_channels=["email"], **message)).json()  # fmt: skip

    # Without an id, order updates of one campaign may repeat in their channel.
    assert receipt(who)["channel"] == receipt(who)["channel"] == "email"
    first = receipt(other, message_id="order-7/receipt")
    assert first["channel"] == "email"
    retry = receipt(other, message_id="order-7/receipt")
    assert (retry["channel"], retry["suppressed_by"]) == ("none", "duplicate_message")
    # In another campaign, or as another kind of message, the same id is the same message.
    elsewhere = client.post("/v1/channel", json=channel_body(
        other, campaign="other", kind="marketing", allowed_channels=["email"],
        message_id="order-7/receipt")).json()  # fmt: skip
    assert (elsewhere["channel"], elsewhere["suppressed_by"]) == ("none", "duplicate_message")
    assert receipt(other, message_id="order-8/receipt")["channel"] == "email"


def test_the_profile_endpoint_shows_personas(client, customers):
    response = client.get(f"/v1/profiles/customer_id:{customers[0]}")
    assert response.status_code == 200
    body = response.json()
    assert set(body["personas"]) == {"discount_hunter", "newcomer", "toucher", "social",
                                     "procrastinator"}  # fmt: skip
    assert f"customer_id:{customers[0]}" in body["identifiers"]
    assert client.get(f"/v1/profiles/{customers[0]}").json()["profile_id"] == body["profile_id"]


@pytest.mark.parametrize("value", [b"{not json", b"[]", b'{"tier": 3}'])
def test_an_unreadable_stored_profile_is_shown_and_never_sent_to(filled_store, make_client,
                                                                 customers, value):  # fmt: skip
    from features.store import ProfileWrite, StoreBatch

    profile_id = f"customer_id:{customers[0]}"
    filled_store.write(StoreBatch(profiles=[ProfileWrite(profile_id, value)]))
    client = make_client(filled_store)
    shown = client.get(f"/v1/profiles/{profile_id}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["unreadable"].startswith("the stored profile cannot be decoded")
    assert profile_id in shown.json()["identifiers"]
    offers = client.post("/v1/offers", json=offers_body(customer_id=customers[0]))
    assert offers.status_code == 200 and offers.json()["degraded"] and offers.json()["offers"]
    channel = client.post("/v1/channel", json=channel_body(customers[0]))
    assert channel.status_code == 200
    assert channel.json()["channel"] == "none"
    assert channel.json()["suppressed_by"] == "profile_unreadable"
    assert client.get(f"/v1/profiles/customer_id:{customers[1]}").json()["unreadable"] is None


@pytest.mark.parametrize(
    ("path", "body", "field", "text"),
    [
        ("/v1/offers", {"context": {"channel": "web"}, "limit": "5"}, "limit",
         "limit: Expected `int`, got `str`"),
        ("/v1/offers", {"context": {"channel": "web"}, "limit": 0}, "limit", "limit: Expected"),
        ("/v1/offers", {"context": {"channel": "tv"}}, "context.channel", "context.channel"),
        ("/v1/offers", {"limit": 3}, "context", "context: required field is missing"),
        ("/v1/offers", {"customer_id": 5, "context": {"channel": "web"}}, "customer_id",
         "customer_id: Expected `str | null`, got `int`"),
        ("/v1/offers", {"custmer_id": "x", "context": {"channel": "web"}}, "custmer_id",
         "custmer_id: unknown field"),
        ("/v1/offers", {"context": {"channel": "store", "store_id": "st-999"}},
         "context.store_id", "unknown store 'st-999'"),
        ("/v1/offers", [1, 2], "(body)", "Expected `object`, got `array`"),
        ("/v1/channel", {"message": {"campaign": "c", "kind": "marketing"}}, "customer_id",
         "at least one identifier"),
        ("/v1/channel", {"customer_id": "c", "message": {"campaign": "c", "kind": "promo"}},
         "message.kind", "message.kind"),
        ("/v1/channel", {"customer_id": "c", "message": {"campaign": "c", "kind": "marketing",
         "allowed_channels": []}}, "message.allowed_channels", "length >= 1"),
        ("/v1/channel", {"customer_id": "c", "message": {"campaign": "c", "kind": "marketing",
         "urgency": 3}}, "message.urgency", "message.urgency"),
    ],
)  # fmt: skip
def test_bad_requests_get_422_naming_the_field(client, path, body, field, text):
    response = client.post(path, json=body)
    assert response.status_code == 422
    error = response.json()
    assert error["field"] == field
    assert text in error["error"]
    assert error["detail"][0]["loc"][0] == "body"


@pytest.mark.parametrize("content", [b"", b"   ", b"{", b"not json", b"\xff\xfe"])
@pytest.mark.parametrize("path", ["/v1/offers", "/v1/channel"])
def test_empty_or_malformed_bodies_get_422(client, path, content):
    response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["field"] == "(body)"
    assert response.json()["error"].startswith("(body): ")


def test_huge_bodies_are_refused_with_413(filled_store, make_client, tmp_path):
    client = make_client(filled_store, settings=Settings(data_dir=tmp_path, max_request_bytes=1000))
    big = json.dumps({"anonymous_id": "a", "context": {"channel": "web", "page": "x" * 5000}})
    response = client.post("/v1/offers", content=big)
    assert response.status_code == 413
    assert "the limit is 1,000 bytes" in response.json()["error"]

    def chunks():  # no Content-Length: the limit is counted while reading
        for _ in range(20):
            yield b" " * 100

    response = client.post("/v1/channel", content=chunks())
    assert response.status_code == 413


def test_unknown_ids_on_support_endpoints(client):
    missing = client.get("/v1/profiles/customer_id:nobody")
    assert missing.status_code == 404
    assert "no profile for 'customer_id:nobody'" in missing.json()["error"]
    bad = client.get("/v1/profiles/shoe_size:42")
    assert bad.status_code == 422 and bad.json()["field"] == "id"
    erased = client.delete("/v1/customers/nobody")
    assert erased.status_code == 200
    assert erased.json()["removed"]["profiles"] == 0


def test_support_and_admin_endpoints_need_the_admin_token_when_one_is_set(
    filled_store, make_client, customers, tmp_path
):
    settings = Settings(data_dir=tmp_path / "data", admin_token="s3cret")
    client = make_client(filled_store, settings=settings)
    who = customers[0]
    calls = [("GET", f"/v1/profiles/{who}"), ("DELETE", f"/v1/customers/{who}"),
             ("POST", "/admin/reload"), ("GET", "/v1/erasures/er-1")]  # fmt: skip
    for method, path in calls:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            refused = client.request(method, path, headers=headers)
            assert refused.status_code == 401, (method, path, headers)
            assert refused.headers["www-authenticate"] == "Bearer"
            assert refused.json()["field"] == "authorization"
            assert "admin_token" in refused.json()["error"]
    assert client.get(f"/v1/profiles/{who}").status_code == 401  # nothing was erased above
    good = {"Authorization": "Bearer s3cret"}
    assert client.get(f"/v1/profiles/{who}", headers=good).status_code == 200
    reloaded = client.post("/admin/reload", headers=good).json()
    assert reloaded["policies"] in {"unchanged", "reloaded"}
    assert client.delete(f"/v1/customers/{who}", headers=good).json()["removed"]["profiles"] == 1
    # decisions, health and metrics stay open: the website and the scraper have no token
    assert client.post("/v1/offers", json=offers_body(customer_id=who)).status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200
    schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    with pytest.raises(ValueError, match="admin_token is empty"):  # a secret that did not mount
        Settings(data_dir=tmp_path, admin_token=" ")


def test_erasure_status_is_for_queued_erasures_only(client):
    answer = client.get("/v1/erasures/er-1")
    assert answer.status_code == 404
    assert "decision_erasure=inline" in answer.json()["error"]


def test_unknown_customer_on_the_channel_endpoint_is_answered(client):
    body = client.post("/v1/channel", json=channel_body("cu-unknown")).json()
    assert body["channel"] == "none" and body["suppressed_by"] == "consent_missing"
    receipt = client.post("/v1/channel", json=channel_body("cu-unknown", kind="transactional"))
    assert receipt.json()["channel"] != "none"


def test_health_readiness_docs_and_metrics(client, customers):
    assert client.get("/healthz").json() == {"status": "ok", "worker": os.getpid()}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model_version"] == "heuristic-v1"
    schema = client.get("/openapi.json").json()
    assert {"/v1/offers", "/v1/channel", "/v1/profiles/{id}", "/v1/customers/{id}"} <= set(
        schema["paths"]
    )
    assert "OffersRequest" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200
    client.post("/v1/offers", json=offers_body(customer_id=customers[0]))
    client.post("/v1/offers", json={"context": {"channel": "web"}, "limit": "x"})
    text = client.get("/metrics").text
    assert 'omnioffer_serve_request_seconds_count{endpoint="/v1/offers"} 2.0' in text
    assert 'omnioffer_serve_errors_total{endpoint="/v1/offers",kind="client"} 1.0' in text
    assert 'omnioffer_serve_decisions_total{channel="web"' in text
    assert 'omnioffer_serve_model_info{version="heuristic-v1"} 1.0' in text


def test_a_marketing_message_about_an_offer_the_customer_cannot_use_is_suppressed(
    filled_store, make_client, customers
):
    client = make_client(filled_store)
    unknown = client.post("/v1/channel", json=channel_body(customers[0], offer_id="of-nope"))
    assert unknown.status_code == 422 and unknown.json()["field"] == "message.offer_id"
    assert "unknown offer 'of-nope'" in unknown.json()["error"]

    members = CATALOG.offers["of-disc25-coffee_tea"].tiers
    tiers = {c: client.get(f"/v1/profiles/{c}").json()["features"].get("tier") for c in customers}
    outsider = next(c for c, tier in tiers.items() if tier not in members)
    member = next(c for c, tier in tiers.items() if tier in members)
    cases = [(outsider, "marketing", True), (outsider, "transactional", False),
             (member, "marketing", False)]  # fmt: skip
    for customer, kind, blocked in cases:
        body = client.post("/v1/channel", json=channel_body(
            customer, offer_id="of-disc25-coffee_tea", kind=kind, campaign=f"c-{kind}")).json()
        assert (body["suppressed_by"] == "offer_tier") is blocked, (customer, kind, body)
        if blocked:
            assert body["channel"] == "none"
            assert {a["suppressed_by"] for a in body["alternatives"]} == {"offer_tier"}

    metrics = client.get("/metrics").text
    assert ('omnioffer_serve_decisions_total{channel="none",offer="of-disc25-coffee_tea",'
            'surface="channel"}') in metrics  # fmt: skip
    after = make_client(filled_store, clock=lambda: datetime(2028, 1, 5, 12, tzinfo=UTC))
    body = after.post("/v1/channel", json=channel_body(member, offer_id="of-disc-dairy")).json()
    assert body["channel"] == "none" and body["suppressed_by"] == "offer_not_valid"


def test_a_send_waits_an_hour_past_the_quiet_hours_for_daylight_saving(
    recomputed, make_client, customers, tmp_path
):
    """Quiet hours 21:00-08:00; the offset is the last event's. At 08:30 by that offset the
    customer's clock may read 07:30 (a change since): with the 60-minute margin the message
    waits for 09:00, without it, it goes now."""
    from features.policy import contact_facts, local_zone
    from features.profile import decode_profile, profile_features
    from features.store import open_store
    from flows.rebuild import write_to_store

    def client_with(margin: int, clock):
        store = open_store("sqlite", sqlite_path=tmp_path / f"margin-{margin}.sqlite3")
        write_to_store(recomputed, store)
        settings = Settings(data_dir=tmp_path / f"data-{margin}", quiet_margin_min=margin)
        return make_client(store, settings=settings, clock=clock)

    now = [datetime(2026, 3, 8, 12, tzinfo=UTC)]
    plain, wide = client_with(0, lambda: now[0]), client_with(60, lambda: now[0])
    quiet_channels = ["push", "sms", "messenger"]
    checked = 0
    for customer in customers:
        raw = recomputed.profiles[f"customer_id:{customer}"]
        facts = contact_facts(profile_features(decode_profile(raw), int(now[0].timestamp())))
        zone = local_zone(facts.tz_offset_min)
        now[0] = datetime(2026, 3, 8, 8, 30, tzinfo=zone).astimezone(UTC)
        body = channel_body(customer, campaign=f"dst-{customer}", urgency="high",
                            allowed_channels=quiet_channels)  # fmt: skip
        sent = plain.post("/v1/channel", json=body).json()
        if sent["channel"] not in quiet_channels:
            continue  # no consent on a channel with quiet hours
        assert datetime.fromisoformat(sent["send_at"]) == now[0]
        waited = wide.post("/v1/channel", json=body).json()
        assert waited["channel"] in quiet_channels
        local = datetime.fromisoformat(waited["send_at"]).astimezone(zone)
        assert (local.hour, local.minute) == (9, 0)
        assert "quiet hours" in waited["reason"]
        checked += 1
    assert checked >= 3


def test_a_message_deferred_past_its_offer_end_is_suppressed(make_client, tmp_path):
    from datetime import timedelta

    from features.events import Consent, Identifiers, PageView
    from features.pipeline import recompute
    from features.store import open_store
    from flows.rebuild import write_to_store

    offer = CATALOG.offers["of-disc-dairy"]
    evening = offer.valid_to.replace(hour=21, minute=30, second=0)  # quiet hours (UTC+0 here)
    ids, day = Identifiers(customer_id="cu-late"), evening - timedelta(days=1)
    events = [PageView(event_id="pv", event_time=day, source="web", ids=ids, page="home")]
    events += [Consent(event_id=f"c-{c}", event_time=day, source="web", ids=ids, channel=c,
                       granted=True) for c in ("sms", "push")]  # fmt: skip
    store = open_store("sqlite", sqlite_path=tmp_path / "late.sqlite3")
    write_to_store(recompute(events), store)
    body = channel_body("cu-late", offer_id=offer.id, allowed_channels=["sms", "push"])
    late = make_client(store, clock=lambda: evening).post("/v1/channel", json=body).json()
    assert late["channel"] == "none" and late["suppressed_by"] == "offer_not_valid"
    noon = make_client(store, clock=lambda: evening.replace(hour=12))
    assert noon.post("/v1/channel", json=body).json()["channel"] in {"sms", "push"}


def test_a_customer_whose_time_zone_was_never_seen_gets_the_policy_default(
    make_client, tmp_path
):
    """Only a consent on record (a CRM import): no page view or purchase gave an offset."""
    import yaml

    from features.events import Consent, Identifiers
    from features.pipeline import recompute
    from features.policy import DEFAULT_POLICIES_PATH
    from features.store import open_store
    from flows.rebuild import write_to_store

    consent = Consent(event_id="c-1", event_time=datetime(2026, 3, 1, 10, tzinfo=UTC),
                      source="crm", ids=Identifiers(customer_id="cu-crm"), channel="sms",
                      granted=True)  # fmt: skip
    late = datetime(2026, 3, 8, 21, 30, tzinfo=UTC)  # 22:30 in Berlin, 21:30 in London

    def send_at(zone: str | None, at: datetime = late) -> dict:
        document = yaml.safe_load(DEFAULT_POLICIES_PATH.read_text())
        if zone is not None:
            document["contact"]["default_timezone"] = zone
        name = f"{zone.replace('/', '-') if zone else 'default'}-{at:%d}"
        path = tmp_path / f"policies-{name}.yaml"
        path.write_text(yaml.safe_dump(document))
        store = open_store("sqlite", sqlite_path=tmp_path / f"{name}.sqlite3")
        write_to_store(recompute([consent]), store)
        settings = Settings(data_dir=tmp_path / f"data-{name}", policies_path=path)
        client = make_client(store, settings=settings, clock=lambda: at)
        body = channel_body("cu-crm", kind="transactional", urgency="high", campaign="receipt",
                            allowed_channels=["sms"])  # fmt: skip
        return client.post("/v1/channel", json=body).json()

    berlin, utc = send_at("Europe/Berlin"), send_at(None)
    assert berlin["channel"] == utc["channel"] == "sms"
    # Quiet until 08:00 plus the 60-minute daylight-saving margin: 09:00 where assumed.
    assert berlin["send_at"].startswith("2026-03-09T08:00")  # 09:00 in Berlin
    assert "Europe/Berlin time (the customer's own time zone is not known)" in berlin["reason"]
    assert utc["send_at"].startswith("2026-03-09T09:00")
    assert "UTC time" in utc["reason"]
    # The night Berlin's clocks go forward: the reason reads the zone's clock at the send.
    spring = send_at("Europe/Berlin", datetime(2026, 3, 28, 21, 30, tzinfo=UTC))
    assert spring["send_at"].startswith("2026-03-29T08:00")
    assert "to 10:00 Europe/Berlin time" in spring["reason"]


def test_an_unknown_default_time_zone_is_refused(tmp_path):
    from features.policy import DEFAULT_POLICIES_PATH, PolicyError, load_policies

    path = tmp_path / "policies.yaml"
    shipped = DEFAULT_POLICIES_PATH.read_text()
    assert "default_timezone: UTC" in shipped
    path.write_text(shipped.replace("default_timezone: UTC", "default_timezone: Mars/Olympus"))
    with pytest.raises(PolicyError, match="field 'default_timezone': unknown time zone "
                       "'Mars/Olympus'"):  # fmt: skip
        load_policies(path)
