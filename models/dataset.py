"""Training sets from logged decisions: labels from the outcome join, point-in-time features.

For every decision the customer's features are read from a :class:`~features.pipeline.Replay`
of the event log sorted by event time, *before* any event at or after the decision time is
fed: a feature never sees the future (``tests/models/test_dataset.py`` proves it). Labels
come from :func:`features.attribution.join_in_time_order`, the logic the streaming outcome
join runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from features.attribution import AttributionWindows, LabelledExample, join_in_time_order
from features.decisions import Decision, decode_decision
from features.eventlog import read_topic
from features.events import Event
from features.pipeline import Replay
from features.profile import profile_features
from features.topics import DECISIONS
from models.rows import (
    CHANNEL_FEATURES,
    NBO_FEATURES,
    ActionContext,
    CustomerView,
    OfferTable,
    candidate_matrix,
    channel_vector,
    nbo_vector,
)

Progress = Callable[[int, int], None]


def load_decisions(directory: Path | str) -> list[Decision]:
    """Return the logged decisions of a file event log, in log order."""
    return [decode_decision(raw) for _offset, raw in read_topic(directory, DECISIONS)]


def point_in_time_views(
    events: Iterable[Event], decisions: Sequence[Decision], progress: Progress | None = None
) -> list[CustomerView]:
    """Return each decision's customer view as of its decision time, in input order.

    Events are replayed in event-time order; a decision's profile is read before the first
    event whose time is at or after the decision time.
    """
    ordered = sorted(events, key=lambda e: e.event_time)
    order = sorted(range(len(decisions)), key=lambda i: decisions[i].decided_at)
    views: list[CustomerView | None] = [None] * len(decisions)
    replay = Replay()
    position = 0
    for done, i in enumerate(order):
        decision = decisions[i]
        while position < len(ordered) and ordered[position].event_time < decision.decided_at:
            replay.feed(ordered[position])
            position += 1
        record = replay.profile_of(decision.ids)
        at = int(decision.decided_at.timestamp())
        views[i] = CustomerView.from_features(
            None if record is None else profile_features(record, at)
        )
        if progress is not None and done % 2000 == 0:
            progress(done, len(order))
    if progress is not None:
        progress(len(order), len(order))
    return views  # type: ignore[return-value]


def context_of(decision: Decision) -> ActionContext:
    """Return the model context of a logged decision."""
    surface = decision.surface
    return ActionContext(
        at=decision.decided_at,
        surface=surface,
        page=decision.context.page,
        store_id=decision.context.store_id,
    )


def acted(decision: Decision) -> bool:
    """Whether the decision put something in front of the customer: a training example.

    Not an empty slate (nothing was eligible), nor a message that was not sent (capped,
    quiet hours, no consent, degraded: its chosen channel is ``none``). An offer shown in
    a store has no online channel and counts.
    """
    if not decision.chosen:
        return False
    return decision.surface != "channel" or decision.chosen[0].channel != "none"


def actions_of(decision: Decision) -> list[tuple[str, str]]:
    """Return the decision's candidate actions ``(offer_id, channel)`` (offers only)."""
    pool = decision.candidates or decision.chosen
    return [(c.offer_id, str(c.channel)) for c in pool if c.offer_id is not None]


@dataclass(frozen=True)
class TrainingSet:
    """Labelled decisions, each with the customer's view as of its decision time.

    ``examples`` are sorted by decision time (then id); ``views`` align with them.
    """

    examples: list[LabelledExample]
    views: list[CustomerView]
    offers: OfferTable

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def times(self) -> np.ndarray:
        """Decision times as epoch seconds."""
        return np.array([int(x.decision.decided_at.timestamp()) for x in self.examples])

    def nbo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(X, y, t)``: the logged action's row, kept conversion or not, time."""
        rows, labels, times = [], [], []
        for example, view, keep in zip(self.examples, self.views, self.nbo_mask(), strict=True):
            if not keep:
                continue
            chosen = example.decision.chosen[0]
            offer_id = str(chosen.offer_id)  # the mask keeps decisions that chose an offer
            ctx = context_of(example.decision)
            rows.append(nbo_vector(view, self.offers, offer_id, str(chosen.channel), ctx))
            labels.append(example.labels.kept_conversion)
            times.append(int(example.decision.decided_at.timestamp()))
        return _arrays(rows, labels, times, len(NBO_FEATURES))

    def channel(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(X, y, t)`` of messages: the channel's row, opened or clicked, time."""
        rows, labels, times = [], [], []
        masked = zip(self.examples, self.views, self.channel_mask(), strict=True)
        for example, view, keep in masked:
            if not keep:
                continue
            channel = str(example.decision.chosen[0].channel)
            rows.append(channel_vector(view, channel, context_of(example.decision)))
            labels.append(example.labels.engaged)
            times.append(int(example.decision.decided_at.timestamp()))
        return _arrays(rows, labels, times, len(CHANNEL_FEATURES))

    def nbo_mask(self) -> np.ndarray:
        """Which examples :meth:`nbo` keeps: an offer put in front of the customer.

        An offer the catalog no longer has (retired since) cannot be described by its
        facts: its examples are left out.
        """
        known = self.offers.offers
        return np.array(
            [acted(x.decision) and x.decision.chosen[0].offer_id in known
             for x in self.examples], dtype=bool,
        )  # fmt: skip

    def channel_mask(self) -> np.ndarray:
        """Which examples :meth:`channel` keeps: messages sent."""
        return np.array(
            [x.decision.surface == "channel" and acted(x.decision) for x in self.examples],
            dtype=bool,
        )

    def candidates(self, index: int) -> tuple[list[tuple[str, str]], np.ndarray]:
        """Return one decision's candidate actions and their next-best-offer rows."""
        example = self.examples[index]
        actions = actions_of(example.decision)
        ctx = context_of(example.decision)
        return actions, candidate_matrix(self.views[index], self.offers, actions, ctx)


def _arrays(
    rows: list[list[float]], labels: list[bool], times: list[int], width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.array(rows, dtype=np.float64).reshape(len(rows), width)
    return x, np.array(labels, dtype=np.int8), np.array(times, dtype=np.int64)


def build_training_set(
    events: Sequence[Event],
    decisions: Sequence[Decision],
    offers: OfferTable,
    windows: AttributionWindows,
    *,
    complete_only: bool = True,
    progress: Progress | None = None,
) -> TrainingSet:
    """Join labels, read point-in-time features, and return the training set.

    ``complete_only`` drops decisions whose conversion window the log does not cover
    (their labels would be censored).
    """
    examples = join_in_time_order(decisions, events, windows)
    if complete_only:
        examples = [x for x in examples if x.complete]
    views = point_in_time_views(events, [x.decision for x in examples], progress)
    return TrainingSet(examples, views, offers)


def load_segments(ground_truth: Path) -> dict[str, str]:
    """Map every identifier of the ground truth to its customer's dominant persona.

    For *reporting* metrics per segment only; nothing trains on it.
    """
    segments: dict[str, str] = {}
    if not ground_truth.exists():
        return segments
    for line in ground_truth.read_bytes().splitlines():
        c = orjson.loads(line)
        persona = c["dominant_persona"]
        segments[f"customer_id:{c['customer_id']}"] = persona
        for cookie in c.get("cookies", ()):
            segments.setdefault(f"anonymous_id:{cookie}", persona)
        for device in c.get("devices", ()):
            segments.setdefault(f"device_id:{device}", persona)
        if c.get("card_id"):
            segments[f"card_id:{c['card_id']}"] = persona
    return segments


def segment_of(decision: Decision, segments: dict[str, str]) -> str:
    """Return the persona segment of a decision's customer, or ``"unknown"``."""
    for name, value in decision.ids.present().items():
        if (found := segments.get(f"{name}:{value}")) is not None:
            return found
    return "unknown"
