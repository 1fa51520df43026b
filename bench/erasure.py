"""Erasure on the Kafka decision log: how fast a pass reads the topic, and what sharing buys.

A throwaway Tansu broker gets ``--records`` offers decisions shaped as serving writes them
(200 candidates, about 15 KB each) for ``--people`` people, on a 3-partition ``decisions``
topic. Then, side by side in one run, each on people not erased before:

- one erasure that decodes every record whole (what erasure did before);
- one erasure that decodes only the owner fields, ``profile_id`` and ``ids``
  (:func:`features.decisions.person_erasure`);
- ``--concurrent`` erasures one after another, then as many at once from as many threads
  (:meth:`serving.decision_log.DecisionLog.erase` shares the passes);
- the queued eraser (:class:`serving.eraser.DecisionEraser`) with its owner index: the
  first pass builds the index in one read of the topic; then 1 % more decisions arrive
  and a pass erases one person (reading only the new records), then ``--concurrent``
  people in one pass. The index file's size per decision is reported too.

Prints a table and writes JSON::

    python -m bench.erasure --json bench/results/erasure.json
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent


def decision_records(records: int, people: int, first: int = 0,
                     ) -> list[tuple[str, bytes, bytes]]:  # fmt: skip
    """Return ``records`` offers decisions as (topic, key, value), spread over ``people``.

    Numbered from ``first`` (decision ``n`` belongs to person ``n % people``).
    """
    from features.decisions import Choice, Decision, DecisionContext, encode_decision
    from features.events import Identifiers
    from features.topics import DECISIONS

    start = datetime(2026, 3, 1, tzinfo=UTC)
    out = []
    for n in range(first, first + records):
        person = f"cu-{n % people:05d}"
        candidates = [
            Choice(offer_id=f"of-{i:03d}", channel="web", propensity=0.0045 + i * 1e-6,
                   score=0.01 + (n * 7 + i) % 997 / 1e4)
            for i in range(200)
        ]
        decision = Decision(
            decision_id=f"d-{n:07d}", decided_at=start + timedelta(seconds=n), surface="offers",
            ids=Identifiers(customer_id=person, anonymous_id=f"an-{n % people:05d}"),
            profile_id=f"customer_id:{person}", policy="serve-egreedy-0.1",
            context=DecisionContext(channel="web", page="home"), model_version="v0001",
            chosen=[Choice(offer_id=c.offer_id, channel="web", propensity=0.2, position=p,
                           reasons=["recency", "interest:coffee"])
                    for p, c in enumerate(candidates[:5])],
            candidates=candidates,
        )
        out.append((DECISIONS, decision.decision_id.encode(), encode_decision(decision)))
    return out


def _timed(action: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def run(records: int, people: int, concurrent: int) -> dict[str, Any]:
    """Fill a broker, run the erasures, and return the result document."""
    from features.decisions import Erasure, person_erasure
    from features.topics import DECISIONS
    from omnioffer.services import KafkaBroker, create_topics
    from serving.decision_log import DecisionLog, KafkaSink

    def person(n: int) -> set[str]:
        return {f"customer_id:cu-{n:05d}", f"anonymous_id:an-{n:05d}"}

    with KafkaBroker() as broker:
        create_topics(broker.bootstrap, [DECISIONS], partitions=3)
        sink = KafkaSink(broker.bootstrap, timeout=120.0)
        values = decision_records(records, people)
        for start in range(0, len(values), 1000):
            sink.send(values[start : start + 1000])
        log = DecisionLog(sink)
        assert log.flush(120.0)
        per_person = records // people

        decode_all = person_erasure(person(0))
        removed, decoding = _timed(lambda: log.erase(Erasure(decode_all.match)))
        assert removed == per_person, removed
        removed, filtered = _timed(lambda: log.erase(person_erasure(person(1))))
        assert removed == per_person, removed

        first = 2
        def one_by_one() -> list[int]:
            return [log.erase(person_erasure(person(first + i))) for i in range(concurrent)]

        removed_each, sequential = _timed(one_by_one)
        assert removed_each == [per_person] * concurrent, removed_each
        passes_before = sink.scans
        shared_counts: list[int] = []

        def at_once() -> None:
            threads = [
                threading.Thread(target=lambda n=n: shared_counts.append(
                    log.erase(person_erasure(person(first + concurrent + n)))))
                for n in range(concurrent)
            ]  # fmt: skip
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        _, shared = _timed(at_once)
        assert shared_counts == [per_person] * concurrent, shared_counts
        shared_passes = sink.scans - passes_before
        log.close()
        indexed = run_indexed(broker.bootstrap, records, people, concurrent,
                              first=first + 2 * concurrent, person=person)  # fmt: skip
    size = sum(len(v) for _, _, v in values) / len(values)
    return {
        "benchmark": "erasure",
        "broker": "tansu (in memory), 3 partitions",
        "records": records,
        "people": people,
        "bytes_per_record": round(size),
        "decode_every_record": {"seconds": round(decoding, 3),
                                "records_per_s": round(records / decoding)},
        "owner_fields": {"seconds": round(filtered, 3), "records_per_s": round(records / filtered)},
        "concurrent": concurrent,
        "one_after_another": {"seconds": round(sequential, 3), "passes": concurrent},
        "at_once": {"seconds": round(shared, 3), "passes": shared_passes},
        "indexed": indexed,
    }


def run_indexed(bootstrap: str, records: int, people: int, concurrent: int, *, first: int,
                person: Callable[[int], set[str]]) -> dict[str, Any]:  # fmt: skip
    """Time the queued eraser's passes with its owner index on the filled broker."""
    import tempfile

    from features.topics import DECISION_ERASURES, DECISION_ERASURES_DONE
    from omnioffer.services import create_topics
    from serving.decision_log import KafkaSink
    from serving.eraser import DecisionEraser, encode_job, new_job

    create_topics(bootstrap, [DECISION_ERASURES, DECISION_ERASURES_DONE])
    sink = KafkaSink(bootstrap, timeout=120.0)

    def queue(people_numbers: range) -> None:
        for n in people_numbers:
            sink.deliver(DECISION_ERASURES, f"er-{n}".encode(),
                         encode_job(new_job(f"er-{n}", person(n))))  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="omnioffer-erasure-index-") as folder:
        path = Path(folder) / "owners.sqlite"
        eraser = DecisionEraser(bootstrap, index_path=path, timeout=120.0)
        done, build_s = _timed(eraser.run_once)
        assert done == [], done
        built = eraser.last_catch_up
        new = max(1, records // 100)
        for start in range(records, records + new, 1000):
            sink.send(decision_records(min(1000, records + new - start), people, start))
        queue(range(first, first + 1))
        done, one_s = _timed(eraser.run_once)
        one_read = eraser.last_catch_up
        theirs = len(range(first, records + new, people))  # decision n is person n % people
        assert [e.decisions for e in done] == [theirs], done
        queue(range(first + 1, first + 1 + concurrent))
        done, many_s = _timed(eraser.run_once)
        assert len(done) == concurrent and all(e.decisions for e in done), done
        index_bytes = sum(f.stat().st_size for f in Path(folder).iterdir())
    sink.close()
    return {
        "build": {"seconds": round(build_s, 3), "records": built.records,
                  "records_per_s": round(built.records / build_s)},
        "one_person": {"seconds": round(one_s, 3), "new_records_read": one_read.records,
                       "decisions": theirs},
        "concurrent_people": {"seconds": round(many_s, 3), "people": concurrent},
        "index_bytes_per_decision": round(index_bytes / (records + new)),
    }  # fmt: skip


def result_table(result: dict[str, Any]) -> Table:
    """Return the side-by-side table of one run."""
    table = Table("erasure", "passes", "seconds", "records/s per pass",
                  title=f"erasure bench: {result['records']:,} decisions of "
                  f"{result['bytes_per_record']:,} bytes on Kafka")  # fmt: skip
    n = result["records"]
    for name, key in (("1 person, decoding every record", "decode_every_record"),
                      ("1 person, owner fields only", "owner_fields")):  # fmt: skip
        row = result[key]
        table.add_row(name, "1", f"{row['seconds']:.2f}", f"{row['records_per_s']:,}")
    k = result["concurrent"]
    for name, key in ((f"{k} people, one after another", "one_after_another"),
                      (f"{k} people at once (shared passes)", "at_once")):  # fmt: skip
        row = result[key]
        table.add_row(name, str(row["passes"]), f"{row['seconds']:.2f}",
                      f"{n * row['passes'] / row['seconds']:,.0f}")  # fmt: skip
    indexed = result.get("indexed")
    if indexed:
        build = indexed["build"]
        table.add_row("eraser: build its index (no erasure)", "1", f"{build['seconds']:.2f}",
                      f"{build['records_per_s']:,}")  # fmt: skip
        one = indexed["one_person"]
        table.add_row(f"eraser: 1 person, after {one['new_records_read']:,} new records",
                      "0 (index)", f"{one['seconds']:.2f}", "")  # fmt: skip
        many = indexed["concurrent_people"]
        table.add_row(f"eraser: {many['people']} people in one pass", "0 (index)",
                      f"{many['seconds']:.2f}", "")  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the table and write the JSON."""
    from omnioffer.console import console, write_json

    parser = argparse.ArgumentParser(prog="python -m bench.erasure")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--people", type=int, default=5_000)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/erasure.json")
    args = parser.parse_args(argv)
    result = run(args.records, args.people, args.concurrent)
    console.print(result_table(result))
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
