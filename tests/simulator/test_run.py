import re
import tempfile
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

from features.decisions import decode_decision
from features.events import Event
from features.topics import DECISIONS, EVENT_TOPICS
from features.validation import Rejection, validate
from simulator import FileSink, SimulationConfig, simulate
from simulator.noise import EXPECTED_REASON
from simulator.world import synthetic_contacts

SMALL = SimulationConfig(customers=120, days=4, seed=5)


def files(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path, catalog):
    simulate(SMALL, catalog, FileSink(tmp_path / "a"))
    simulate(SMALL, catalog, FileSink(tmp_path / "b"))
    other = SimulationConfig(customers=120, days=4, seed=6)
    simulate(other, catalog, FileSink(tmp_path / "c"))
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b
    assert set(a) == {f"{t}.jsonl" for t in (*EVENT_TOPICS, DECISIONS, "ground_truth")}
    assert all(a[name] != c[name] for name in a)


def test_worker_processes_write_the_same_bytes(tmp_path, catalog):
    serial = simulate(SMALL, catalog, FileSink(tmp_path / "serial"), workers=1)
    parallel = simulate(SMALL, catalog, FileSink(tmp_path / "parallel"), workers=2)
    assert files(tmp_path / "serial") == files(tmp_path / "parallel")
    assert serial.as_dict() | {"elapsed_s": 0, "events_per_second": 0} == parallel.as_dict() | {
        "elapsed_s": 0,
        "events_per_second": 0,
    }


class FailingSink(FileSink):
    def write(self, topic, key, value):
        if sum(self.counts.values()) >= 100:
            raise OSError("disk full")
        super().write(topic, key, value)


def test_an_abandoned_parallel_run_stops_its_workers_and_cleans_up(tmp_path, catalog):
    spools = set(Path(tempfile.gettempdir()).glob("omnioffer-sim-*"))
    with pytest.raises(OSError, match="disk full"):
        simulate(SMALL, catalog, FailingSink(tmp_path), workers=2)
    assert set(Path(tempfile.gettempdir()).glob("omnioffer-sim-*")) == spools


def test_workers_must_be_positive(tmp_path, catalog):
    with pytest.raises(ValueError, match="workers must be >= 1; got 0"):
        simulate(SMALL, catalog, FileSink(tmp_path), workers=0)


def test_stats_match_the_files(simulated):
    stats = simulated.stats
    for topic, count in stats.by_topic.items():
        assert len(simulated.lines(topic)) == count
    assert stats.messages == sum(stats.by_topic.values())
    assert stats.decisions == stats.by_topic[DECISIONS] > 0
    assert stats.customers == len(simulated.truth()) == simulated.config.customers
    assert stats.duplicates > 0 and stats.late > 0 and stats.malformed > 0
    assert stats.events_per_second > 0


def test_progress_reports_every_day(tmp_path, catalog):
    seen = []
    simulate(SMALL, catalog, FileSink(tmp_path), lambda done, total: seen.append((done, total)))
    assert seen == [(day, 4) for day in range(1, 5)]


def test_malformed_lines_are_rejected_and_every_other_line_accepted(simulated):
    key = simulated.config.contact_hash_key
    reasons: dict[str, int] = {}
    for topic in EVENT_TOPICS:
        for line in simulated.lines(topic):
            result = validate(line, key=key)
            if isinstance(result, Rejection):
                reasons[result.reason.code] = reasons.get(result.reason.code, 0) + 1
            else:
                assert isinstance(result, Event)
    expected: dict[str, int] = {}
    for kind, count in simulated.stats.malformed_by_kind.items():
        expected[EXPECTED_REASON[kind]] = expected.get(EXPECTED_REASON[kind], 0) + count
    assert reasons == expected
    assert sum(reasons.values()) == simulated.stats.malformed


def test_decisions_decode(simulated):
    lines = list(simulated.lines(DECISIONS))
    assert lines
    for line in lines:
        decision = decode_decision(line)
        assert decision.chosen and decision.policy == "logging-v1"


def test_duplicates_repeat_the_same_bytes(simulated):
    key = simulated.config.contact_hash_key
    copies = Counter(line for topic in EVENT_TOPICS for line in simulated.lines(topic))
    assert sum(1 for n in copies.values() if n == 2) == simulated.stats.duplicates
    assert max(copies.values()) == 2
    by_id: dict[str, set[bytes]] = {}
    for line in copies:
        event = validate(line, key=key)
        if isinstance(event, Event):
            by_id.setdefault(event.event_id, set()).add(line)
    assert all(len(lines) == 1 for lines in by_id.values())


def test_lines_are_in_arrival_order(simulated):
    # Arrival = event time, except late events (up to max_late_hours) and re-sent duplicates.
    slack = timedelta(hours=simulated.config.max_late_hours)
    for topic in EVENT_TOPICS:
        latest = None
        behind = 0
        for line in simulated.lines(topic):
            event = validate(line, key=simulated.config.contact_hash_key)
            if not isinstance(event, Event):
                continue
            if latest is not None and event.event_time < latest:
                behind += 1
                assert event.event_time >= latest - slack, (topic, event.event_id)
            latest = event.event_time if latest is None else max(latest, event.event_time)
        assert behind > 0, topic  # some events are late
    times = [decode_decision(line).decided_at for line in simulated.lines(DECISIONS)]
    assert times == sorted(times)


def test_event_times_are_aware_and_within_the_horizon(simulated, events):
    start = simulated.config.start
    end = start + timedelta(days=simulated.config.days)
    assert all(e.event_time.utcoffset() is not None for e in events)
    assert all(start <= e.event_time < end for e in events)
    assert len({e.event_id for e in events}) == len(events)


def test_no_raw_contact_in_any_file(simulated):
    # Synthetic raw contacts look like these; their normalized forms must not leak either.
    email, phone = synthetic_contacts(simulated.config.seed, 42)
    assert "@" in email and phone.startswith("+44 7700 ")
    forbidden = [
        re.compile(rb"@"),
        re.compile(rb"\+\d[\d ()./-]{6,}\d"),  # as features.contacts spots phone numbers
        re.compile(rb"447700\d{6}"),  # the normalized digits of a synthetic phone
        re.compile(rb"example\.test"),
    ]
    for path in sorted(simulated.directory.iterdir()):
        data = path.read_bytes()
        for pattern in forbidden:
            assert not pattern.search(data), (path.name, pattern.pattern)


def test_ground_truth_has_hashes_and_traits(simulated):
    for row in simulated.truth():
        assert abs(sum(row["persona_mix"].values()) - 1) < 1e-9
        assert max(row["persona_mix"], key=row["persona_mix"].get) == row["dominant_persona"]
        if row["anonymous_only"]:
            assert row["email_hash"] is None and row["card_id"] is None
        else:
            assert row["email_hash"].startswith("em:")
        assert row["phone_hash"] is None or row["phone_hash"].startswith("ph:")


@pytest.mark.parametrize("field", ["customers", "days"])
def test_simulate_rejects_an_empty_world(field):
    with pytest.raises(ValueError, match=f"{field} must be >= 1"):
        SimulationConfig(**{field: 0})


def test_decided_at_is_aware(simulated):
    first = orjson.loads(simulated.lines(DECISIONS)[0])
    assert datetime.fromisoformat(first["decided_at"]).tzinfo is not None
