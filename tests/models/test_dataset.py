"""Training sets: point-in-time features never see events at or after the decision time."""

from datetime import timedelta

import numpy as np
import pytest

from features.eventlog import load_events
from features.events import Engagement, Item, Purchase
from models.dataset import load_decisions, point_in_time_views
from models.rows import CHANNEL_FEATURES, NBO_FEATURES
from tests.conftest import TEST_HASH_KEY


@pytest.fixture(scope="module")
def logged(small_world, small_world_events):
    decisions = load_decisions(small_world)
    # Decisions of known customers late in the world: plenty of history before and after.
    known = [d for d in decisions if d.ids.customer_id]
    picked = known[len(known) // 3 :: 20][:8]
    assert len(picked) >= 8
    return picked


def test_features_equal_those_from_the_log_truncated_at_the_decision_time(
    small_world, small_world_events, logged
):
    full = point_in_time_views(small_world_events, logged)
    for decision, view in zip(logged, full, strict=True):
        before = load_events(small_world, key=TEST_HASH_KEY, before=decision.decided_at)
        assert len(before) < len(small_world_events)
        [truncated] = point_in_time_views(before, [decision])
        assert view == truncated, decision.decision_id


def test_future_events_do_not_change_features(small_world_events, logged):
    views = point_in_time_views(small_world_events, logged)
    future = []
    last = max(d.decided_at for d in logged)
    for n, d in enumerate(logged):
        # At the (last) decision time itself and after it: a big purchase and a conversion,
        # in the future of every decision picked (a customer may have several of them).
        future.append(Purchase(
            event_id=f"future-p-{n}", event_time=last, source="web", ids=d.ids,
            order_id=f"fo-{n}", channel="web", payment_channel="web",
            items=[Item("p-x", "dairy", 999.0, 3)], total=2997.0, offers_redeemed=["of-x"],
        ))
        future.append(Engagement(
            event_id=f"future-e-{n}", event_time=last + timedelta(minutes=5),
            source="messaging", ids=d.ids, action="opened", channel="email",
        ))
    injected = point_in_time_views([*small_world_events, *future], logged)
    assert injected == views
    # ...whereas the same events a second earlier do change them: the test can fail.
    past = [
        type(e)(**{**{f: getattr(e, f) for f in e.__struct_fields__},
                   "event_time": d.decided_at - timedelta(hours=1)})
        for e, d in zip(future, [d for d in logged for _ in (0, 1)], strict=True)
    ]
    assert point_in_time_views([*small_world_events, *past], logged) != views


def test_training_rows_have_the_model_layout(training_set):
    x, y, t = training_set.nbo()
    assert x.shape == (len(y), len(NBO_FEATURES)) and len(y) > 100
    assert set(np.unique(y)) <= {0, 1} and np.all(np.diff(t) >= 0)
    xc, yc, _ = training_set.channel()
    assert xc.shape == (len(yc), len(CHANNEL_FEATURES)) and 0 < yc.sum() < len(yc)
    assert all(x.complete for x in training_set.examples)
    actions, rows = training_set.candidates(0)
    assert rows.shape == (len(actions), len(NBO_FEATURES))
