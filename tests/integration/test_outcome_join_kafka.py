"""The outcome join tailing the real broker: a topic that stays quiet holds nothing back."""

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer

from features.attribution import decode_example
from features.decisions import Choice, Decision, encode_decision
from features.events import Engagement, Identifiers, encode_event
from features.topics import DECISIONS, ENGAGEMENT, PURCHASES
from omnioffer.services import create_topics
from tests.conftest import TEST_HASH_KEY
from tests.integration.test_feature_flow_kafka import wait_until

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)


def decision(n, at):
    return Decision(
        decision_id=f"d-{n}", decided_at=at, surface="channel", policy="logging-v1",
        ids=Identifiers(customer_id=f"c-{n}"),
        chosen=[Choice(offer_id="of-disc-dairy", channel="email", propensity=0.2)],
    )  # fmt: skip


def test_a_tailing_join_emits_examples_while_purchases_stay_quiet(private_kafka_broker, tmp_path):
    bootstrap = private_kafka_broker.bootstrap
    create_topics(bootstrap, [DECISIONS, ENGAGEMENT, PURCHASES], partitions=1)
    opened = Engagement(
        event_id="e-1", event_time=T0 + timedelta(hours=1), source="messaging",
        ids=Identifiers(customer_id="c-1"), action="opened", channel="email", decision_id="d-1",
    )  # fmt: skip
    producer = Producer({"bootstrap.servers": bootstrap})
    for n, at in ((1, T0), (2, T0 + timedelta(days=3))):
        producer.produce(DECISIONS, encode_decision(decision(n, at)), key=f"d-{n}".encode())
    producer.produce(ENGAGEMENT, encode_event(opened), key=b"c-1")
    assert producer.flush(30) == 0
    out = tmp_path / "examples.jsonl"
    env = {
        **os.environ,
        "OMNIOFFER_DATA_DIR": str(tmp_path / "data"),
        "OMNIOFFER_CONTACT_HASH_KEY": TEST_HASH_KEY.decode(),
        "OMNIOFFER_CONVERSION_WINDOW_DAYS": "1",
        "OMNIOFFER_OUTCOME_LATENESS_HOURS": "1",
    }
    command = [
        sys.executable, "-m", "omnioffer.cli", "flow", "outcomes", "--source", "kafka",
        "--bootstrap", bootstrap, "--tail", "--idle-s", "1", "--out", str(out),
    ]  # fmt: skip
    flow = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        # Purchases never deliver; without idleness nothing would ever be final.
        wait_until(lambda: out.exists() and out.read_bytes().count(b"\n") >= 1, flow)
        examples = [decode_example(line) for line in out.read_bytes().splitlines()]
        assert [x.decision.decision_id for x in examples] == ["d-1"]
        assert examples[0].complete and examples[0].labels.opened
    finally:
        flow.terminate()
        flow.wait(timeout=30)
