"""Serving benchmark: the decision API against Redis at a fixed offered load, beside Feast.

One run, side by side (these machines are noisy, so only compare within a run):

1. **fill** — a simulated world (the simulator, then the feature pipeline's own
   :func:`features.pipeline.recompute`) gives realistic stored profiles; they are replicated
   under new customer ids up to ``profiles`` (100,000) and written to Redis in pipelined
   batches, with their identity mappings.
2. **catalog** — a bench catalog of 200 offers with no channel, store or tier limits, so
   every request has 200 eligible candidates to score and arbitrate.
3. **API** — ``omnioffer serve`` in a subprocess (uvicorn, ``workers`` processes: 1) on
   that Redis, with the registry's promoted model; with none promoted (a fresh clone), a
   model trained and promoted here on the simulated world of step 1, in a registry of the
   bench's own (the JSON's ``model`` says which).
4. **load** — a separate process offers a fixed load (open loop: requests are scheduled at
   ``rate`` per second whatever the answers do, over ``connections`` keep-alive
   connections), first to ``POST /v1/offers``, then to ``POST /v1/channel``, then to
   ``GET /healthz``: that last one does no work, so its latency is what the HTTP stack, the
   generator and this machine cost any endpoint (``floor_p99_ms``). It is an upper bound on
   that cost for the offers lane, which skips FastAPI's routing (about 45 µs a request that
   ``/healthz`` still pays). Latency runs
   from each request's *scheduled* time, so queueing in front of a slow server counts; a
   kernel interval timer releases each request on time (:mod:`bench.pacing`: the event
   loop's millisecond timers released them up to 1.2 ms late, counted as latency), and
   ``pacer_p99_ms`` reports the generator's own remaining lateness.
   ``wrk`` is not used: it is closed-loop and cannot hold a fixed offered load. The
   generator runs on uvloop: on the same two cores as the API, the plain asyncio loop
   took 15 % more CPU per request and added about 0.3 ms of its own to the median.
5. **Feast** — Feast's own ``get_online_features`` for the same profile features of the
   same customers from the same Redis, in a separate virtualenv (never the project's), one
   entity per call as at a page load. If Feast cannot be installed or run, ``feast_p99_ms``
   is ``null`` and ``feast_error`` says why.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import yaml
from rich.console import Console
from rich.table import Table

from bench.pacing import kernel_timer_available, pace
from features.catalog import DEFAULT_CATALOG_DIR, load_catalog
from features.policy import DEFAULT_POLICIES_PATH
from features.profile import decode_profile, profile_features
from features.store import IdentityWrite, ProfileWrite, StoreBatch, open_store
from omnioffer.services import RedisClusterServers, RedisServer, free_port

FEAST_VENV = Path("/tmp/feast-venv")
FEAST_VERSION = "0.67.0"
NAMESPACE = "bench"
PATHS = {
    "offers": "/v1/offers",
    "channel": "/v1/channel",
    "feast": "/get-online-features",
    "floor": "/healthz",  # GET, no work: what the HTTP stack and this machine cost alone
}
KINDS = ("discount", "bonus_points", "free_delivery", "cross_sell")


class BenchError(RuntimeError):
    """A phase failed: the API did not start, the load generator died, and so on."""


@dataclass(frozen=True)
class ServeBench:
    """What to run. ``redis_url`` ``None`` starts a throwaway redis-server.

    With ``cluster``, the store is a Redis Cluster (three primaries started here when
    ``redis_url`` is ``None``), and Feast reads from the same cluster.
    """

    profiles: int = 100_000
    rate: int = 500
    seconds: float = 20.0
    redis_url: str | None = None
    cluster: bool = False
    seed: int = 7
    feast: bool = True
    registry_dir: Path | None = None
    train_if_none: bool = True
    world_customers: int = 2_000
    world_days: int = 14
    offers: int = 200
    connections: int = 32
    warmup_s: float = 3.0
    feast_calls: int = 3_000
    # One API process on two cores: the load generator and Redis take the other core.
    # Two processes contend with them for CPU (offers p99 4.1 / 4.4 / 3.5 ms against
    # 3.3 / 2.6 / 2.5 ms with one, 2026-12-05; README "Benchmarks").
    workers: int = 1
    feast_server_workers: int = 2
    repeats: int = 3
    extra: dict[str, Any] = field(default_factory=dict)


# --- 1. profiles ---------------------------------------------------------------------------


BENCH_HASH_KEY = "bench-serve-key"


def world_profiles(bench: ServeBench, now: datetime, folder: Path) -> list[bytes]:
    """Simulate a world ending now into ``folder``; return its stored customer profiles."""
    from features.eventlog import load_events
    from features.pipeline import recompute
    from simulator import FileSink, SimulationConfig, simulate

    key = BENCH_HASH_KEY.encode()
    start = (now - timedelta(days=bench.world_days)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    config = SimulationConfig(customers=bench.world_customers, days=bench.world_days,
                              seed=bench.seed, start=start, contact_hash_key=key)  # fmt: skip
    simulate(config, load_catalog(), FileSink(folder))
    result = recompute(load_events(folder, key=key))
    return [v for p, v in sorted(result.profiles.items()) if p.startswith("customer_id:")]


def customer(i: int) -> str:
    """Return the bench customer id number ``i``."""
    return f"bench-{i:06d}"


def fill_redis(
    url: str, base: list[bytes], n: int, chunk: int = 2_000, *, cluster: bool = False
) -> float:
    """Write ``n`` profiles (replicas of ``base`` under new ids) and their identity maps."""
    started = time.perf_counter()
    with open_store("redis", redis_url=url, namespace=NAMESPACE, socket_timeout=10.0,
                    cluster=cluster) as store:  # fmt: skip
        records = [decode_profile(raw) for raw in base]
        for first in range(0, n, chunk):
            profiles, identity = [], []
            for i in range(first, min(n, first + chunk)):
                record = records[i % len(records)]
                profile_id = f"customer_id:{customer(i)}"
                renamed = {**record, "profile_id": profile_id, "fragments": [profile_id]}
                value = orjson.dumps(renamed)
                profiles.append(ProfileWrite(profile_id, value))
                identity.append(IdentityWrite(profile_id, profile_id))
                identity.append(IdentityWrite(f"anonymous_id:a-{customer(i)}", profile_id))
            store.write(StoreBatch(profiles=profiles, identity=identity))
    return time.perf_counter() - started


# --- 2. catalog and policies ----------------------------------------------------------------


def bench_catalog(folder: Path, offers: int) -> None:
    """Write a catalog whose ``offers`` offers are eligible everywhere (no limits)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("categories", "products", "stores", "channels"):
        shutil.copy(DEFAULT_CATALOG_DIR / f"{name}.yaml", folder / f"{name}.yaml")
    categories = [c["id"] for c in yaml.safe_load((folder / "categories.yaml").read_text())]
    rng = random.Random(7)
    entries = []
    for i in range(offers):
        kind = KINDS[i % len(KINDS)]
        value = {"discount": rng.choice([5, 10, 15, 20]), "bonus_points": rng.choice([100, 200])}
        entries.append({
            "id": f"of-bench-{i:03d}", "name": f"bench offer {i}", "kind": kind,
            "value": float(value.get(kind, rng.choice([2.5, 4.9]))),
            "cost": round(rng.uniform(0.5, 4.0), 2),
            "valid_from": "2020-01-01T00:00:00+00:00", "valid_to": "2099-12-31T00:00:00+00:00",
            "category": categories[i % len(categories)],
        })  # fmt: skip
    (folder / "offers.yaml").write_text(yaml.safe_dump(entries, sort_keys=False))
    load_catalog(folder)  # fail here, not in the server, if the file is wrong


def bench_policies(path: Path) -> None:
    """Write the shipped policies without per-offer entries (the bench offers differ)."""
    document = yaml.safe_load(DEFAULT_POLICIES_PATH.read_text())
    document["levers"]["offers"] = {}
    document["values"]["offers"] = {}
    document["budget_spent"] = {}
    path.write_text(yaml.safe_dump(document))


def model_note(registry_dir: Path | None) -> tuple[Path | None, str]:
    """Return the promoted-model pointer to serve (if serving can load it) and a note."""
    from serving.registry import default_loader

    pointer = registry_dir / "promoted" if registry_dir else None
    if pointer is None or not pointer.exists():
        return None, "heuristic: no model is promoted in the registry"
    if default_loader() is None:
        return None, (
            f"heuristic: {pointer.read_text().strip()} is promoted but serving has no loader "
            "for registry models yet (models.registry.load_scorer)"
        )
    return pointer, f"promoted model {pointer.read_text().strip()}"


def train_bench_model(bench: ServeBench, world: Path, work: Path) -> tuple[Path, str]:
    """Train and promote a model on the bench world in a registry of its own.

    For a registry with no promoted model (a fresh clone): the API then serves what
    production would, a LightGBM pair from the models workflow, not the heuristic.
    """
    from models.workflow import train
    from omnioffer.settings import Settings

    # The bench's own settings only: an OMNIOFFER_* variable of the shell (a catalog, the
    # attribution windows) would train on other terms than the world was simulated with.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OMNIOFFER_")}
    with mock.patch.dict(os.environ, clean, clear=True):
        settings = Settings(contact_hash_key=BENCH_HASH_KEY, seed=bench.seed,
                            data_dir=work / "train", registry_dir=work / "registry")  # fmt: skip
    version, *_ = train(settings, world, promote=True)
    pointer, _ = model_note(settings.model_registry_dir)
    if pointer is None:
        message = f"trained {version} for the bench but serving cannot load it"
        raise BenchError(message)
    return pointer, f"model {version}, trained here on the bench world (none was promoted)"


# --- 3. the API ----------------------------------------------------------------------------


def start_api(
    env: dict[str, str], port: int, log: Path, workers: int = 1
) -> subprocess.Popen[bytes]:
    """Start ``omnioffer serve`` and wait until ``/readyz`` answers 200."""
    command = [sys.executable, "-m", "omnioffer.cli", "serve", "--workers", str(workers)]
    return start_server(command, f"http://127.0.0.1:{port}/readyz", log, "the API",
                        env={**os.environ, **env})  # fmt: skip


def start_server(command: list[str], ready_url: str, log: Path, name: str, *,
                 env: dict[str, str] | None = None, cwd: Path | None = None,
                 timeout_s: float = 60) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start a server process and wait until ``ready_url`` answers 200."""
    handle = log.open("wb")
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=handle,
                               stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            message = f"{name} exited with {process.returncode}: {log.read_text()[-2000:]}"
            raise BenchError(message)
        try:
            with urllib.request.urlopen(ready_url, timeout=1) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    message = f"{name} did not become ready in {timeout_s:.0f} s: {log.read_text()[-2000:]}"
    raise BenchError(message)


def served_model(port: int, *, expect_model: bool = True, tries: int = 120,
                 in_a_row: int = 12) -> str:  # fmt: skip
    """Return the model version the API answers with, once every worker serves it.

    Each check is a fresh connection, which any worker may accept; ``in_a_row`` answers
    with a registry model mean every worker has loaded it (the watcher's first poll) and
    is idle. Load that starts while a worker is still loading would leave the other with
    most of the keep-alive connections for the whole run. Without ``expect_model`` (no
    model promoted) the heuristic is what every worker serves.
    """
    body = orjson.dumps({"customer_id": customer(0), "context": {"channel": "web"}})
    version, streak = "unknown", 0
    for _ in range(tries):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/offers", data=body,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=5) as answer:
            version = orjson.loads(answer.read())["model_version"]
        streak = 0 if expect_model and version.startswith("heuristic") else streak + 1
        if streak >= in_a_row:
            break
        time.sleep(0.25)
    return version


def metric(port: int, name: str) -> float:
    """Sum a Prometheus counter of the running API over its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


# --- 4. the load generator (runs in its own process: python -m bench.serve loadgen) ----------


def _bodies(kind: str, n: int, customers: int, seed: int, feast_refs: list[str] | None = None,
            ) -> list[bytes]:  # fmt: skip
    rng = random.Random(seed)
    out = []
    for i in range(n):
        who = customer(rng.randrange(customers))
        if kind == "floor":
            out.append(b"")
            continue
        if kind == "offers":
            body = {"customer_id": who, "context": {"channel": rng.choice(["web", "app"]),
                    "page": "home"}, "limit": 5}  # fmt: skip
        elif kind == "feast":  # Feast's feature server: the same customer's profile features
            # By name: a feature service costs the server 8.7 ms a request against 3.9 ms
            # for the same features listed (closed loop, one client, measured here).
            body = {"features": feast_refs, "entities": {"customer_id": [who]}}
        else:
            body = {"customer_id": who, "message": {"campaign": f"bench-{i}", "kind": "marketing",
                    "urgency": "normal"}}  # fmt: skip
        out.append(orjson.dumps(body))
    return out


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return int(head[9:12]), await reader.readexactly(length)


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def balanced_connections(port: int, connections: int, workers: int) -> list[Stream]:
    """Open keep-alive connections spread evenly over the API's worker processes.

    A worker woken with several pending connections accepts them all, and keep-alive
    ties each to its worker for the whole run: 21 of 32 on one worker was seen. A load
    balancer would spread them; here each new connection asks ``/healthz`` which worker
    it reached, and one that would tip the balance is closed and opened again.
    """
    share = -(-connections // workers)
    per_worker: dict[int, int] = {}
    kept: list[Stream] = []
    for _ in range(connections * 20):
        if len(kept) == connections:
            break
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        _, body = await _read_answer(reader)
        worker = int(orjson.loads(body).get("worker", 0))
        if per_worker.get(worker, 0) < share:
            per_worker[worker] = per_worker.get(worker, 0) + 1
            kept.append((reader, writer))
        else:
            writer.close()
        await asyncio.sleep(0.005)
    while len(kept) < connections:  # the balance could not be had: take what comes
        kept.append(await asyncio.open_connection("127.0.0.1", port))
    return kept


async def _load(port: int, path: str, bodies: list[bytes], rate: float, connections: int,
                warmup: int, workers: int = 1) -> dict[str, Any]:  # fmt: skip
    requests = [
        (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
         f"Content-Length: {len(b)}\r\n\r\n").encode() + b
        if b else f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        for b in bodies
    ]  # fmt: skip
    jobs: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    results: list[tuple[int, float, float, float, int, bool]] = []

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (job := await jobs.get()) is not None:
            number, scheduled = job
            sent = time.perf_counter()
            writer.write(requests[number])
            status, body = await _read_answer(reader)
            degraded = b'"degraded":true' in body
            results.append((number, scheduled, sent, time.perf_counter(), status, degraded))
        writer.close()

    opened = await balanced_connections(port, connections, workers)
    tasks = [asyncio.create_task(worker(*stream)) for stream in opened]
    await asyncio.sleep(0.2)  # connections open before the clock starts
    lateness = await pace(
        rate, len(requests), lambda number, scheduled: jobs.put_nowait((number, scheduled))
    )
    for _ in tasks:
        jobs.put_nowait(None)
    await asyncio.gather(*tasks)
    measured = [r for r in results if r[0] >= warmup]
    from_schedule = sorted((r[3] - r[1]) * 1000 for r in measured)
    service = sorted((r[3] - r[2]) * 1000 for r in measured)
    first = min(r[1] for r in measured)
    last = max(r[3] for r in measured)
    statuses: dict[str, int] = {}
    for r in measured:
        statuses[str(r[4])] = statuses.get(str(r[4]), 0) + 1
    return {
        "requests": len(measured),
        "offered_rps": rate,
        "rps": round(len(measured) / (last - first), 1),
        "p50_ms": round(_quantile(from_schedule, 0.50), 3),
        "p90_ms": round(_quantile(from_schedule, 0.90), 3),
        "p99_ms": round(_quantile(from_schedule, 0.99), 3),
        "max_ms": round(from_schedule[-1], 3),
        "service_p50_ms": round(_quantile(service, 0.50), 3),
        "service_p99_ms": round(_quantile(service, 0.99), 3),
        "statuses": statuses,
        "degraded": sum(1 for r in measured if r[5]),
        "pacer": "timerfd" if kernel_timer_available() else "asyncio.sleep",
        "pacer_p99_ms": round(_quantile(sorted(lateness[warmup:]), 0.99) * 1000, 3),
    }


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_load(port: int, kind: str, bench: ServeBench, workers: int | None = None,
             extra: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run the load generator in a separate process and return its measurements.

    ``workers`` is how many server processes to spread the connections over (by what
    ``/healthz`` says); 1 leaves them where the kernel puts them.
    """
    command = [
        sys.executable, "-m", "bench.serve", "loadgen", "--port", str(port), "--kind", kind,
        "--rate", str(bench.rate), "--seconds", str(bench.seconds), "--warmup",
        str(bench.warmup_s), "--customers", str(bench.profiles), "--connections",
        str(bench.connections), "--seed", str(bench.seed),
        "--workers", str(bench.workers if workers is None else workers), *(extra or []),
    ]  # fmt: skip
    before = cpu_times()
    done = subprocess.run(command, capture_output=True, timeout=bench.seconds * 3 + 120)
    if done.returncode != 0:
        message = f"load generator failed: {done.stderr.decode()[-2000:]}"
        raise BenchError(message)
    result: dict[str, Any] = json.loads(done.stdout)
    result["machine"] = machine_shares(before, cpu_times())
    return result


def cpu_times() -> list[int] | None:
    """Return the machine's CPU time counters (``/proc/stat``), or ``None`` off Linux."""
    try:
        with open("/proc/stat") as stat:
            return [int(n) for n in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def machine_shares(before: list[int] | None, after: list[int] | None) -> dict[str, float]:
    """Return how busy the machine was between two :func:`cpu_times`, in % of its CPU time.

    ``busy_pct`` is everything but idle and I/O wait; ``steal_pct`` is the time the
    hypervisor gave this virtual machine's CPUs to other tenants: when it is high, every
    process here, Feast's read included, runs slower.

    >>> machine_shares([10, 0, 0, 80, 0, 0, 0, 10], [30, 0, 0, 140, 0, 0, 0, 30])
    {'busy_pct': 40.0, 'steal_pct': 20.0}
    """
    if before is None or after is None:
        return {}
    spent = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(spent[:8]) or 1  # user nice system idle iowait irq softirq steal
    idle = spent[3] + spent[4]
    return {
        "busy_pct": round(100 * (total - idle) / total, 1),
        "steal_pct": round(100 * spent[7] / total, 1),
    }


# --- 4b. the same decision in process, one at a time: like for like with Feast's read ---


async def offers_in_process(calls: int, warmup: int, customers: int, seed: int,
                            ) -> dict[str, Any]:  # fmt: skip
    """Time ``POST /v1/offers``'s work without HTTP, one call at a time, as Feast is timed.

    The app is built from the environment (``OMNIOFFER_*``, as each API worker builds it)
    and started (promoted model loaded, budgets tracked); each call decodes the body,
    decides and encodes the answer, as the handler does. The decision record, which the
    API builds and encodes once the response is sent, is timed apart.
    """
    from bench.serve_inprocess import CaptureLog, handle, record_bytes
    from omnioffer.settings import Settings
    from serving.app import create_app

    capture = CaptureLog()
    app = create_app(Settings(), decision_log=capture)  # type: ignore[arg-type]
    bodies = _bodies("offers", warmup + calls, customers, seed)
    decide_ms, record_ms = [], []
    clock = time.perf_counter_ns
    async with app.router.lifespan_context(app):
        engine = app.state.engine
        for number, body in enumerate(bodies):
            t0 = clock()
            handle(engine, "offers", body)
            t1 = clock()
            record_bytes(capture.items.pop())
            t2 = clock()
            if number >= warmup:
                decide_ms.append((t1 - t0) / 1e6)
                record_ms.append((t2 - t1) / 1e6)
        version = engine.scorers.current.version
    decide_ms.sort()
    record_ms.sort()
    return {
        "calls": calls,
        "model_version": version,
        "p50_ms": round(_quantile(decide_ms, 0.50), 3),
        "p99_ms": round(_quantile(decide_ms, 0.99), 3),
        "record_p50_ms": round(_quantile(record_ms, 0.50), 3),
        "record_p99_ms": round(_quantile(record_ms, 0.99), 3),
    }


def run_offers_in_process(bench: ServeBench, env: dict[str, str]) -> dict[str, Any]:
    """Run :func:`offers_in_process` in a fresh process with the API's environment."""
    command = [
        sys.executable, "-m", "bench.serve", "inprocess", "--calls", str(bench.feast_calls),
        "--customers", str(bench.profiles), "--seed", str(bench.seed + 1),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, timeout=600, env={**os.environ, **env})
    if done.returncode != 0:
        message = f"in-process offers run failed: {done.stderr.decode()[-2000:]}"
        raise BenchError(message)
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


# --- 5. Feast -------------------------------------------------------------------------------

FEAST_SCRIPT = textwrap.dedent(
    '''
    import json, sys, time, random
    from datetime import datetime, timezone
    from pathlib import Path
    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64

    repo, redis_at, features_file = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    calls, redis_type = int(sys.argv[4]), sys.argv[5]
    rows = [json.loads(line) for line in open(features_file)]
    names = [k for k in rows[0] if k != "customer_id"]
    (repo / "feature_store.yaml").write_text(
        "project: omnioffer_bench\\nregistry: registry.db\\nprovider: local\\n"
        "entity_key_serialization_version: 3\\n"
        f"online_store:\\n  type: redis\\n  redis_type: {redis_type}\\n"
        f"  connection_string: {redis_at}\\n"
        "offline_store:\\n  type: file\\n"
    )
    now = datetime.now(timezone.utc)
    frame = pd.DataFrame(rows)
    frame["event_timestamp"] = now
    frame.to_parquet(repo / "profiles.parquet")
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    view = FeatureView(
        name="profile", entities=[customer], ttl=None, online=True,
        schema=[Field(name=n, dtype=Float64) for n in names],
        source=FileSource(path=str(repo / "profiles.parquet"), timestamp_field="event_timestamp"),
    )
    store = FeatureStore(repo_path=str(repo))
    store.apply([customer, view])
    started = time.perf_counter()
    for first in range(0, len(frame), 5000):
        store.write_to_online_store("profile", frame.iloc[first:first + 5000])
    write_s = time.perf_counter() - started
    refs = [f"profile:{n}" for n in names]
    (repo / "refs.json").write_text(json.dumps(refs))  # for the feature server's load
    ids = [r["customer_id"] for r in rows]
    rng = random.Random(7)
    for _ in range(200):
        entity = [{"customer_id": rng.choice(ids)}]
        store.get_online_features(features=refs, entity_rows=entity).to_dict()
    latencies = []
    for _ in range(calls):
        who = rng.choice(ids)
        t = time.perf_counter()
        entity = [{"customer_id": who}]
        result = store.get_online_features(features=refs, entity_rows=entity).to_dict()
        latencies.append((time.perf_counter() - t) * 1000)
        assert result["customer_id"] == [who]
    assert all(v[0] is not None for v in result.values()), "features came back empty"
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, round(p * (len(latencies) - 1)))]
    print(json.dumps({"feast_version": __import__("feast").__version__, "features": len(names),
        "entities": len(rows), "calls": calls, "write_s": round(write_s, 1),
        "p50_ms": round(q(0.5), 3), "p99_ms": round(q(0.99), 3)}))
    '''
)


def feast_features(base: list[bytes], n: int, now: datetime, path: Path) -> int:
    """Write the numeric profile features of the ``n`` bench customers as JSONL for Feast."""
    as_of = int(now.timestamp())
    computed = []
    for raw in base:
        features = profile_features(decode_profile(raw), as_of)
        computed.append({
            k: float(v) if v is not None else 0.0
            for k, v in features.items()
            if isinstance(v, int | float | bool | None) and k != "hour_histogram"
        })  # fmt: skip
    with path.open("wb") as handle:
        for i in range(n):
            handle.write(orjson.dumps({"customer_id": customer(i), **computed[i % len(computed)]}))
            handle.write(b"\n")
    return len(computed[0])


def run_feast(bench: ServeBench, redis_at: str, base: list[bytes], now: datetime,
              work: Path, console: Console) -> dict[str, Any]:  # fmt: skip
    """Install Feast in its own venv if needed and measure its online read."""
    python = FEAST_VENV / "bin" / "python"
    try:
        if not python.exists():
            console.print(f"installing feast[redis]=={FEAST_VERSION} into {FEAST_VENV}")
            base_python = shutil.which("python3") or "python3"  # not the project's venv
            subprocess.run([base_python, "-m", "venv", str(FEAST_VENV)], check=True,
                           capture_output=True)  # fmt: skip
        check = subprocess.run([str(python), "-c", "import feast"], capture_output=True)
        if check.returncode != 0:
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", f"feast[redis]=={FEAST_VERSION}"],
                check=True, capture_output=True, timeout=1200,
            )  # fmt: skip
    except (subprocess.SubprocessError, OSError) as error:
        detail = getattr(error, "stderr", b"") or b""
        return {"error": f"cannot install Feast: {error} {detail.decode()[-500:]}"}
    repo = work / "feast_repo"
    repo.mkdir()
    features_file = work / "features.jsonl"
    feast_features(base, bench.profiles, now, features_file)
    script = work / "feast_bench.py"
    script.write_text(FEAST_SCRIPT)
    done = subprocess.run(
        [str(python), str(script), str(repo), redis_at, str(features_file),
         str(bench.feast_calls), "redis_cluster" if bench.cluster else "redis"],
        capture_output=True, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        return {"error": f"Feast run failed: {done.stderr.decode()[-1500:]}"}
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def feast_refs(repo: Path) -> list[str]:
    """Return the feature references :data:`FEAST_SCRIPT` wrote for the bench profile."""
    refs: list[str] = json.loads((repo / "refs.json").read_text())
    return refs


def check_feast_answer(port: int, repo: Path) -> None:
    """Ask the feature server for one bench customer; raise unless every feature is there."""
    body = _bodies("feast", 1, 1, 0, feast_refs(repo))[0]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/get-online-features", data=body,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as answer:
        results = orjson.loads(answer.read())["results"]
    missing = [i for i, r in enumerate(results) if r["statuses"] != ["PRESENT"]]
    if len(results) < 2 or len(missing) > 1:  # the entity column itself may not say PRESENT
        message = f"Feast's feature server answered without the features: {results[:3]}"
        raise BenchError(message)


def run_feast_server(bench: ServeBench, work: Path, console: Console) -> dict[str, Any]:
    """Offer the same load to Feast's own feature server (``feast serve``) and measure it.

    Needs the repository :func:`run_feast` applied and filled. The server gets
    ``feast_server_workers`` (two: with two it already queues, p99 0.1-1 s in the
    2026-12-05 runs), and the load generator the same rate, duration and connections as
    the decision endpoints (Feast does not say which worker answered, so its connections go
    where the kernel puts them). Returns the median round, every round under ``runs``.
    """
    port = free_port()
    command = [
        str(FEAST_VENV / "bin" / "feast"), "-c", str(work / "feast_repo"), "serve",
        "-p", str(port), "-w", str(bench.feast_server_workers), "--no-access-log",
        # Feast restarts a worker every 1,000 requests by default; a restart mid-run
        # would be measured as Feast's latency.
        "--max-requests", "1000000000", "--max-requests-jitter", "0",
        "--registry_ttl_sec", "3600",
    ]  # fmt: skip
    try:
        server = start_server(command, f"http://127.0.0.1:{port}/health",
                              work / "feast_server.log", "feast serve")  # fmt: skip
    except (BenchError, OSError) as error:
        return {"error": str(error)}
    try:
        check_feast_answer(port, work / "feast_repo")
        console.print(f"Feast feature server up on :{port}; offering {bench.rate} req/s")
        extra = ["--feast-refs", str(work / "feast_repo" / "refs.json")]
        runs = [run_load(port, "feast", bench, workers=1, extra=extra)
                for _ in range(bench.repeats)]  # fmt: skip
    except BenchError as error:
        return {"error": str(error)}
    finally:
        _stop(server)
    return {**median_run(runs), "runs": runs, "workers": bench.feast_server_workers,
            "server": "feast serve (gunicorn + uvicorn workers)"}  # fmt: skip


# --- the run --------------------------------------------------------------------------------


def run_serve_bench(bench: ServeBench, console: Console) -> dict[str, Any]:
    """Run every phase and return the result document."""
    now = datetime.now(UTC)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="omnioffer-serve-")))
        url = bench.redis_url
        if url is None:
            server = stack.enter_context(RedisClusterServers() if bench.cluster else RedisServer())
            url = server.url
        # Feast's connection string: host:port (a cluster client finds the other nodes).
        redis_at = url.split("://", 1)[-1].rsplit("@", 1)[-1].split("/", 1)[0]
        console.print(f"simulating {bench.world_customers:,} customers × {bench.world_days} days")
        base = world_profiles(bench, now, work / "world")
        where = "a Redis Cluster" if bench.cluster else "Redis"
        console.print(f"writing {bench.profiles:,} profiles ({len(base):,} simulated) to {where}")
        fill_s = fill_redis(url, base, bench.profiles, cluster=bench.cluster)
        bench_catalog(work / "catalog", bench.offers)
        bench_policies(work / "policies.yaml")
        pointer, model = model_note(bench.registry_dir)
        if pointer is None and bench.train_if_none:
            console.print("no model is promoted: training one on the bench world")
            pointer, model = train_bench_model(bench, work / "world", work)
        port = free_port()
        env = {
            "OMNIOFFER_STORE": "redis", "OMNIOFFER_REDIS_URL": url,
            "OMNIOFFER_REDIS_NAMESPACE": NAMESPACE, "OMNIOFFER_CATALOG_DIR": str(work / "catalog"),
            "OMNIOFFER_POLICIES_PATH": str(work / "policies.yaml"),
            "OMNIOFFER_DATA_DIR": str(work / "data"), "OMNIOFFER_SERVE_PORT": str(port),
            "OMNIOFFER_DECISION_LOG": "files",
            "OMNIOFFER_REDIS_CLUSTER": "1" if bench.cluster else "0",
        }  # fmt: skip
        if pointer is not None:
            env["OMNIOFFER_MODEL_POINTER"] = str(pointer.resolve())
            env["OMNIOFFER_REGISTRY_DIR"] = str(pointer.resolve().parent)
        api = start_api(env, port, work / "api.log", bench.workers)
        stack.callback(_stop, api)
        served = served_model(port, expect_model=pointer is not None)
        console.print(f"API up on :{port} ({model}); offering {bench.rate} req/s")
        # Alternating rounds: this machine's speed drifts (other tenants), and near
        # saturation the tail follows it; the median round is reported, every one kept.
        offers_runs, channel_runs, floor_runs = [], [], []
        for round_no in range(bench.repeats):
            console.print(f"round {round_no + 1}/{bench.repeats}: offers, channel, then /healthz")
            offers_runs.append(run_load(port, "offers", bench))
            channel_runs.append(run_load(port, "channel", bench))
            floor_runs.append(run_load(port, "floor", bench))
        offers, channel = median_run(offers_runs), median_run(channel_runs)
        floor = median_run(floor_runs)
        console.print("timing Engine.offers in process, one call at a time")
        in_process = run_offers_in_process(bench, env)
        if in_process["model_version"] != served:
            message = (f"in-process run scored with {in_process['model_version']}, "
                       f"the API with {served}: not like for like")  # fmt: skip
            raise BenchError(message)
        dropped = metric(port, 'omnioffer_serve_decision_log_total{outcome="dropped"}')
        feast: dict[str, Any] = {"error": "skipped (--no-feast)"}
        feast_server: dict[str, Any] = {"error": "skipped (no Feast repository)"}
        if bench.feast:
            store = "Redis Cluster" if bench.cluster else "Redis"
            console.print(f"measuring Feast get_online_features from the same {store}")
            feast = run_feast(bench, redis_at, base, now, work, console)
            if "error" not in feast:
                feast_server = run_feast_server(bench, work, console)
    feast_p99 = feast.get("p99_ms")
    server_p99 = feast_server.get("p99_ms")
    return {
        "benchmark": "serve",
        "profiles": bench.profiles,
        "candidates_per_request": bench.offers,
        "offered_rps": bench.rate,
        "seconds": bench.seconds,
        "model": model,
        "model_served": served,
        "redis": "cluster (3 primaries)" if bench.cluster else "one server",
        "fill_s": round(fill_s, 1),
        "offers": offers,
        "channel": channel,
        "repeats": bench.repeats,
        "offers_runs": offers_runs,
        "channel_runs": channel_runs,
        "rps": offers["rps"],
        "p50_ms": offers["p50_ms"],
        "p99_ms": offers["p99_ms"],
        "channel_rps": channel["rps"],
        "channel_p50_ms": channel["p50_ms"],
        "channel_p99_ms": channel["p99_ms"],
        # Context: GET /healthz at the same load through the same server and generator,
        # the part of every endpoint's latency that no decision code can remove (an upper
        # bound for offers, whose lane skips the router that /healthz goes through).
        "floor": floor,
        "floor_runs": floor_runs,
        "floor_p50_ms": floor["p50_ms"],
        "floor_p99_ms": floor["p99_ms"],
        # Like for like with Feast's read: the same decision in process, one call at a time.
        "offers_in_process": in_process,
        "offers_in_process_p99_ms": in_process["p99_ms"],
        "ratio_in_process_p99_to_feast": (
            round(in_process["p99_ms"] / feast_p99, 3) if feast_p99 else None
        ),
        "decision_log_dropped": dropped,
        "feast_p50_ms": feast.get("p50_ms"),
        "feast_p99_ms": feast_p99,
        "feast": feast,
        "feast_error": feast.get("error"),
        "ratio_p99_to_feast": round(offers["p99_ms"] / feast_p99, 3) if feast_p99 else None,
        # Context, not the target: Feast's own feature server under the same HTTP load.
        "feast_server_rps": feast_server.get("rps"),
        "feast_server_p50_ms": feast_server.get("p50_ms"),
        "feast_server_p99_ms": server_p99,
        "feast_server": feast_server,
        "ratio_p99_to_feast_server": (
            round(offers["p99_ms"] / server_p99, 3) if server_p99 else None
        ),
        "target": "POST /v1/offers p99 < 10 ms at >= 500 req/s; p99 <= Feast's read",
        "load_generator": (
            "open-loop asyncio HTTP/1.1 client in its own process (bench.serve), on "
            + ("uvloop" if importlib.util.find_spec("uvloop") else "the asyncio loop")
        ),
        "server": f"uvicorn, {bench.workers} worker(s), {_http_stack()}",
        "workers": bench.workers,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "measured_at": now.isoformat(timespec="seconds"),
    }


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the run with the median p99 (the lower middle one of an even count)."""
    return sorted(runs, key=lambda run: run["p99_ms"])[(len(runs) - 1) // 2]


def result_table(result: dict[str, Any]) -> Table:
    """Return the side-by-side table of one run."""
    table = Table("", "rps", "p50 ms", "p99 ms", "p99 ms of each round",
                  "steal % of each round", "max ms", "not 200", "degraded",
                  title=f"serve bench: {result['profiles']:,} profiles, "
                  f"{result['candidates_per_request']} candidates, {result['model']}; "
                  "the median round")  # fmt: skip
    rows = [("POST /v1/offers", "offers"), ("POST /v1/channel", "channel")]
    if "floor" in result:  # results written before the floor was measured have none
        rows.append(("GET /healthz (HTTP cost, upper bound)", "floor"))
    for name, key in rows:
        row = result[key]
        runs = result.get(f"{key}_runs", [row])
        rounds = " / ".join(f"{r['p99_ms']:.1f}" for r in runs)
        steal = " / ".join(_fmt(r.get("machine", {}).get("steal_pct")) for r in runs)
        failed = sum(n for status, n in row["statuses"].items() if status != "200")
        table.add_row(
            name, f"{row['rps']:,.0f}", f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}", rounds,
            steal, f"{row['max_ms']:.1f}", str(failed), str(row["degraded"]),
        )  # fmt: skip
    feast = result["feast_p99_ms"]
    table.add_row("Feast get_online_features", "", _fmt(result["feast_p50_ms"]), _fmt(feast), "",
                  "", "", "", "")  # fmt: skip
    table.add_row("ratio p99 offers / Feast", "", "", _fmt(result["ratio_p99_to_feast"]), "", "",
                  "", "", "")  # fmt: skip
    inside = result.get("offers_in_process")
    if inside:  # results written before it was measured have none
        table.add_row("offers in process, one at a time", "", _fmt(inside["p50_ms"]),
                      _fmt(inside["p99_ms"]), "", "", "", "", "")  # fmt: skip
        ratio = _fmt(result["ratio_in_process_p99_to_feast"])
        table.add_row("ratio p99 in process / Feast", "", "", ratio, "", "", "", "", "")
    server = result.get("feast_server") or {}
    if "p99_ms" in server:
        rounds = " / ".join(f"{r['p99_ms']:.1f}" for r in server.get("runs", [server]))
        steal = " / ".join(_fmt(r.get("machine", {}).get("steal_pct"))
                           for r in server.get("runs", [server]))  # fmt: skip
        failed = sum(n for status, n in server["statuses"].items() if status != "200")
        table.add_row(
            "Feast feature server (same load)", f"{server['rps']:,.0f}",
            f"{server['p50_ms']:.2f}", f"{server['p99_ms']:.2f}", rounds, steal,
            f"{server['max_ms']:.1f}", str(failed), "",
        )  # fmt: skip
    return table


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("loadgen", help="offer a fixed load to one endpoint; print JSON")
    load.add_argument("--port", type=int, required=True)
    load.add_argument("--kind", choices=sorted(PATHS), required=True)
    load.add_argument("--rate", type=float, default=500)
    load.add_argument("--seconds", type=float, default=20)
    load.add_argument("--warmup", type=float, default=3)
    load.add_argument("--customers", type=int, default=100_000)
    load.add_argument("--connections", type=int, default=32)
    load.add_argument("--seed", type=int, default=7)
    load.add_argument("--workers", type=int, default=1, help="API worker processes")
    load.add_argument("--feast-refs", type=Path, help="JSON list of Feast feature references")
    inproc = sub.add_parser("inprocess", help="time Engine.offers in this process; print JSON")
    inproc.add_argument("--calls", type=int, default=3_000)
    inproc.add_argument("--warmup", type=int, default=200)
    inproc.add_argument("--customers", type=int, default=100_000)
    inproc.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.command == "inprocess":
        result = asyncio.run(offers_in_process(args.calls, args.warmup, args.customers, args.seed))
        sys.stdout.write(json.dumps(result) + "\n")
        return
    warmup = int(args.warmup * args.rate)
    total = warmup + int(args.seconds * args.rate)
    refs = json.loads(args.feast_refs.read_text()) if args.feast_refs else None
    bodies = _bodies(args.kind, total, args.customers, args.seed, refs)
    load = _load(args.port, PATHS[args.kind], bodies, args.rate, args.connections, warmup,
                 args.workers)
    result = _run_fast(load)
    sys.stdout.write(json.dumps(result) + "\n")


def _run_fast(coroutine: Any) -> Any:
    """Run ``coroutine`` on uvloop when installed (as uvicorn's "auto" does), else asyncio.

    The generator shares the machine with the API: a cheaper loop takes less CPU from it
    and adds less delay of its own to the latencies it measures.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def _http_stack() -> str:
    """Name the HTTP parser and event loop uvicorn picks here ("auto" prefers the fast ones)."""
    import importlib.util

    parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{parser} + {loop}"


if __name__ == "__main__":
    _main()
