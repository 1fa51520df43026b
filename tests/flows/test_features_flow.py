"""The Bytewax feature flow over the file event log, against batch recomputation."""

import functools
import os
import subprocess
import sys

import orjson
from bytewax.testing import run_main

from features.eventlog import read_topic
from features.pipeline import recompute
from features.profile import decode_profile
from features.store import open_store
from features.topics import EVENT_TOPICS
from features.validation import Rejection, validate
from flows.features_flow import FlowConfig, build_flow, run
from tests.conftest import TEST_HASH_KEY


def config_for(events_dir, db_path):
    return FlowConfig(
        open_store=functools.partial(open_store, "sqlite", sqlite_path=db_path),
        hash_key=TEST_HASH_KEY,
        event_log_dir=events_dir,
        batch_size=200,
    )


def store_content(store, profile_ids, identifiers):
    profiles = {}
    for profile_id in profile_ids:
        raw = store.read_profile(profile_id)
        profiles[profile_id] = None if raw is None else decode_profile(raw)
    identity = {i: store.resolve([i]) for i in identifiers}
    return profiles, identity


def expected_content(events):
    result = recompute(events)
    profiles = {p: decode_profile(v) for p, v in result.profiles.items()}
    return profiles, dict(result.identity)


def test_stream_equals_batch_recomputation(small_world, small_world_events, tmp_path):
    db = tmp_path / "online.sqlite3"
    run_main(build_flow(config_for(small_world, db), deadletter_path=tmp_path / "dl.jsonl"))
    expected_profiles, expected_identity = expected_content(small_world_events)
    with open_store("sqlite", sqlite_path=db) as store:
        got = store_content(store, expected_profiles, expected_identity)
    assert len(expected_profiles) > 100
    assert got == (expected_profiles, expected_identity)


def test_malformed_events_reach_the_deadletter_and_the_rest_is_processed(small_world, tmp_path):
    rejected = {}
    valid = 0
    for topic in EVENT_TOPICS:
        for offset, raw in read_topic(small_world, topic):
            result = validate(raw, key=TEST_HASH_KEY)
            if isinstance(result, Rejection):
                rejected[(topic, offset)] = result.reason.code
            else:
                valid += 1
    assert len(set(rejected.values())) >= 5
    dead = tmp_path / "dl.jsonl"
    run_main(build_flow(config_for(small_world, tmp_path / "s.sqlite3"), deadletter_path=dead))
    records = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert {(r["topic"], r["offset"]): r["reason"]["code"] for r in records} == rejected
    assert all(r["reason"]["message"] and r["raw"] for r in records)
    from flows import metrics

    samples = metrics.EVENTS_IN.collect()[0].samples
    processed = sum(s.value for s in samples if s.name.endswith("_total"))
    assert processed >= valid


def test_two_workers_give_the_same_store_as_one(small_world, small_world_events, tmp_path):
    db = tmp_path / "two.sqlite3"
    run(config_for(small_world, db), workers=2, deadletter_path=tmp_path / "dl.jsonl")
    expected_profiles, expected_identity = expected_content(small_world_events)
    with open_store("sqlite", sqlite_path=db) as store:
        assert store_content(store, expected_profiles, expected_identity) == (
            expected_profiles,
            expected_identity,
        )


def test_two_processes_give_the_same_store_as_one(small_world, small_world_events, tmp_path):
    from omnioffer.services import free_port

    db = tmp_path / "procs.sqlite3"
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "OMNIOFFER_SOURCE": "files",
        "OMNIOFFER_STORE": "sqlite",
        "OMNIOFFER_SQLITE_PATH": str(db),
        "OMNIOFFER_DATA_DIR": str(small_world.parent),
        "OMNIOFFER_EVENTS_DIR": str(small_world),
        "OMNIOFFER_CONTACT_HASH_KEY": TEST_HASH_KEY.decode(),
    }
    command = [sys.executable, "-m", "bytewax.run", "flows.features_flow:flow", "-a", addresses]
    procs = [
        subprocess.Popen([*command, "-i", str(i)], env=env, stderr=subprocess.PIPE)
        for i in range(2)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()[-3000:]
    expected_profiles, expected_identity = expected_content(small_world_events)
    with open_store("sqlite", sqlite_path=db) as store:
        assert store_content(store, expected_profiles, expected_identity) == (
            expected_profiles,
            expected_identity,
        )
