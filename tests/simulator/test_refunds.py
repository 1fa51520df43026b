"""Refunds in a simulated world: after their order, only its offers voided, seeded."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.attribution import AttributionWindows, join_in_time_order
from features.catalog import Catalog
from features.events import Event, Purchase, Refund
from features.pipeline import recompute
from features.topics import EVENT_TOPICS
from models.dataset import load_decisions
from simulator import FileSink, SimulationConfig, simulate
from tests.simulator.conftest import Simulated

CONFIG = SimulationConfig(customers=300, days=10, seed=5, refund_rate=0.1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, catalog: Catalog) -> Path:
    directory = tmp_path_factory.mktemp("refund-world")
    simulate(CONFIG, catalog, FileSink(directory))
    return directory


def _events(directory: Path) -> list[Event]:
    return Simulated(directory, CONFIG, None).events()  # type: ignore[arg-type]


def test_refunds_follow_their_orders_and_void_only_their_offers(world: Path) -> None:
    events = _events(world)
    orders = {e.order_id: e for e in events if isinstance(e, Purchase)}
    refunds = [e for e in events if isinstance(e, Refund)]
    assert len(refunds) >= 40, "a tenth of orders is refunded, some after the horizon"
    assert any(r.offers_voided for r in refunds) and any(not r.offers_voided for r in refunds)
    assert {r.reason for r in refunds} == {"returned", "cancelled"}
    for refund in refunds:
        order = orders[refund.order_id]
        assert order.event_time < refund.event_time
        assert refund.ids == order.ids and refund.channel == order.channel
        assert 0 < refund.amount <= order.total
        if refund.offers_voided:  # a refund of the whole order voids all its offers
            assert refund.amount == order.total
            assert refund.offers_voided == order.offers_redeemed
        if refund.reason == "cancelled":
            assert order.channel != "store" and refund.amount == order.total


def test_budgets_count_the_redemptions_refunds_leave(world: Path) -> None:
    events = _events(world)
    redeemed = {(o, e.order_id) for e in events if isinstance(e, Purchase)
                for o in e.offers_redeemed}  # fmt: skip
    voided = {(o, e.order_id) for e in events if isinstance(e, Refund) for o in e.offers_voided}
    assert voided and voided <= redeemed
    result = recompute(events)
    stands = {(r.offer_id, r.order_id) for r in result.redemptions if not r.void}
    voids = {(r.offer_id, r.order_id) for r in result.redemptions if r.void}
    assert (stands, voids) == (redeemed, voided)


def test_refunds_inside_the_window_take_the_conversions_of_their_orders_back(
    world: Path,
) -> None:
    events = _events(world)
    windows = AttributionWindows()
    examples = join_in_time_order(load_decisions(world), events, windows)
    redeemed_at = {e.order_id: e.event_time for e in events if isinstance(e, Purchase)}
    voids = [(o, r) for r in events if isinstance(r, Refund) for o in r.offers_voided]
    refunded = [x for x in examples if x.labels.refunded]
    assert refunded, "some redemptions of logged offers are refunded within a week"
    for example in refunded:
        decision = example.decision
        offer, ids = decision.chosen[0].offer_id, decision.ids.present().items()
        assert example.labels.redeemed and not example.labels.kept_conversion
        assert any(
            o == offer and set(r.ids.present().items()) & set(ids)
            and decision.decided_at <= redeemed_at[r.order_id] < r.event_time
            and (r.event_time - decision.decided_at).total_seconds() <= windows.conversion
            for o, r in voids
        )  # fmt: skip
    kept = [x for x in examples if x.labels.kept_conversion]
    assert kept and all(x.labels.converted and not x.labels.refunded for x in kept)


def test_the_same_seed_gives_the_same_refunds(
    world: Path, tmp_path: Path, catalog: Catalog
) -> None:
    simulate(CONFIG, catalog, FileSink(tmp_path))
    for topic in EVENT_TOPICS:
        assert (tmp_path / f"{topic}.jsonl").read_bytes() == (world / f"{topic}.jsonl").read_bytes()
