import orjson
import pytest

from features.events import KINDS, PageView, Purchase, Refund
from features.validation import Rejection, validate

KEY = b"test-key"
GOOD = {
    "kind": "page_view",
    "event_id": "e-1",
    "event_time": "2026-03-02T10:15:00+01:00",
    "source": "web",
    "ids": {"anonymous_id": "a-1"},
    "page": "home",
}


def with_(**changes):
    event = dict(GOOD)
    for name, value in changes.items():
        if value is ...:
            event.pop(name)
        else:
            event[name] = value
    return orjson.dumps(event)


def test_valid_event_decodes_to_its_kind():
    event = validate(orjson.dumps(GOOD), key=KEY)
    assert isinstance(event, PageView)
    assert event.ids.anonymous_id == "a-1"
    assert event.event_time.utcoffset().total_seconds() == 3600


BAD = [
    (with_(event_id=...), "missing", "event_id"),
    (with_(ids={"anonymous_id": "a", "device_id": 5}), "wrong_type", "ids.device_id"),
    (with_(page=7), "wrong_type", "page"),
    (with_(event_time="2026-03-02T10:15:00"), "bad_time", "event_time"),
    (with_(event_time="yesterday"), "bad_time", "event_time"),
    (with_(kind="teleport"), "unknown_kind", "kind"),
    (with_(kind=...), "missing", "kind"),
    (with_(source="fax"), "invalid_value", "source"),
    (with_(page="nowhere"), "invalid_value", "page"),
    (with_(ids={}), "no_identifier", "ids"),
    (with_(schema_version=99), "invalid_value", "schema_version"),
    (b"{not json", "malformed_json", "$"),
    (b"[1, 2]", "not_an_object", "$"),
    (with_(page="home" + " " * 70_000), "oversize", "$"),
]


@pytest.mark.parametrize(("raw", "code", "field"), BAD)
def test_each_malformed_kind_is_rejected_with_its_reason(raw, code, field):
    result = validate(raw, key=KEY)
    assert isinstance(result, Rejection)
    assert (result.reason.code, result.reason.field) == (code, field)
    assert field.split(".")[-1] in result.reason.message or field == "$"


def test_reason_messages_say_what_arrived():
    result = validate(with_(page=7), key=KEY)
    assert "got `int`" in result.reason.message
    result = validate(with_(kind="teleport"), key=KEY)
    assert "'teleport'" in result.reason.message


def test_in_store_purchase_needs_a_store():
    purchase = {
        **GOOD,
        "kind": "purchase",
        "source": "store",
        "order_id": "o-1",
        "channel": "store",
        "payment_channel": "store",
        "items": [{"product_id": "p", "category": "dairy", "price": 1.0}],
        "total": 1.0,
    }
    purchase.pop("page")
    rejected = validate(orjson.dumps(purchase), key=KEY)
    assert (rejected.reason.code, rejected.reason.field) == ("missing", "store_id")
    accepted = validate(orjson.dumps({**purchase, "store_id": "st-001"}), key=KEY)
    assert isinstance(accepted, Purchase)


def test_identity_link_needs_two_identifiers():
    link = {**GOOD, "kind": "identity_link", "reason": "login"}
    link.pop("page")
    assert validate(orjson.dumps(link), key=KEY).reason.code == "inconsistent"
    link["ids"] = {"anonymous_id": "a-1", "customer_id": "cu-1"}
    assert validate(orjson.dumps(link), key=KEY).kind == "identity_link"


def test_identity_unlink_needs_the_customer_and_an_identifier_to_detach():
    unlink = {**GOOD, "kind": "identity_unlink", "reason": "wrong_link"}
    unlink.pop("page")
    unlink["ids"] = {"anonymous_id": "a-1", "device_id": "d-1"}  # whose? no customer named
    assert validate(orjson.dumps(unlink), key=KEY).reason.code == "inconsistent"
    unlink["ids"] = {"customer_id": "cu-1"}
    assert validate(orjson.dumps(unlink), key=KEY).reason.field == "ids"
    unlink["ids"] = {"anonymous_id": "a-1", "customer_id": "cu-1"}
    assert validate(orjson.dumps(unlink), key=KEY).kind == "identity_unlink"


def test_raw_contacts_are_hashed_on_arrival_and_redacted_in_rejections():
    raw = with_(ids={"email": "Ann.Lee@Example.com", "phone": "+49 170 1234567"})
    event = validate(raw, key=KEY)
    assert event.ids.email is None and event.ids.phone is None
    assert event.ids.email_hash.startswith("em:") and event.ids.phone_hash.startswith("ph:")
    encoded = orjson.dumps(orjson.loads(raw))
    assert b"Ann.Lee" in encoded  # the input had it ...
    rejected = validate(with_(page=1, ids={"email": "Ann.Lee@Example.com"}), key=KEY)
    assert b"Ann.Lee" not in rejected.raw  # ... the dead-letter copy does not


def test_every_kind_has_a_schema_and_round_trips():
    from features.events import decode_event, encode_event, json_schemas

    schema = json_schemas()
    tags = {
        spec["properties"]["kind"]["enum"][0]
        for spec in schema["$defs"].values()
        if "kind" in spec.get("properties", {})
    }
    assert tags == set(KINDS)
    event = validate(orjson.dumps(GOOD), key=KEY)
    assert decode_event(encode_event(event)) == event


def test_times_far_outside_the_service_life_are_bad_times():
    for when in ("9999-12-31T23:30:00-01:00", "1970-01-02T00:00:00+00:00"):
        result = validate(with_(event_time=when), key=KEY)
        assert (result.reason.code, result.reason.field) == ("bad_time", "event_time")


def test_hashed_contact_fields_refuse_raw_contacts():
    result = validate(with_(ids={"email_hash": "ann@example.com"}), key=KEY)
    assert (result.reason.code, result.reason.field) == ("invalid_value", "ids.email_hash")
    assert b"ann@example.com" not in result.raw


def test_dead_letter_copies_lose_contacts_in_any_field():
    raw = with_(page=1, query="call ann.lee@example.com or +49 170 1234567")
    result = validate(raw, key=KEY)
    assert b"ann.lee@example.com" not in result.raw and b"1234567" not in result.raw


def test_a_refund_names_its_order_and_what_it_voids():
    refund = {**GOOD, "kind": "refund", "source": "store", "order_id": "o-1", "channel": "store",
              "amount": 4.5, "offers_voided": ["of-a"]}  # fmt: skip
    refund.pop("page")
    accepted = validate(orjson.dumps(refund), key=KEY)
    assert isinstance(accepted, Refund) and accepted.reason == "returned"
    for bad, field in [({"amount": -1.0}, "amount"), ({"order_id": ...}, "order_id"),
                       ({"offers_voided": [""]}, "offers_voided[0]"),
                       ({"reason": "gift"}, "reason")]:  # fmt: skip
        body = {**refund, **bad}
        body = {k: v for k, v in body.items() if v is not ...}
        rejected = validate(orjson.dumps(body), key=KEY)
        assert isinstance(rejected, Rejection) and rejected.reason.field == field, bad


JUNK_CONTACTS = [
    ({"email": ""}, "ids.email"), ({"email": "   "}, "ids.email"),
    ({"email": "not-an-address"}, "ids.email"), ({"phone": "n/a"}, "ids.phone"),
    ({"phone": "12-34"}, "ids.phone"),
]  # fmt: skip


@pytest.mark.parametrize(("ids", "field"), JUNK_CONTACTS)
def test_a_contact_that_is_no_address_is_left_out_and_the_event_kept(ids, field):
    result = validate(with_(ids={"anonymous_id": "a-1", **ids}), key=KEY)
    assert not isinstance(result, Rejection), result
    assert result.ids.anonymous_id == "a-1"
    assert result.ids.email_hash is None and result.ids.phone_hash is None  # never hashed


@pytest.mark.parametrize(("ids", "field"), JUNK_CONTACTS)
def test_a_contact_that_is_no_address_and_the_only_identifier_is_rejected(ids, field):
    result = validate(with_(ids=ids), key=KEY)
    assert isinstance(result, Rejection)
    assert (result.reason.code, result.reason.field) == ("invalid_value", field)
    value = next(iter(ids.values()))
    assert not value.strip() or value not in result.reason.message


def test_short_real_numbers_still_count():
    result = validate(with_(ids={"phone": "22 123"}), key=KEY)  # a Falklands number
    assert not isinstance(result, Rejection) and result.ids.phone_hash


@pytest.mark.parametrize(
    "changes",
    [{"kind": "points_expiry", "points": 10**18, "expires_at": "2026-04-01T00:00:00Z"},
     {"kind": "checkout_start", "cart_id": "c-1", "cart_value": 1e300}],
)  # fmt: skip
def test_amounts_too_large_to_store_are_rejected(changes):
    result = validate(with_(page=..., **changes), key=KEY)
    assert isinstance(result, Rejection) and result.reason.code == "invalid_value"


def test_an_oversize_event_loses_its_contacts_before_it_is_cut():
    national = with_(ids={"phone": "0170 1234567"}, pad="x" * 70_000)
    result = validate(national, key=KEY)
    assert result.reason.code == "oversize" and b"0170 1234567" not in result.raw
    assert len(result.raw) <= 1024
    # An address that the cut would have split, past the first kilobyte's filler.
    head = with_(pad="x" * 900)[:-1]
    raw = head + b',"more":{"email":"ann.lee@example.com"},"big":"' + b"y" * 70_000 + b'"}'
    result = validate(raw, key=KEY)
    assert result.reason.code == "oversize" and b"ann.lee" not in result.raw


@pytest.mark.parametrize(
    "changes", [{"source": "ann@example.com"}, {"page": "+49 170 1234567"},
                {"page": "0170 1234567"}, {"kind": "ann@example.com"},
                {"kind": "0170 1234567"}, {"kind": "ann@localhost"}],
)  # fmt: skip
def test_a_rejection_message_never_repeats_a_raw_contact(changes):
    result = validate(with_(**changes), key=KEY)
    assert isinstance(result, Rejection)
    message = result.reason.message
    assert "ann@example.com" not in message and "1234567" not in message, message


@pytest.mark.parametrize(
    "raw",
    [b'{"kind":"page_view","ids":{"phone":491701234567,},}',
     b"{'kind': 'page_view', 'ids': {'phone': '0170 1234567', 'email': 'ann@localhost'}}",
     b'{"kind":"page_view","note":"{\\"phone\\":\\"0170 1234567\\"}"' + b"x" * 70_000,
     b'{"kind":"page_view","ids":{"phone":491701234567},"pad":"' + b"x" * 70_000 + b'"}'],
)  # fmt: skip
def test_contacts_in_what_is_not_json_are_masked_by_their_key(raw):
    result = validate(raw, key=KEY)
    assert isinstance(result, Rejection)
    for contact in (b"0170 1234567", b"491701234567", b"ann@localhost", b"ann@"):
        assert contact not in result.raw, (result.reason.code, result.raw[:200])
