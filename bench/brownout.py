"""Store brown-out: what a stalled Redis costs each decision, with and without the breaker.

A real ``redis-server`` is frozen with ``SIGSTOP`` (it accepts connections but never
answers, as a server stuck in a long command or swapping does), so every read waits for
the store's socket timeout (0.1 s). One API worker (the app in process, as uvicorn runs
it: one request at a time) then answers ``--requests`` page loads in a row, once with the
store breaker (``store_breaker_failures`` 5) and once with it off (a failure count it never
reaches); the table shows how long each answer took and how many waited for the store.
Then the server is thawed and the breaker's next trial (forced at once here, 1 s in
production) brings answers back from the store::

    python -m bench.brownout --json bench/results/brownout.json
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

OFF = 10**9  # a failure count the breaker never reaches


def run_case(url: str, pid: int, failures: int, requests: int, folder: Path) -> dict[str, Any]:
    """Answer ``requests`` offers requests with the store frozen; return their timings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the in-process client's deprecation is not news
        from fastapi.testclient import TestClient

    from features.store import open_store
    from omnioffer.settings import Settings
    from serving.app import create_app

    settings = Settings(data_dir=folder / f"data-{failures}", store="redis", redis_url=url,
                        store_breaker_failures=failures)  # fmt: skip
    body = {"customer_id": "c-1", "context": {"channel": "web", "page": "home"}, "limit": 5}
    store = open_store("redis", redis_url=url)  # serving's timeouts (0.1 s)
    with TestClient(create_app(settings, store=store)) as client:
        client.post("/v1/offers", json=body)  # warm: connections, caches
        os.kill(pid, signal.SIGSTOP)
        try:
            latencies, degraded = [], 0
            for _ in range(requests):
                started = time.perf_counter()
                answer = client.post("/v1/offers", json=body).json()
                latencies.append((time.perf_counter() - started) * 1000)
                degraded += answer["degraded"]
            metrics = client.get("/metrics").text
        finally:
            os.kill(pid, signal.SIGCONT)
        client.app.state.engine.breaker.half_open()  # as after store_breaker_reset_s
        recovered = not client.post("/v1/offers", json=body).json()["degraded"]
    waited = sum(1 for ms in latencies if ms >= 50)
    ordered = sorted(latencies)
    return {
        "breaker": "off" if failures == OFF else f"opens after {failures} failures",
        "requests": requests,
        "degraded": degraded,
        "waited_for_store": waited,
        "total_s": round(sum(latencies) / 1000, 3),
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 3),
        "answers_per_s": round(requests / (sum(latencies) / 1000), 1),
        "breaker_open_at_end": "omnioffer_serve_store_breaker_open 1.0" in metrics,
        "recovered_after_thaw": recovered,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both cases against one frozen server; print the table, write the JSON."""
    from omnioffer.console import write_json
    from omnioffer.services import RedisServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", type=Path, default=Path("bench/results/brownout.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="omnioffer-brownout-") as folder, \
            RedisServer() as server:  # fmt: skip
        pid = server.pid
        assert pid is not None, "redis-server is not running"
        cases = [run_case(server.url, pid, failures, args.requests, Path(folder))
                 for failures in (5, OFF)]  # fmt: skip
    result = {"benchmark": "brownout", "store_timeout_s": 0.1, "cases": cases,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    table = Table("store breaker", "answers", "degraded", "waited for the store",
                  "total s", "p50 ms", "p99 ms", "answers/s", "back after thaw",
                  title="offers with Redis frozen (SIGSTOP), one worker")  # fmt: skip
    for case in cases:
        table.add_row(
            case["breaker"], str(case["requests"]), str(case["degraded"]),
            str(case["waited_for_store"]), f"{case['total_s']:.2f}", f"{case['p50_ms']:.2f}",
            f"{case['p99_ms']:.1f}", f"{case['answers_per_s']:,.0f}",
            str(case["recovered_after_thaw"]),
        )  # fmt: skip
    Console().print(table)
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
