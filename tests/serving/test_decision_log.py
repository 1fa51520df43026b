"""Decisions reach the log with exact propensities, without blocking; Kafka too."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from typer.testing import CliRunner

from features.decisions import Choice, Decision, decode_decision
from features.events import Identifiers
from features.kafka_log import read_kafka_decisions, scan_topic
from features.topics import DECISION_ERASURES, DECISION_ERASURES_DONE, DECISIONS
from omnioffer.cli import app as cli
from omnioffer.services import create_topics
from omnioffer.settings import Settings
from serving.decision_index import OwnerIndex
from serving.decision_log import DecisionLog, FileSink, KafkaSink, read_decisions
from serving.eraser import DecisionEraser
from tests.serving.conftest import channel_body, offers_body


def test_every_decision_reaches_the_log_with_propensities(filled_store, make_client,
                                                          customers, tmp_path):  # fmt: skip
    settings = Settings(data_dir=tmp_path / "data", explore_epsilon=0.3)
    client = make_client(filled_store, settings=settings)
    answers = {}
    for customer in customers[:15]:
        body = client.post("/v1/offers", json=offers_body(customer_id=customer)).json()
        answers[body["decision_id"]] = body
        body = client.post("/v1/channel", json=channel_body(customer, kind="transactional")).json()
        answers[body["decision_id"]] = body
    assert client.app.state.engine.decisions.flush()
    logged = {d.decision_id: d for d in read_decisions(settings.event_log_dir)}
    assert set(logged) == set(answers)
    for decision_id, answer in answers.items():
        decision = logged[decision_id]
        assert decision.model_version == "heuristic-v1"
        assert decision.policy == "serve-egreedy-0.3"
        eligible = [c for c in decision.candidates if not c.reasons]
        if decision.surface == "offers":
            assert decision.ids.customer_id
            assert decision.context.channel == "web"
            # Every catalog offer is a candidate, or excluded by a named rule.
            assert len(decision.candidates) + sum(decision.excluded.values()) == len(
                client.app.state.engine.policies.current.catalog.offers
            )
            assert "sales_channel" in decision.excluded  # app-only offers, on the web
            assert decision.context.limit == 3  # the rest of the request is kept
            assert sum(c.propensity for c in eligible) == pytest.approx(1.0)
            shown = [o["offer_id"] for o in answer["offers"]]
            assert [c.offer_id for c in decision.chosen] == shown
            for choice, offer in zip(decision.chosen, answer["offers"], strict=True):
                assert choice.propensity == pytest.approx(offer["propensity"], abs=1e-6)
                assert choice.reasons
            first = decision.chosen[0]
            by_id = {c.offer_id: c.propensity for c in eligible}
            assert first.propensity == pytest.approx(by_id[first.offer_id])
        else:
            assert decision.surface == "channel"
            assert decision.chosen[0].channel == answer["channel"]
            assert decision.model_choice == answer["model_choice"]["channel"]
            assert (decision.context.message_kind, decision.context.urgency) == (
                "transactional", "normal")
            if answer["channel"] != "none":
                assert sum(c.propensity for c in decision.candidates) == pytest.approx(1.0)
                assert decision.chosen[0].propensity == pytest.approx(answer["propensity"])
                assert decision.chosen[0].send_at is not None
            else:
                assert decision.suppressed_by == answer["suppressed_by"]


def test_thompson_sampling_serves_and_logs_its_propensities(filled_store, make_client,
                                                            customers, tmp_path):  # fmt: skip
    settings = Settings(data_dir=tmp_path / "data", exploration="thompson",
                        thompson_strength=30, thompson_draws=50)  # fmt: skip
    client = make_client(filled_store, settings=settings)
    answers = {}
    for customer in customers[:10]:
        for body in (client.post("/v1/offers", json=offers_body(customer_id=customer)).json(),
                     client.post("/v1/channel", json=channel_body(customer)).json()):  # fmt: skip
            answers[body["decision_id"]] = body
    assert client.app.state.engine.decisions.flush()
    logged = {d.decision_id: d for d in read_decisions(settings.event_log_dir)}
    assert set(logged) == set(answers)
    explored = 0
    for decision_id, answer in answers.items():
        decision = logged[decision_id]
        assert decision.policy == "serve-thompson-30"
        eligible = [c for c in decision.candidates if not c.reasons]
        if decision.surface == "offers":
            assert sum(c.propensity for c in eligible) == pytest.approx(1.0)
            for choice, offer in zip(decision.chosen, answer["offers"], strict=True):
                assert choice.propensity >= 1 / 50 - 1e-9
                assert choice.propensity == pytest.approx(offer["propensity"], abs=1e-6)
            explored += "exploration" in answer["offers"][0]["reasons"]
        elif answer["channel"] != "none":
            assert sum(c.propensity for c in decision.candidates) == pytest.approx(1.0)
            assert decision.chosen[0].propensity == pytest.approx(answer["propensity"])
    assert explored > 0  # at this strength, some first offers are not the best by the mean


class SlowSink:
    def __init__(self) -> None:
        self.gate = threading.Event()
        self.records: list = []

    def send(self, records):
        self.gate.wait(5)
        self.records.extend(records)

    def erase(self, erasures):
        return [0] * len(erasures)

    def close(self):
        pass


def _decision(n: int) -> Decision:
    return Decision(
        decision_id=f"d-{n}", decided_at=datetime(2026, 3, 8, tzinfo=UTC), surface="offers",
        ids=Identifiers(anonymous_id="a"), policy="p",
        chosen=[Choice(offer_id="of-1", channel="web", propensity=1.0)],
    )  # fmt: skip


def test_a_full_queue_drops_and_counts_instead_of_blocking():
    outcomes: dict[str, int] = {}
    sink = SlowSink()
    log = DecisionLog(
        sink, max_queue=5, on_outcome=lambda o, n: outcomes.__setitem__(o, outcomes.get(o, 0) + n)
    )
    # The sink is blocked until the gate opens below: a submit that waited for it would
    # never return, so getting past this line is the proof.
    accepted = sum(log.submit(_decision(n)) for n in range(100))
    assert log.dropped == 100 - accepted and log.dropped >= 90
    assert outcomes["dropped"] == log.dropped
    sink.gate.set()
    log.close()
    assert len(sink.records) == accepted


def test_the_file_sink_erases_matching_decisions_only(tmp_path):
    log = DecisionLog(FileSink(tmp_path))
    for n in range(6):
        log.submit(_decision(n))
    assert log.erase(lambda d: d.decision_id in {"d-1", "d-4"}) == 2
    log.submit(_decision(9))  # the writer reopens the file after the rewrite
    log.close()
    assert [d.decision_id for d in read_decisions(tmp_path)] == ["d-0", "d-2", "d-3", "d-5", "d-9"]


def test_a_log_rotated_or_deleted_under_the_writer_keeps_every_later_record(tmp_path):
    log = DecisionLog(FileSink(tmp_path))
    log.submit(_decision(1))
    assert log.flush()
    path = tmp_path / "decisions.jsonl"
    path.rename(tmp_path / "decisions.jsonl.1")  # logrotate's way
    log.submit(_decision(2))
    assert log.flush()
    assert [d.decision_id for d in read_decisions(tmp_path)] == ["d-2"]
    path.unlink()
    log.submit(_decision(3))
    log.close()
    assert [d.decision_id for d in read_decisions(tmp_path)] == ["d-3"]


def _counting(outcomes: dict[str, int]):
    return lambda outcome, n: outcomes.__setitem__(outcome, outcomes.get(outcome, 0) + n)


def test_a_record_that_cannot_be_built_costs_only_itself(tmp_path):
    outcomes: dict[str, int] = {}
    log = DecisionLog(FileSink(tmp_path), on_outcome=_counting(outcomes))

    def broken() -> Decision:
        raise RuntimeError("a bug in a record builder")

    log.submit(_decision(4))
    log.submit(broken)
    log.submit(_decision(5))
    log.close()
    assert [d.decision_id for d in read_decisions(tmp_path)] == ["d-4", "d-5"]
    assert outcomes == {"written": 2, "failed": 1}


def _held(sink, **kwargs) -> DecisionLog:
    """A decision log whose writer starts only once ``log.release`` is set."""

    class Held(DecisionLog):
        release = threading.Event()

        def _run(self) -> None:
            self.release.wait()
            super()._run()

    return Held(sink, **kwargs)


def test_a_deferred_record_is_built_once_by_whichever_thread_comes_first(tmp_path):
    outcomes: dict[str, int] = {}
    log = _held(FileSink(tmp_path), on_outcome=_counting(outcomes))
    builders: list[str] = []
    entered, go = threading.Event(), threading.Event()

    def building(n: int):
        def build() -> Decision:
            builders.append(f"{n}:{threading.current_thread().name}")
            if n == 2:
                raise RuntimeError("a bug in a record builder")
            if n == 4:  # the writer holds this one until the test lets it go
                entered.set()
                go.wait()
            return _decision(n)

        return build

    for n in (1, 2):
        log.submit(building(n))
    assert log.build_deferred() == 2  # here, before the writer ever runs
    for n in (3, 4):
        log.submit(building(n))  # nobody calls build_deferred: the writer builds them
    log.release.set()
    assert entered.wait(30)
    with ThreadPoolExecutor(1) as pool:
        # 3 is built, 4 is being built: neither is built again, and nothing waits for 4.
        assert pool.submit(log.build_deferred).result(timeout=30) == 0
    go.set()
    log.close()
    assert [d.decision_id for d in read_decisions(tmp_path)] == ["d-1", "d-3", "d-4"]
    assert builders == ["1:MainThread", "2:MainThread", "3:decision-log", "4:decision-log"]
    assert outcomes == {"written": 3, "failed": 1}
    assert not log._deferred  # written records are not kept


def test_records_nobody_builds_early_are_not_kept_once_written(tmp_path):
    log = DecisionLog(FileSink(tmp_path))
    for n in range(5):  # no build_deferred: a script, a test, journeys
        log.submit(lambda n=n: _decision(n))
    assert log.flush()
    assert not log._deferred  # else every record built by the writer stays in memory
    log.close()
    assert [d.decision_id for d in read_decisions(tmp_path)] == [f"d-{n}" for n in range(5)]


def test_the_api_builds_a_decisions_record_after_answering_not_in_the_writer(
    filled_store, make_client, customers, tmp_path, monkeypatch
):
    import serving.engine

    happened: list[str] = []
    build = serving.engine.offers_decision

    def recording(*args, **kwargs):
        writer = threading.current_thread() is log._thread
        happened.append("built by the writer" if writer else "built")
        return build(*args, **kwargs)

    monkeypatch.setattr(serving.engine, "offers_decision", recording)
    log = _held(FileSink(tmp_path / "log"))
    client = make_client(filled_store, decision_log=log)
    body = orjson.dumps(offers_body(customer_id=customers[0]))
    answer: list[bytes] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        happened.append(message["type"])
        answer.append(message.get("body", b""))

    scope = {"type": "http", "method": "POST", "path": "/v1/offers", "headers": [],
             "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
             "client": ("127.0.0.1", 9), "server": ("127.0.0.1", 80)}  # fmt: skip
    asyncio.run(client.app(scope, receive, send))
    # Once the caller has its answer, and by the request's own thread: a writer building
    # it holds the GIL while the next requests wait.
    assert happened == ["http.response.start", "http.response.body", "built"]
    log.release.set()
    log.close()
    decision_id = orjson.loads(answer[-1])["decision_id"]
    assert [d.decision_id for d in read_decisions(tmp_path / "log")] == [decision_id]


class HalfFullSink(FileSink):
    """Takes the first record of a batch, then its queue stays full."""

    def send(self, records):
        from serving.decision_log import PartialSendError

        super().send(records[:1])
        raise PartialSendError(1, 30.0)


def test_a_batch_cut_short_counts_what_went_and_what_did_not(tmp_path):
    outcomes: dict[str, int] = {}
    log = DecisionLog(HalfFullSink(tmp_path), on_outcome=_counting(outcomes))
    # Stop the writer thread, so the three go out as one batch of the pass run below.
    log._stop.set()
    log._thread.join()
    for n in range(3):
        log.submit(_decision(n))
    log._run()
    assert outcomes == {"written": 1, "failed": 2}


class GatedSink(FileSink):
    """A file sink whose first erasure waits at a gate, counting the passes it makes."""

    def __init__(self, directory, fail: bool = False) -> None:
        super().__init__(directory)
        self.entered, self.gate = threading.Event(), threading.Event()
        self.passes: list[int] = []
        self.fail = fail

    def erase(self, erasures):
        self.passes.append(len(erasures))
        if len(self.passes) == 1:
            self.entered.set()
            self.gate.wait(10)
        if self.fail:
            raise TimeoutError("broker gone")
        return super().erase(erasures)


def _erase_in_threads(log: DecisionLog, sink: GatedSink, names: list[str]) -> dict:
    results: dict[str, object] = {}

    def erase(name: str) -> None:
        try:
            results[name] = log.erase(lambda d: d.decision_id == name)
        except Exception as error:
            results[name] = error

    first = threading.Thread(target=erase, args=(names[0],))
    first.start()
    assert sink.entered.wait(10)
    rest = [threading.Thread(target=erase, args=(n,)) for n in names[1:]]
    for thread in rest:
        thread.start()
    deadline = time.monotonic() + 10
    while len(log._erase_queue) < len(rest) and time.monotonic() < deadline:
        time.sleep(0.001)  # until all are queued behind the running pass
    sink.gate.set()
    for thread in [first, *rest]:
        thread.join(10)
    return results


def test_erasures_asked_during_an_erasure_share_the_next_pass(tmp_path):
    sink = GatedSink(tmp_path)
    log = DecisionLog(sink)
    for n in range(8):
        log.submit(_decision(n))
    results = _erase_in_threads(log, sink, ["d-0", "d-1", "d-2", "d-3", "d-99"])
    log.close()
    # One pass for the first, one for the four that came while it ran.
    assert sink.passes == [1, 4]
    assert results == {"d-0": 1, "d-1": 1, "d-2": 1, "d-3": 1, "d-99": 0}
    assert [d.decision_id for d in read_decisions(tmp_path)] == ["d-4", "d-5", "d-6", "d-7"]


def test_a_failed_pass_fails_every_erasure_in_it_and_the_next_one_runs(tmp_path):
    sink = GatedSink(tmp_path, fail=True)
    log = DecisionLog(sink)
    log.submit(_decision(1))
    results = _erase_in_threads(log, sink, ["d-1", "d-2", "d-3"])
    assert sink.passes == [1, 2]
    assert all(isinstance(r, TimeoutError) for r in results.values())
    sink.fail = False
    assert log.erase(lambda d: d.decision_id == "d-1") == 1
    log.close()


def test_decisions_go_to_the_kafka_topic_when_settings_say_kafka(
    kafka_broker, filled_store, make_client, tmp_path
):
    create_topics(kafka_broker.bootstrap, [DECISIONS])
    settings = Settings(data_dir=tmp_path, decision_log="kafka",
                        kafka_bootstrap=kafka_broker.bootstrap)  # fmt: skip
    client = make_client(filled_store, settings=settings)
    decision_id = client.post("/v1/offers", json=offers_body(anonymous_id="k-1")).json()[
        "decision_id"
    ]
    client.app.state.engine.decisions.close()  # flushes the producer
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": "t-decisions",
                         "enable.auto.commit": False})  # fmt: skip
    consumer.assign([TopicPartition(DECISIONS, 0, OFFSET_BEGINNING)])
    found = None
    deadline = time.monotonic() + 30
    try:
        while found is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            decision = decode_decision(message.value())
            if decision.decision_id == decision_id:
                found = (decision, message.key())
    finally:
        consumer.close()
    assert found is not None
    decision, key = found
    assert key == decision_id.encode()  # keyed by its own id: the topic is compacted
    assert sum(c.propensity for c in decision.candidates) == pytest.approx(1.0)


def test_erasure_tombstones_the_persons_decisions_on_kafka(
    private_kafka_broker, filled_store, make_client, customers, tmp_path
):
    bootstrap = private_kafka_broker.bootstrap
    made = CliRunner().invoke(cli, ["topics", "--bootstrap", bootstrap, "--partitions", "3"])
    assert made.exit_code == 0, made.output
    admin = AdminClient({"bootstrap.servers": bootstrap})
    [described] = admin.describe_configs([ConfigResource("topic", DECISIONS)]).values()
    assert described.result()["cleanup.policy"].value == "compact,delete"
    settings = Settings(data_dir=tmp_path, decision_log="kafka", kafka_bootstrap=bootstrap)
    client = make_client(filled_store, settings=settings)
    person, other = customers[0], customers[1]
    theirs = {
        client.post("/v1/offers", json=offers_body(customer_id=person)).json()["decision_id"],
        client.post("/v1/offers", json=offers_body(customer_id=person)).json()["decision_id"],
        client.post("/v1/channel", json=channel_body(person)).json()["decision_id"],
    }
    kept = {
        client.post("/v1/offers", json=offers_body(customer_id=other)).json()["decision_id"],
        client.post("/v1/offers", json=offers_body(anonymous_id="k-9")).json()["decision_id"],
    }

    removed = client.delete(f"/v1/customers/{person}").json()["removed"]

    assert removed["decisions"] == len(theirs)
    live = {d.decision_id for d in read_kafka_decisions(bootstrap)}
    assert live == kept
    tombstones = {r.key for r in scan_topic(bootstrap, DECISIONS) if r.value is None}
    assert tombstones == {d.encode() for d in theirs}
    # Erasing again finds nothing live and writes no second tombstone.
    assert client.delete(f"/v1/customers/{person}").json()["removed"]["decisions"] == 0
    assert sum(1 for r in scan_topic(bootstrap, DECISIONS) if r.value is None) == len(theirs)
    report = CliRunner().invoke(cli, ["decisions", "--bootstrap", bootstrap])
    assert report.exit_code == 0, report.output
    assert f"{len(kept)} decisions, 0 suppressed" in report.output


def test_a_queued_erasure_answers_at_once_and_the_eraser_does_it_in_one_pass(
    private_kafka_broker, filled_store, make_client, customers, tmp_path
):
    bootstrap = private_kafka_broker.bootstrap
    create_topics(bootstrap, [DECISIONS, DECISION_ERASURES, DECISION_ERASURES_DONE],
                  partitions=2)  # fmt: skip
    settings = Settings(data_dir=tmp_path, decision_log="kafka", kafka_bootstrap=bootstrap,
                        decision_erasure="queued")  # fmt: skip
    client = make_client(filled_store, settings=settings)
    first, second, other = customers[0], customers[1], customers[2]
    theirs = {
        who: {client.post("/v1/offers", json=offers_body(customer_id=who)).json()["decision_id"]
              for _ in range(2)}
        for who in (first, second)
    }  # fmt: skip
    kept = client.post("/v1/offers", json=offers_body(customer_id=other)).json()["decision_id"]

    stray = KafkaSink(bootstrap, topic=DECISION_ERASURES)  # records that are not jobs
    stray.send([(DECISION_ERASURES, b"x", b"not a job"), (DECISION_ERASURES, b"y", b"{}")])
    stray.close()
    answers = [client.delete(f"/v1/customers/{who}").json() for who in (first, second)]

    for answer in answers:
        assert answer["decision_log"]["status"] == "queued"
        assert answer["removed"]["decisions"] is None
        assert answer["removed"]["profiles"] == 1  # the store is erased at once
    live = {d.decision_id for d in read_kafka_decisions(bootstrap)}
    assert theirs[first] | theirs[second] | {kept} <= live  # not yet: the eraser's job
    job = answers[0]["decision_log"]["erasure_id"]
    assert client.get(f"/v1/erasures/{job}").json()["status"] == "queued"

    index = tmp_path / "eraser" / "owners.sqlite"
    eraser = DecisionEraser(bootstrap, timeout=20.0, index_path=index)
    done = eraser.run_once()

    assert {e.job.erasure_id: e.decisions for e in done} == {
        answers[0]["decision_log"]["erasure_id"]: 2,
        answers[1]["decision_log"]["erasure_id"]: 2,
    }
    assert {d.decision_id for d in read_kafka_decisions(bootstrap)} == {kept}
    state = client.get(f"/v1/erasures/{job}").json()
    assert (state["status"], state["decisions"]) == ("done", 2)
    missing = client.get("/v1/erasures/er-nothing")
    assert missing.status_code == 404 and missing.json()["field"] == "erasure_id"
    assert eraser.run_once() == []  # committed: the next pass has nothing to do
    # A pass cut short before its commit does its jobs again: nothing is left to erase,
    # and the first result stays the one reported.
    rewind = Consumer({"bootstrap.servers": bootstrap, "group.id": eraser.group})
    rewind.commit(offsets=[TopicPartition(DECISION_ERASURES, p, 0) for p in (0, 1)],
                  asynchronous=False)  # fmt: skip
    rewind.close()
    assert sorted(e.decisions for e in eraser.run_once()) == [0, 0]
    assert client.get(f"/v1/erasures/{job}").json()["decisions"] == 2
    again = client.delete(f"/v1/customers/{first}").json()["decision_log"]["erasure_id"]
    later = client.post("/v1/offers", json=offers_body(customer_id=other)).json()["decision_id"]
    result = CliRunner().invoke(cli, ["eraser", "--bootstrap", bootstrap, "--once",
                                      "--index", str(index), "--grace", "0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"{again}: 0 decisions erased" in result.output
    # The index went on from where it stopped: the one new decision is all it read.
    assert "index: 1 new records read (1 decisions)" in result.output
    assert {d.decision_id for d in read_kafka_decisions(bootstrap)} == {kept, later}
    # A new index file is built in one read of the whole topic, and agrees.
    fresh = DecisionEraser(bootstrap, timeout=20.0, index_path=tmp_path / "fresh.sqlite")
    assert fresh.run_once() == []
    assert (fresh.last_catch_up.records, fresh.last_catch_up.decisions) == (6 + 4, 6)
    rebuilt = OwnerIndex(tmp_path / "fresh.sqlite")
    assert rebuilt.owned([f"customer_id:{who}" for who in (first, second)]) == {}
    assert set(rebuilt.owned([f"customer_id:{other}"])) == {kept.encode(), later.encode()}
    rebuilt.close()


def test_queued_erasure_needs_the_kafka_decision_log(filled_store, tmp_path):
    from serving.app import create_app

    with pytest.raises(ValueError, match="decision_erasure=queued needs decision_log=kafka"):
        create_app(Settings(data_dir=tmp_path, decision_erasure="queued"), store=filled_store)


def test_a_kafka_erasure_while_decisions_keep_coming_loses_none(private_kafka_broker):
    bootstrap = private_kafka_broker.bootstrap
    create_topics(bootstrap, [DECISIONS], partitions=3)
    log = DecisionLog(KafkaSink(bootstrap))

    def decision(n: int, person: str) -> Decision:
        return Decision(
            decision_id=f"d-{person}-{n}", decided_at=datetime(2026, 3, 8, tzinfo=UTC),
            surface="offers", ids=Identifiers(customer_id=person), policy="p",
            chosen=[Choice(offer_id="of-1", channel="web", propensity=1.0)],
        )  # fmt: skip

    for n in range(100):
        log.submit(decision(n, f"p{n % 5}"))
    stop = threading.Event()
    written: list[str] = []

    def keep_deciding() -> None:
        n = 0
        while not stop.is_set():
            d = decision(n, "late")
            if log.submit(d):
                written.append(d.decision_id)
            n += 1
            time.sleep(0.001)

    writer = threading.Thread(target=keep_deciding)
    writer.start()
    try:
        erased = log.erase(lambda d: d.ids.customer_id == "p3")
    finally:
        stop.set()
        writer.join()
    assert log.flush()
    log.close()

    assert erased == 20
    live = [d.ids.customer_id for d in read_kafka_decisions(bootstrap)]
    assert "p3" not in live
    assert sorted(set(live)) == ["late", "p0", "p1", "p2", "p4"]
    assert len(live) == 80 + len(written) and written  # every other decision is kept


def test_the_decisions_command_shows_who_was_suppressed_and_by_which_rule(
    filled_store, make_client, customers, tmp_path
):
    settings = Settings(data_dir=tmp_path / "data")
    client = make_client(filled_store, settings=settings)
    suppressed = set()
    for customer in customers[:12]:
        body = client.post("/v1/channel", json=channel_body(
            customer, offer_id="of-disc25-coffee_tea")).json()  # fmt: skip
        if body["channel"] == "none":
            suppressed.add((customer, body["suppressed_by"]))
        client.post("/v1/offers", json=offers_body(customer_id=customer))
    assert "offer_tier" in {rule for _, rule in suppressed}
    assert client.app.state.engine.decisions.flush()
    report = CliRunner().invoke(
        cli, ["decisions", "--suppressed", "--events", str(settings.event_log_dir)],
        env={"COLUMNS": "200"},
    )
    assert report.exit_code == 0, report.output
    for customer, rule in suppressed:
        line = next(line for line in report.output.splitlines() if customer in line)
        assert rule in line
    assert f"24 decisions, {len(suppressed)} suppressed" in report.output


def test_the_decisions_command_keeps_to_a_time_window_and_the_newest_rows(tmp_path):
    log = DecisionLog(FileSink(tmp_path))
    for day in range(1, 6):
        log.submit(Decision(
            decision_id=f"d-{day}", decided_at=datetime(2026, 3, day, 12, tzinfo=UTC),
            surface="channel", ids=Identifiers(customer_id=f"c-{day}"), policy="p",
            suppressed_by="total_cap_day",
            chosen=[Choice(offer_id=None, channel="none", propensity=1.0)],
        ))  # fmt: skip
    log.close()

    def run(*args: str):
        command = ["decisions", "--suppressed", "--events", str(tmp_path), *args]
        return CliRunner().invoke(cli, command, env={"COLUMNS": "200"})

    def shown(output: str) -> list[str]:
        return [c for c in ("c-1", "c-2", "c-3", "c-4", "c-5") if c in output]

    window = run("--since", "2026-03-02", "--until", "2026-03-04T12:00+00:00")
    assert window.exit_code == 0, window.output
    assert "2 decisions, 2 suppressed" in window.output
    assert shown(window.output) == ["c-2", "c-3"]
    newest = run("--limit", "2")
    assert "5 decisions, 5 suppressed" in newest.output
    assert shown(newest.output) == ["c-4", "c-5"]
    bad = run("--since", "yesterday")
    assert bad.exit_code == 2 and "ISO 8601" in bad.output
    empty = run("--since", "2027-01-01")
    assert empty.exit_code == 1 and "no decisions" in empty.output


def test_a_decision_that_fails_inside_serving_answers_the_default_and_is_logged(
    filled_store, make_client, customers, tmp_path, monkeypatch
):
    settings = Settings(data_dir=tmp_path / "data")
    client = make_client(filled_store, settings=settings)
    engine = client.app.state.engine

    def explode(_request):
        raise RuntimeError("a bug")

    monkeypatch.setattr(engine, "offers", explode)
    monkeypatch.setattr(engine, "channel", explode)
    offers = client.post("/v1/offers", json=offers_body(card_id="k-1"))
    channel = client.post("/v1/channel", json=channel_body(customers[0], offer_id="of-disc-dairy"))
    for answer in (offers, channel):
        assert answer.status_code == 200
        assert answer.json()["degraded"] is True
        assert answer.json()["suppressed_by"] == "internal_error"
    assert engine.decisions.flush()
    logged = {d.decision_id: d for d in read_decisions(settings.event_log_dir)}
    first = logged[offers.json()["decision_id"]]
    assert (first.surface, first.ids.card_id, first.context.page) == ("offers", "k-1", "home")
    second = logged[channel.json()["decision_id"]]
    assert second.surface == "channel" and second.ids.customer_id == customers[0]
    assert second.chosen[0].channel == "none" and second.chosen[0].offer_id == "of-disc-dairy"
    assert {first.suppressed_by, second.suppressed_by} == {"internal_error"}
    assert all(d.degraded for d in (first, second))
    assert 'errors_total{endpoint="/v1/offers",kind="internal"} 1.0' in client.get("/metrics").text


def _logged(i: int, customer: str) -> Decision:
    return Decision(decision_id=f"d-{i}", decided_at=datetime(2026, 3, 8, tzinfo=UTC),
                    surface="offers", ids=Identifiers(customer_id=customer), policy="p",
                    chosen=[Choice(offer_id="of-1", channel="web", propensity=1.0)])  # fmt: skip


def _queue(bootstrap: str, decisions: list[Decision], jobs: list) -> None:
    from features.decisions import decision_key, encode_decision
    from serving.eraser import encode_job

    create_topics(bootstrap, [DECISIONS, DECISION_ERASURES, DECISION_ERASURES_DONE],
                  partitions=1)  # fmt: skip
    sink = KafkaSink(bootstrap)
    sink.send([(DECISIONS, decision_key(d), encode_decision(d)) for d in decisions])
    for job in jobs:
        sink.deliver(DECISION_ERASURES, job.erasure_id.encode(), encode_job(job))
    sink.close()


@pytest.mark.integration
def test_a_pass_cut_short_after_its_tombstones_still_reports_what_it_erased(
    private_kafka_broker, tmp_path, monkeypatch
):
    from serving.eraser import erasure_status, new_job

    bootstrap = private_kafka_broker.bootstrap
    _queue(bootstrap, [_logged(i, "cu-1" if i < 3 else "cu-2") for i in range(5)],
           [new_job("er-1", {"customer_id:cu-1"})])  # fmt: skip
    deliver = KafkaSink.deliver

    def results_refused_once(self, topic, key, value):
        if topic == DECISION_ERASURES_DONE and not refused:
            refused.append(key)
            raise TimeoutError("decision log: the result was not delivered")
        return deliver(self, topic, key, value)

    refused: list[bytes] = []
    monkeypatch.setattr(KafkaSink, "deliver", results_refused_once)
    eraser = DecisionEraser(bootstrap, timeout=20.0, index_path=tmp_path / "owners.sqlite")
    with pytest.raises(TimeoutError):
        eraser.run_once()  # the tombstones are written, the result is not
    assert {d.ids.customer_id for d in read_kafka_decisions(bootstrap)} == {"cu-2"}
    assert [(e.job.erasure_id, e.decisions) for e in eraser.run_once()] == [("er-1", 3)]
    assert erasure_status(bootstrap, "er-1", timeout=20.0)["decisions"] == 3


@pytest.mark.integration
def test_a_job_waits_its_grace_and_holds_the_jobs_after_it(private_kafka_broker, tmp_path):
    from datetime import timedelta

    from serving.eraser import new_job

    bootstrap = private_kafka_broker.bootstrap
    now = datetime.now(UTC)
    old, young = now - timedelta(minutes=10), now
    jobs = [new_job("er-old", {"customer_id:cu-1"}, old),
            new_job("er-young", {"customer_id:cu-2"}, young),
            new_job("er-after", {"customer_id:cu-3"}, old)]  # fmt: skip
    _queue(bootstrap, [_logged(1, "cu-1"), _logged(2, "cu-2"), _logged(3, "cu-3")], jobs)
    index = tmp_path / "owners.sqlite"
    waiting = DecisionEraser(bootstrap, timeout=20.0, index_path=index, grace_s=300.0)
    assert [e.job.erasure_id for e in waiting.run_once()] == ["er-old"]
    assert [e.job.erasure_id for e in waiting.run_once()] == []  # still too young
    assert {d.ids.customer_id for d in read_kafka_decisions(bootstrap)} == {"cu-2", "cu-3"}
    later = DecisionEraser(bootstrap, timeout=20.0, index_path=index, grace_s=0.0)
    assert [e.job.erasure_id for e in later.run_once()] == ["er-young", "er-after"]
    assert read_kafka_decisions(bootstrap) == []
