"""An inline erasure reaches the decisions other workers still hold or make while it runs."""

from __future__ import annotations

import subprocess
import threading
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest

from features.decisions import Choice, Decision, person_erasure
from features.events import Identifiers
from omnioffer.settings import Settings
from serving.decision_log import DecisionLog, FileSink, read_decisions
from serving.fence import ErasureFence, FenceBusyError
from tests.serving.conftest import WORLD_NOW, offers_body

ERASED_AT = datetime(2026, 3, 8, 12, tzinfo=UTC)


def decision(name: str, customer: str, at: datetime = ERASED_AT) -> Decision:
    return Decision(
        decision_id=name, decided_at=at, surface="offers", ids=Identifiers(customer_id=customer),
        policy="p", chosen=[Choice(offer_id="of-1", channel="web", propensity=1.0)],
    )  # fmt: skip


class HeldSink(FileSink):
    """A worker's sink whose first write waits at a gate: its next records stay buffered."""

    def __init__(self, directory) -> None:
        super().__init__(directory)
        self.writing, self.gate = threading.Event(), threading.Event()

    def send(self, records) -> None:
        if not self.writing.is_set():
            self.writing.set()
            assert self.gate.wait(10)
        super().send(records)


class Clock:
    """The decisions' clock, moved by hand."""

    def __init__(self) -> None:
        self.now = ERASED_AT

    def __call__(self) -> datetime:
        return self.now


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def counted(outcomes: dict[str, int]):
    return lambda outcome, n: outcomes.__setitem__(outcome, outcomes.get(outcome, 0) + n)


def test_a_decision_another_worker_still_holds_does_not_outlive_the_erasure(tmp_path):
    # Worker B is writing an earlier batch and holds the person's decision in its buffer
    # while worker A erases the person. Without the fence, B wrote it after A's pass.
    held = HeldSink(tmp_path)
    outcomes: dict[str, int] = {}
    clock = Clock()
    worker_a = DecisionLog(FileSink(tmp_path), fence=ErasureFence(tmp_path, clock=clock))
    worker_b = DecisionLog(held, fence=ErasureFence(tmp_path, clock=clock),
                           on_outcome=counted(outcomes))  # fmt: skip
    worker_b.submit(decision("b-0", "cu-other"))
    assert held.writing.wait(10)
    worker_b.submit(decision("b-1", "cu-1"))
    worker_b.submit(decision("b-2", "cu-other"))
    worker_a.submit(decision("a-1", "cu-1"))
    removed: list[int] = []

    def erase() -> None:  # as Engine.erase does it: note, erase, close the note
        fence = worker_a.fence
        note = fence.begin({"customer_id:cu-1"})
        removed.append(worker_a.erase(person_erasure({"customer_id:cu-1"})))
        clock.now += timedelta(seconds=1)
        fence.end(note)

    eraser = threading.Thread(target=erase)
    eraser.start()
    eraser.join(0.5)  # with the fence it waits for B's write in progress; without, done
    held.gate.set()
    eraser.join(10)
    worker_b.close()
    worker_a.close()

    assert sorted(d.decision_id for d in read_decisions(tmp_path)) == ["b-0", "b-2"]
    # B's held decision was either checked after the note (dropped) or written before
    # the erasure took the lock (and erased by its pass): never left behind.
    assert (removed, outcomes) in [([1], {"written": 2, "erased": 1}), ([2], {"written": 3})]


def test_the_persons_decisions_after_the_erasure_are_kept(tmp_path):
    clock = Clock()
    fence = ErasureFence(tmp_path, clock=clock)
    outcomes: dict[str, int] = {}
    log = DecisionLog(FileSink(tmp_path), fence=fence, on_outcome=counted(outcomes))
    note = fence.begin({"customer_id:cu-1"})
    log.submit(decision("during", "cu-1", ERASED_AT + timedelta(seconds=1)))
    assert log.flush()
    clock.now = ERASED_AT + timedelta(seconds=2)
    fence.end(note)
    log.submit(decision("before-end", "cu-1", ERASED_AT + timedelta(seconds=2)))
    log.submit(decision("after", "cu-1", ERASED_AT + timedelta(seconds=3)))
    log.submit(decision("someone-else", "cu-2", ERASED_AT + timedelta(seconds=1)))
    log.close()

    assert [d.decision_id for d in read_decisions(tmp_path)] == ["after", "someone-else"]
    assert outcomes == {"erased": 2, "written": 2}
    assert "cu-1" not in fence.path.read_text()  # keyed hashes, not the identifiers


def test_an_erasure_longer_than_keep_s_stays_fenced_while_its_process_lives(tmp_path):
    clock = Clock()
    fence = ErasureFence(tmp_path, clock=clock, keep_s=60)
    fence.begin({"customer_id:cu-1"})
    clock.now += timedelta(hours=2)  # a long pass over a Kafka topic
    ErasureFence(tmp_path, clock=clock).end(fence.begin({"customer_id:cu-2"}))
    with fence.checking() as erased:
        assert erased(decision("x", "cu-1", clock.now))


def test_a_note_left_open_by_a_dead_process_stops_covering_after_keep_s(tmp_path):
    clock = Clock()
    fence = ErasureFence(tmp_path, clock=clock, keep_s=600)
    with mock.patch("os.getpid", return_value=_dead_pid()):
        fence.begin({"customer_id:cu-2"})
    with fence.checking() as erased:
        assert erased(decision("x", "cu-2", ERASED_AT + timedelta(seconds=599)))
        assert not erased(decision("y", "cu-2", ERASED_AT + timedelta(seconds=601)))
    clock.now += timedelta(seconds=601)
    with fence.checking():  # past its time: the writer drops it from the file
        pass
    assert not fence.path.exists()


def test_writers_holding_the_lock_make_an_erasure_give_up_not_hang(tmp_path):
    fence = ErasureFence(tmp_path, lock_wait_s=0.05)
    with fence.checking(), pytest.raises(FenceBusyError):
        ErasureFence(tmp_path, lock_wait_s=0.05).begin({"customer_id:cu-1"})


def test_an_unreadable_fence_file_does_not_stop_the_log(tmp_path):
    fence = ErasureFence(tmp_path, clock=Clock())
    fence.path.write_text("{half a file")
    log = DecisionLog(FileSink(tmp_path), fence=fence)
    log.submit(decision("kept", "cu-1"))
    log.close()
    assert [d.decision_id for d in read_decisions(tmp_path)] == ["kept"]
    fence.end(fence.begin({"customer_id:cu-1"}))  # the next note writes it whole again
    with fence.checking() as erased:
        assert erased(decision("x", "cu-1"))


def test_an_inline_erasure_keeps_another_workers_buffered_decision_out(
    filled_store, make_client, customers, tmp_path
):
    # Two API workers of one host on one data directory; B's decision log is built as
    # create_app builds it, with a sink whose first write is held.
    settings = Settings(data_dir=tmp_path / "data")
    person, other = customers[0], customers[1]
    worker_a = make_client(filled_store, settings=settings)
    held = HeldSink(settings.event_log_dir)
    log_b = DecisionLog(held, fence=ErasureFence(settings.event_log_dir, clock=lambda: WORLD_NOW))
    worker_b = make_client(filled_store, settings=settings, decision_log=log_b)
    assert worker_b.post("/v1/offers", json=offers_body(customer_id=other)).status_code == 200
    assert held.writing.wait(10)
    assert worker_b.post("/v1/offers", json=offers_body(customer_id=person)).status_code == 200
    answers: list[dict] = []
    eraser = threading.Thread(
        target=lambda: answers.append(worker_a.delete(f"/v1/customers/{person}").json())
    )
    eraser.start()
    eraser.join(0.5)
    held.gate.set()
    eraser.join(30)
    log_b.close()

    assert answers and answers[0]["profile_id"] == f"customer_id:{person}"
    owners = {d.ids.customer_id for d in read_decisions(settings.event_log_dir)}
    assert other in owners and person not in owners
