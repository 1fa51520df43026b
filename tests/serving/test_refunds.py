"""A refunded redemption gives the offer back to the customer (the budget side: test_budgets)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from features.catalog import load_catalog
from features.decisions import Decision
from features.events import Event, Identifiers, Item, PageView, Purchase, Refund
from features.pipeline import recompute
from features.store import open_store
from flows.rebuild import write_to_store
from serving.eligibility import OfferContext, offer_rule
from serving.schemas import OffersRequest, decode_request
from tests.serving.conftest import WORLD_NOW, AppFactory

CATALOG = load_catalog()
# An offer any web visitor may get, so only the redemption can keep it from a customer.
OFFER = next(
    o.id for o in sorted(CATALOG.offers.values(), key=lambda o: o.id)
    if offer_rule(o, OfferContext(channel="web", now=WORLD_NOW)) is None
)  # fmt: skip
WHO = Identifiers(customer_id="cu-refund")


def _events(*, refunded: bool) -> list[Event]:
    day = WORLD_NOW - timedelta(days=2)
    events: list[Event] = [
        PageView(event_id="pv-1", event_time=day, source="web", ids=WHO, page="home"),
        Purchase(event_id="pu-1", event_time=day + timedelta(minutes=5), source="web",
                 ids=WHO, order_id="o-1", channel="web", payment_channel="web", total=9.0,
                 items=[Item(product_id="p-1", category="dairy", price=9.0)],
                 offers_redeemed=[OFFER]),
    ]  # fmt: skip
    if refunded:
        events.append(Refund(event_id="rf-1", event_time=day + timedelta(hours=3), source="web",
                             ids=WHO, order_id="o-1", channel="web", amount=9.0,
                             offers_voided=[OFFER]))  # fmt: skip
    return events


def _reasons(make_client: AppFactory, folder: Path, monkeypatch: pytest.MonkeyPatch,
             *, refunded: bool) -> dict[str, list[str]]:  # fmt: skip
    """Return the decision record's candidates (offer id -> reasons) for the customer."""
    with open_store("sqlite", sqlite_path=folder / "online.sqlite3") as store:
        write_to_store(recompute(_events(refunded=refunded)), store)
        engine = make_client(store).app.state.engine
        built: list[Decision] = []
        monkeypatch.setattr(engine.decisions, "submit", lambda b: built.append(b()) or True)
        body = b'{"customer_id": "cu-refund", "context": {"channel": "web"}, "limit": 5}'
        engine.offers(decode_request(body, OffersRequest))
    return {c.offer_id: c.reasons for c in built[0].candidates if c.offer_id}


def test_a_redeemed_offer_is_suppressed_until_its_order_is_refunded(
    make_client: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kept").mkdir()
    (tmp_path / "refunded").mkdir()
    kept = _reasons(make_client, tmp_path / "kept", monkeypatch, refunded=False)
    assert kept[OFFER] == ["suppressed_by:offer_redeemed"]
    refunded = _reasons(make_client, tmp_path / "refunded", monkeypatch, refunded=True)
    assert not any(r.startswith("suppressed_by:") for r in refunded[OFFER])
    assert set(refunded) == set(kept)
