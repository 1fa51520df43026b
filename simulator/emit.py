"""Encode events, add noise, and hold them in arrival-day buckets until their day is done.

Times inside the simulator are whole seconds since the Unix epoch (UTC); they become aware
datetimes, in the customer's UTC offset of that day, only when an event is built.
A line is ``(arrival, sort_id, topic, key, value)``; sorting lines gives the log order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from features.decisions import Decision, decision_key, encode_decision
from features.events import EVENT_TYPES, Event, encode_event
from features.topics import DECISIONS, routing_key, topic_for
from simulator.noise import MALFORMED_KINDS, duplicate_delay_seconds, late_delay_seconds, malformed
from simulator.world import SimulationConfig

DAY = 86_400
Line = tuple[int, str, str, str, bytes]

_TOPIC_BY_TYPE = {t: topic_for(t.__struct_config__.tag) for t in EVENT_TYPES}  # type: ignore[arg-type]


class Clock:
    """Turn epoch seconds into aware datetimes in a zone's offset of that simulation day.

    The offset is looked up once per zone and day (at local noon), which keeps DST
    changes right to the day without a zone lookup per event.
    """

    def __init__(self, start: datetime) -> None:
        self.start_ts = int(start.timestamp())
        self._tz: dict[tuple[str, int], timezone] = {}

    def tz(self, zone: str, ts: int) -> timezone:
        """Return the fixed UTC offset of ``zone`` on the simulation day holding ``ts``."""
        day = (ts - self.start_ts) // DAY
        found = self._tz.get((zone, day))
        if found is None:
            noon = datetime.fromtimestamp(self.start_ts + day * DAY + DAY // 2, UTC)
            offset = noon.astimezone(ZoneInfo(zone)).utcoffset() or timedelta(0)
            found = self._tz[(zone, day)] = timezone(offset)
        return found

    def at(self, zone: str, ts: int) -> datetime:
        """Return ``ts`` as an aware datetime in ``zone``'s offset."""
        return datetime.fromtimestamp(ts, self.tz(zone, ts))

    def offset_seconds(self, zone: str, ts: int) -> int:
        """Return ``zone``'s UTC offset in seconds on the day holding ``ts``."""
        delta = self.tz(zone, ts).utcoffset(None)
        return int(delta.total_seconds())


@dataclass
class NoiseStats:
    """Counts of what the noise stage did."""

    duplicates: int = 0
    late: int = 0
    malformed: int = 0
    malformed_by_kind: dict[str, int] = field(default_factory=dict)
    beyond_horizon: int = 0


class Emitter:
    """Collect lines into buckets by arrival day, adding duplicates, delays and breakage.

    Events whose event time falls after the simulated horizon are dropped (the world
    ends there); late events may still arrive after it. When :attr:`tap` is a list, every
    clean event within the horizon is also appended to it as ``(ts, event)``, before noise;
    with :attr:`tap_only` set, nothing else is done (no lines, no noise, no decisions).
    """

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.start_ts = int(config.start.timestamp())
        self.end_ts = self.start_ts + config.days * DAY
        self.buckets: dict[int, list[Line]] = {}
        self.drained = -1  # days up to this one are written: nothing may arrive there any more
        self.noise = NoiseStats()
        self._dup = config.duplicate_rate
        self._late = self._dup + config.late_rate
        self._bad = self._late + config.malformed_rate
        self.tap: list[tuple[int, Event]] | None = None
        self.tap_only = False

    def _put(self, line: Line) -> None:
        day = (line[0] - self.start_ts) // DAY
        if day <= self.drained:
            message = f"line {line[1]!r} arrives on day {day}, which is already written"
            raise RuntimeError(message)
        bucket = self.buckets.get(day)
        if bucket is None:
            bucket = self.buckets[day] = []
        bucket.append(line)

    def event(self, rng: random.Random, event: Event, ts: int) -> None:
        """Encode one event at epoch second ``ts`` and queue it, perhaps with noise."""
        if ts >= self.end_ts:
            self.noise.beyond_horizon += 1
            return
        if self.tap is not None:
            self.tap.append((ts, event))
            if self.tap_only:
                return
        value = encode_event(event)
        topic = _TOPIC_BY_TYPE[type(event)]
        key = routing_key(event)
        u = rng.random()
        if u >= self._bad:
            # The common path: a bucket that exists is a day not yet written.
            bucket = self.buckets.get((ts - self.start_ts) // DAY)
            if bucket is not None:
                bucket.append((ts, event.event_id, topic, key, value))
            else:
                self._put((ts, event.event_id, topic, key, value))
        elif u < self._dup:
            self.noise.duplicates += 1
            self._put((ts, event.event_id, topic, key, value))
            self._put((ts + duplicate_delay_seconds(rng), event.event_id, topic, key, value))
        elif u < self._late:
            self.noise.late += 1
            arrival = ts + late_delay_seconds(rng, self.config.max_late_hours)
            self._put((arrival, event.event_id, topic, key, value))
        else:
            kind = MALFORMED_KINDS[int(rng.random() * len(MALFORMED_KINDS))]
            self.noise.malformed += 1
            self.noise.malformed_by_kind[kind] = self.noise.malformed_by_kind.get(kind, 0) + 1
            self._put((ts, event.event_id, topic, key, value))
            self._put((ts, event.event_id + "~bad", topic, key, malformed(value, kind)))

    def decision(self, decision: Decision, ts: int) -> None:
        """Queue a decision record; decisions are logged by the deciding system, noise-free."""
        if self.tap_only:
            return
        key = decision_key(decision).decode()
        self._put((ts, decision.decision_id, DECISIONS, key, encode_decision(decision)))

    def drain(self, day: int) -> list[Line]:
        """Remove and return the lines arriving on simulation day ``day``, in log order."""
        lines = self.buckets.pop(day, [])
        self.drained = day
        lines.sort()
        return lines

    def drain_all(self) -> list[Line]:
        """Remove and return every remaining line, in log order."""
        lines = [line for day in sorted(self.buckets) for line in self.buckets[day]]
        self.buckets.clear()
        lines.sort()
        return lines
