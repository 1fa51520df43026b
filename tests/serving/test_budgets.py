"""Offer budgets spent by real redemptions: counted by the flow, refreshed by serving."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from features.catalog import load_catalog
from features.decisions import Decision
from features.store import OnlineStore, Redemption, StoreBatch, StoreUnavailableError
from omnioffer.settings import Settings
from serving.budgets import BudgetSpend
from serving.engine import Engine
from serving.schemas import OffersRequest, decode_request
from tests.serving.conftest import AppFactory

CATALOG = load_catalog()
BUDGETED = CATALOG.offers["of-xsell-baby"]  # budget 5000, cost 1.5


def _redeem(store: OnlineStore, first: int, last: int) -> None:
    orders = [Redemption(BUDGETED.id, f"test-order-{n}") for n in range(first, last)]
    store.write(StoreBatch(redemptions=orders))


def _candidates(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    built: list[Decision] = []
    monkeypatch.setattr(engine.decisions, "submit", lambda b: built.append(b()) or True)
    request = decode_request(b'{"anonymous_id": "a-new", "context": {"channel": "web"}}',
                             OffersRequest)  # fmt: skip
    engine.offers(request)
    return {c.offer_id for c in built[0].candidates}


def test_an_offer_stops_being_a_candidate_once_redemptions_spend_its_budget_and_refunds_restore_it(
    filled_store: OnlineStore,
    make_client: AppFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert BUDGETED.budget == 5000.0 and BUDGETED.cost == 1.5
    # 3332 redemptions spend 4998: one more (4999.5) still fits; 3333 leave no room.
    # The small world redeemed the offer a few times already (written by its replay).
    already = filled_store.redemptions([BUDGETED.id])[BUDGETED.id]
    assert already > 0
    _redeem(filled_store, already, 3332)
    settings = Settings(data_dir=tmp_path / "data", budget_refresh_s=3600)
    client = make_client(filled_store, settings=settings)
    engine = client.app.state.engine
    assert BUDGETED.id in _candidates(engine, monkeypatch)

    _redeem(filled_store, 3330, 3333)  # two replayed orders and one new
    assert BUDGETED.id in _candidates(engine, monkeypatch)  # not refreshed yet
    assert engine.budgets.refresh()
    assert BUDGETED.id not in _candidates(engine, monkeypatch)
    metrics = client.get("/metrics").text
    assert f'omnioffer_serve_offer_budget_spent{{offer="{BUDGETED.id}"}} 4999.5' in metrics
    assert 'omnioffer_serve_budget_refreshes_total{result="ok"} 2.0' in metrics

    # A refund voids one of those redemptions: the budget has room again.
    void = Redemption(BUDGETED.id, "test-order-3332", void=True)
    filled_store.write(StoreBatch(redemptions=[void]))
    assert engine.budgets.refresh()
    assert BUDGETED.id in _candidates(engine, monkeypatch)
    metrics = client.get("/metrics").text
    assert f'omnioffer_serve_offer_budget_spent{{offer="{BUDGETED.id}"}} 4998.0' in metrics


def test_the_background_refresh_picks_up_new_redemptions(
    filled_store: OnlineStore,
    make_client: AppFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", budget_refresh_s=0.05)
    engine = make_client(filled_store, settings=settings).app.state.engine
    assert BUDGETED.id in _candidates(engine, monkeypatch)
    _redeem(filled_store, 0, 3400)  # more than the budget holds
    deadline = time.monotonic() + 30  # a bound for a stuck thread, not a timing claim
    while BUDGETED.id in _candidates(engine, monkeypatch):
        assert time.monotonic() < deadline, "the budget thread never refreshed"
        time.sleep(0.02)
    assert engine.budgets.live[BUDGETED.id] >= BUDGETED.budget


class _FlakyStore:
    """Counts per offer, or an outage; enough of the store for :class:`BudgetSpend`."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.down = False
        self.asked: list[list[str]] = []

    def redemptions(self, offer_ids: Sequence[str]) -> dict[str, int]:
        self.asked.append(list(offer_ids))
        if self.down:
            raise StoreUnavailableError("redis store redemptions: connection refused")
        return {o: self.counts.get(o, 0) for o in offer_ids}


def test_spend_adds_to_the_policies_and_survives_an_outage() -> None:
    store = _FlakyStore()
    results: list[str] = []
    spend = BudgetSpend(store, CATALOG.offers.values(),  # type: ignore[arg-type]
                        on_refresh=lambda result, _live: results.append(result))  # fmt: skip
    base = {BUDGETED.id: 100.0, "of-spring-produce": 7.0}
    assert spend.refresh()
    assert store.asked == [sorted(o.id for o in CATALOG.offers.values() if o.budget)]
    assert spend.spent(base) is base  # nothing redeemed yet: the policies' spend as it is

    store.counts[BUDGETED.id] = 10
    assert spend.refresh()
    total = spend.spent(base)
    assert total == {BUDGETED.id: 115.0, "of-spring-produce": 7.0}
    assert spend.spent(base) is total  # unchanged: the same object (caches hold)
    assert spend.refresh() and spend.spent(base) is total

    store.down = True
    assert not spend.refresh()  # the last spend known stays
    assert spend.spent(base) is total
    assert results == ["ok", "ok", "ok", "failure"]
    reloaded = dict(base)  # a policies reload: a new base, added to the same live spend
    assert spend.spent(reloaded) == total and spend.spent(reloaded) is not total
