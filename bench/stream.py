"""Streaming benchmark: the feature flow on Kafka and Redis, side by side with a bare consumer.

Three measurements from one run (these machines are noisy, so compare within a run):

1. **throughput** — the event topics are pre-filled with a simulated world, and one sentinel
   ``page_view`` (a fresh anonymous id) is appended to the end of every partition. The flow
   runs as a child process in tail mode and is timed from its first profile write until
   every sentinel's profile is readable in Redis. Broker watermarks are never trusted
   (Tansu's high watermark is wrong for batched produces).
2. **baseline** — a bare confluent-kafka ``consume`` + ``orjson.loads`` loop over the same
   partitions, up to the same sentinels, in this process, before the flow starts.
3. **freshness** — with the flow still tailing, a second world (another seed) is produced at
   a steady rate with 1% of it replaced by probe events; a poller thread times each probe
   from ``produce()`` until its profile is readable in Redis. A probe still unreadable
   ``GRACE_S`` after the last produce counts as infinitely late: a percentile that falls on
   one is reported as ``null``.

Tansu holds a fetch for the consumer's whole ``fetch.wait.max.ms`` (librdkafka: 500 ms) even
when data arrives meanwhile, so on Tansu freshness carries ~250 ms of fetch wait on average
unless the flow's Kafka source lowers that setting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from math import ceil, inf
from pathlib import Path
from typing import Any, Self

import orjson
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from rich.progress import Progress
from rich.table import Table

from features.catalog import Catalog
from features.events import Identifiers, PageView, encode_event
from features.identity import fragment_id
from features.store import OnlineStore, StoreError, open_store
from features.topics import CLICKSTREAM, DEADLETTER, EVENT_TOPICS
from omnioffer.services import KafkaBroker, RedisServer, create_topics, free_port
from simulator import KafkaSink, SimulationConfig, simulate

PARTITIONS = 3
PROBE_EVERY = 100  # one message in a hundred of the freshness stream is a probe
POLL_S = 0.005  # how often the probe poller asks Redis
GRACE_S = 10.0  # how long probes may still arrive after the last produce
EVENTS_TOTAL = "omnioffer_flow_events_total"

Message = tuple[str, str, bytes]
Partition = tuple[str, int]


class BenchError(RuntimeError):
    """A phase failed: the flow died, or something did not arrive in time."""


@dataclass(frozen=True)
class StreamBench:
    """What to run: the world's size, the flow's workers, the freshness load, the services.

    ``bootstrap`` / ``redis_url`` left ``None`` start a throwaway Tansu broker and Redis.
    """

    customers: int
    days: int
    seed: int
    hash_key: bytes
    workers: int = 1
    rate: int = 5000
    freshness_seconds: float = 30.0
    bootstrap: str | None = None
    redis_url: str | None = None
    # Run the flow with Bytewax recovery (snapshots in a throwaway folder every this many
    # seconds), as production should; ``None`` runs it without.
    snapshot_interval_s: float | None = None


# --- events -----------------------------------------------------------------------------------
def probe_event(anonymous_id: str, when: datetime) -> bytes:
    """Return a valid ``page_view`` whose only identifier is ``anonymous_id`` (a new profile)."""
    ids = Identifiers(anonymous_id=anonymous_id)
    event = PageView(event_id=anonymous_id, event_time=when, source="web", ids=ids, page="home")
    return encode_event(event)


def probe_profile(anonymous_id: str) -> str:
    """Return the profile id a probe's first event creates."""
    return fragment_id("anonymous_id", anonymous_id)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list.

    >>> percentile([4.0, 1.0, 3.0, 2.0], 50), percentile([4.0, 1.0, 3.0, 2.0], 99)
    (2.0, 4.0)
    """
    ordered = sorted(values)
    return ordered[max(1, ceil(q / 100 * len(ordered))) - 1]


class EventTopics:
    """A simulator sink that keeps the event topics only (the flow reads no other).

    Forwards to ``forward`` when given, else keeps the messages in ``kept`` for a replay.
    """

    ground_truth_path: Path | None = None

    def __init__(self, forward: KafkaSink | None = None) -> None:
        self.forward = forward
        self.kept: list[Message] = []
        self.count = 0

    def write(self, topic: str, key: str, value: bytes) -> None:
        """Forward or keep one message of an event topic; drop any other."""
        if topic not in EVENT_TOPICS:
            return
        self.count += 1
        if self.forward is None:
            self.kept.append((topic, key, value))
        else:
            self.forward.write(topic, key, value)

    def close(self) -> None:
        """Flush the forward sink (raises if a message was not delivered)."""
        if self.forward is not None:
            self.forward.close()


def simulate_world(
    config: SimulationConfig, catalog: Catalog, sink: EventTopics, progress: Progress, label: str
) -> int:
    """Simulate ``config`` into ``sink`` with a progress bar; return event messages written."""
    task = progress.add_task(label, total=config.days)
    simulate(
        config,
        catalog,
        sink,
        lambda done, total: progress.update(task, completed=done, total=total),
    )
    return sink.count


# --- kafka ------------------------------------------------------------------------------------
def append_sentinels(
    bootstrap: str, run_id: str, when: datetime
) -> dict[Partition, tuple[str, int]]:
    """Append one probe to the end of every event partition; return ``{partition: (id, offset)}``.

    Explicit partitions, because a keyed message could miss one; offsets come from the
    delivery reports, not from watermarks.
    """
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    offsets: dict[Partition, int] = {}

    def delivered(error: Any, message: Any) -> None:
        if error is None:
            offsets[(message.topic(), message.partition())] = message.offset()

    ids: dict[Partition, str] = {}
    for topic in EVENT_TOPICS:
        for partition in sorted(producer.list_topics(topic, timeout=10).topics[topic].partitions):
            anonymous_id = f"bench-end-{run_id}-{topic}-{partition}"
            ids[(topic, partition)] = anonymous_id
            value = probe_event(anonymous_id, when)
            producer.produce(topic, value, anonymous_id, partition=partition, on_delivery=delivered)
    if producer.flush(30) or len(offsets) != len(ids):
        msg = f"sentinels delivered to {len(offsets)} of {len(ids)} partitions on {bootstrap}"
        raise BenchError(msg)
    return {tp: (ids[tp], offsets[tp]) for tp in ids}


def bare_consume(
    bootstrap: str, last: dict[Partition, int], progress: Progress, timeout_s: float
) -> tuple[int, float]:
    """Consume every partition from the start up to offset ``last[partition]``; parse each value.

    Returns ``(messages, seconds)``, timed from the first batch received (connecting and
    the first fetch are not the loop's cost).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "omnioffer-bench-baseline",  # required by the client; assign() ignores it
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in last])
    task = progress.add_task("baseline: bare consume", total=None)
    remaining = dict(last)
    count = 0
    started = 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while remaining and time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.1)
            if not batch:
                continue
            if not count:
                started = time.perf_counter()
            for message in batch:
                if message.error() is not None:
                    continue
                count += 1
                # The world's malformed lines are part of the stream: parse and move on.
                with contextlib.suppress(orjson.JSONDecodeError):
                    orjson.loads(message.value())
                where = (message.topic(), message.partition())
                if where in remaining and message.offset() >= remaining[where]:
                    del remaining[where]
            progress.update(task, completed=count)
        elapsed = time.perf_counter() - started
    finally:
        consumer.close()
    if remaining:
        msg = f"baseline did not reach the sentinels of {sorted(remaining)} in {timeout_s:g} s"
        raise BenchError(msg)
    progress.update(task, total=count, completed=count)
    return count, elapsed


# --- the flow -----------------------------------------------------------------------------------
class FlowProcess:
    """The feature flow as a child process (Kafka → Redis, tail mode) serving its metrics."""

    def __init__(
        self, bootstrap: str, redis_url: str, namespace: str, hash_key: bytes, workers: int,
        log_path: Path, recovery: tuple[Path, float] | None = None,
    ) -> None:  # fmt: skip
        self.metrics_port = free_port()
        self.command = [
            sys.executable, "-m", "omnioffer.cli", "flow", "features",
            "--source", "kafka", "--bootstrap", bootstrap,
            "--store", "redis", "--redis-url", redis_url,
            "--tail", "--workers", str(workers), "--metrics-port", str(self.metrics_port),
        ]  # fmt: skip
        if recovery is not None:  # (folder, snapshot interval in seconds)
            self.command += ["--recovery-dir", str(recovery[0]),
                             "--snapshot-interval", str(recovery[1])]  # fmt: skip
        self.env = {
            **os.environ,
            "OMNIOFFER_REDIS_NAMESPACE": namespace,
            "OMNIOFFER_CONTACT_HASH_KEY": hash_key.decode(),
        }
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        # Loopback only: never route the metrics request through an HTTP proxy.
        self._http = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __enter__(self) -> Self:
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.command, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Terminate the flow (SIGTERM, then SIGKILL); idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def check(self) -> None:
        """Raise :class:`BenchError` with the log tail if the flow has exited."""
        code = None if self._process is None else self._process.poll()
        if self._process is None or code is not None:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
            msg = f"the feature flow exited with code {code}; last log lines:\n{tail}"
            raise BenchError(msg)

    def counter(self, name: str) -> float:
        """Return a counter's total over all labels, read from the flow's metrics endpoint."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with self._http.open(url, timeout=5) as response:
                text = response.read().decode()
        except OSError as error:
            msg = f"cannot read the flow's metrics at {url}: {error}"
            raise BenchError(msg) from error
        families = text_string_to_metric_families(text)
        return sum(s.value for f in families for s in f.samples if s.name == name)


def measure_throughput(
    flow: FlowProcess,
    client: redis.Redis,
    keys_before: int,
    store: OnlineStore,
    sentinels: list[str],
    expected: int,
    progress: Progress,
) -> dict[str, float]:
    """Time the flow from its first write (Redis grows) until every sentinel profile exists.

    Events already counted at the first write are left out of the rate, although part of
    their work comes after it: the number errs low, never high. Gives up after 120 s plus
    2 ms per ``expected`` message (500 events/s would be far below any sane flow).
    """
    spawned = time.perf_counter()
    deadline = time.monotonic() + 120 + expected / 500
    task = progress.add_task("flow: events processed", total=expected)
    while client.dbsize() == keys_before:
        _alive_in_time(flow, deadline, "the flow wrote nothing to Redis")
        time.sleep(POLL_S)
    first = time.perf_counter()
    at_first = flow.counter(EVENTS_TOTAL)
    report_at = 0.0
    while not all(value is not None for value in store.read_profiles(sentinels)):
        _alive_in_time(flow, deadline, "not every sentinel profile appeared")
        if time.perf_counter() >= report_at:
            progress.update(task, completed=flow.counter(EVENTS_TOTAL))
            report_at = time.perf_counter() + 0.5
        time.sleep(0.02)
    end = time.perf_counter()
    events = flow.counter(EVENTS_TOTAL)
    progress.update(task, completed=events, total=events)
    return {
        "events": events,
        "elapsed_s": end - first,
        "startup_s": first - spawned,
        "events_per_s": (events - at_first) / (end - first),
    }


def _alive_in_time(flow: FlowProcess, deadline: float, what: str) -> None:
    flow.check()
    if time.monotonic() > deadline:
        msg = f"{what} before the deadline"
        raise BenchError(msg)


# --- freshness --------------------------------------------------------------------------------
class ProbePoller(threading.Thread):
    """Asks Redis for every outstanding probe profile (one MGET) every ~5 ms.

    ``latencies_ms`` collects produce→readable times; whatever is still outstanding after
    :meth:`finish` plus its grace period stays in ``missing``.
    """

    def __init__(self, store: OnlineStore) -> None:
        super().__init__(name="probe-poller", daemon=True)
        self._store = store
        self._lock = threading.Lock()
        self._outstanding: dict[str, float] = {}
        self._stop_at: float | None = None
        self.latencies_ms: list[float] = []
        self.read_errors = 0

    def sent(self, profile_id: str, at: float) -> None:
        """Register a probe produced at ``at`` (``time.perf_counter()``)."""
        with self._lock:
            self._outstanding[profile_id] = at

    def finish(self, grace_s: float) -> None:
        """Stop once every probe is seen, or ``grace_s`` from now at the latest."""
        self._stop_at = time.perf_counter() + grace_s

    @property
    def missing(self) -> int:
        """Probes never seen."""
        with self._lock:
            return len(self._outstanding)

    def run(self) -> None:
        """Poll until finished; a failed read is counted and retried on the next round."""
        while True:
            with self._lock:
                ids = list(self._outstanding)
            if ids:
                try:
                    values = self._store.read_profiles(ids)
                except StoreError:
                    self.read_errors += 1
                    values = [None] * len(ids)
                seen = time.perf_counter()
                with self._lock:
                    for profile_id, value in zip(ids, values, strict=True):
                        if value is not None:
                            sent = self._outstanding.pop(profile_id)
                            self.latencies_ms.append((seen - sent) * 1000)
            stop_at = self._stop_at
            if stop_at is not None and (not ids or time.perf_counter() >= stop_at):
                return
            time.sleep(POLL_S)


def produce_steadily(
    bootstrap: str,
    messages: list[Message],
    bench: StreamBench,
    poller: ProbePoller,
    run_id: str,
    when: datetime,
    progress: Progress,
) -> tuple[int, float]:
    """Produce ``messages`` at ``bench.rate`` per second for ``bench.freshness_seconds``.

    Every :data:`PROBE_EVERY`-th message is replaced by a probe registered with ``poller``
    just before ``produce()``. Returns ``(messages sent, seconds)``.
    """
    # A short linger, as a latency-minded producer would use; it is part of the latency.
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )
    seconds, rate = bench.freshness_seconds, bench.rate
    limit = min(len(messages), ceil(rate * seconds))
    task = progress.add_task(f"freshness: {rate:,} events/s", total=limit)
    sent = probes = 0
    started = time.perf_counter()
    report_at = 0.0
    while sent < limit:
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
        # Catch up to where the rate says we should be, then yield for a millisecond.
        due = min(limit, int(elapsed * rate) + 1)
        while sent < due:
            topic, key, value = messages[sent]
            if sent % PROBE_EVERY == PROBE_EVERY - 1:
                key = f"bench-probe-{run_id}-{probes}"
                topic, value = CLICKSTREAM, probe_event(key, when)
                probes += 1
                poller.sent(probe_profile(key), time.perf_counter())
            _produce(producer, topic, key, value)
            sent += 1
        producer.poll(0)
        if elapsed >= report_at:
            progress.update(task, completed=sent)
            report_at = elapsed + 0.25
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    progress.update(task, completed=sent, total=sent)
    if producer.flush(30):
        msg = "freshness: messages still queued in the producer after 30 s"
        raise BenchError(msg)
    return sent, elapsed


def _produce(producer: Producer, topic: str, key: str, value: bytes) -> None:
    for _ in range(200):  # 10 s at most
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:  # local queue full: let the client deliver some first
            producer.poll(0.05)
    msg = f"freshness: the producer's queue stayed full for 10 s (topic {topic})"
    raise BenchError(msg)


def measure_freshness(
    bootstrap: str,
    flow: FlowProcess,
    open_probe_store: Callable[[], OnlineStore],
    messages: list[Message],
    bench: StreamBench,
    run_id: str,
    when: datetime,
    progress: Progress,
) -> dict[str, Any]:
    """Produce the steady stream with probes and report produce→readable percentiles.

    Also reports how fast the flow went meanwhile: below the produce rate, a backlog grows
    and latency with it (the flow, not the path, is then the limit).
    """
    store = open_probe_store()
    poller = ProbePoller(store)
    poller.start()
    try:
        events_before, cpu_before = flow.counter(EVENTS_TOTAL), time.process_time()
        sent, seconds = produce_steadily(bootstrap, messages, bench, poller, run_id, when, progress)
        flow_rate = (flow.counter(EVENTS_TOTAL) - events_before) / seconds
        # On a small machine the producer and the poller compete with the flow: say how much.
        own_cpu = (time.process_time() - cpu_before) / seconds
    finally:
        poller.finish(GRACE_S)
        poller.join(GRACE_S + 5)
        store.close()
    latencies = poller.latencies_ms
    if not latencies:
        msg = f"no probe became readable within {GRACE_S:g} s of the last produce"
        raise BenchError(msg)
    # A probe never readable is slower than any that was: it counts, as infinitely late,
    # and a percentile that falls on one is reported as null (beyond the grace period).
    every = latencies + [inf] * poller.missing

    def rank(q: float) -> float | None:
        value = percentile(every, q)
        return None if value == inf else round(value, 1)

    return {
        "p50": rank(50),
        "p99": rank(99),
        "max": None if poller.missing else round(max(latencies), 1),
        "p50_readable": round(percentile(latencies, 50), 1),
        "p99_readable": round(percentile(latencies, 99), 1),
        "probes": len(latencies) + poller.missing,
        "probes_missing": poller.missing,
        "redis_read_errors": poller.read_errors,
        "rate": bench.rate,
        "achieved_rate": round(sent / seconds),
        "flow_events_per_s": round(flow_rate),
        "bench_cpu_percent": round(100 * own_cpu),
        "messages": sent,
        "seconds": round(seconds, 2),
    }


# --- the whole run ------------------------------------------------------------------------------
def run_stream_bench(bench: StreamBench, catalog: Catalog, progress: Progress) -> dict[str, Any]:
    """Run all three phases on fresh (or given) services; return the result document."""
    run_id = secrets.token_hex(4)
    namespace = f"bench-{run_id}"  # a run of its own, also on a shared Redis
    world = SimulationConfig(
        customers=bench.customers, days=bench.days, seed=bench.seed,
        contact_hash_key=bench.hash_key,
    )  # fmt: skip
    when = world.start + timedelta(days=bench.days)  # probes sit at the end of the world
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="omnioffer-bench-")))
        bootstrap = bench.bootstrap or stack.enter_context(KafkaBroker()).bootstrap
        redis_url = bench.redis_url or stack.enter_context(RedisServer()).url
        create_topics(bootstrap, [*EVENT_TOPICS, DEADLETTER], partitions=PARTITIONS)

        prefill = EventTopics(KafkaSink(bootstrap))
        produced = simulate_world(world, catalog, prefill, progress, "prefill: simulate → kafka")
        del prefill  # its idle producer would only log the broker's disconnects from now on
        ends = append_sentinels(bootstrap, run_id, when)
        last = {where: offset for where, (_id, offset) in ends.items()}
        prefilled = produced + len(ends)
        base_count, base_s = bare_consume(bootstrap, last, progress, 120 + prefilled / 2000)

        # The freshness stream is simulated now so that it costs nothing while measuring.
        per_customer_day = max(produced / (bench.customers * bench.days), 0.1)
        wanted = bench.rate * bench.freshness_seconds * 1.1 + PROBE_EVERY
        second = dataclasses.replace(
            world, seed=bench.seed + 1, customers=ceil(wanted / (per_customer_day * bench.days))
        )
        stream = EventTopics()
        simulate_world(second, catalog, stream, progress, "freshness: simulate a second world")

        def open_probe_store() -> OnlineStore:
            return open_store("redis", redis_url=redis_url, namespace=namespace, socket_timeout=2.0)

        store = stack.enter_context(open_probe_store())
        client = redis.Redis.from_url(redis_url, socket_timeout=2.0)
        stack.callback(client.close)
        keys_before = client.dbsize()
        recovery = None
        if bench.snapshot_interval_s is not None:
            recovery = (tmp / "recovery", bench.snapshot_interval_s)
        process = FlowProcess(bootstrap, redis_url, namespace, bench.hash_key, bench.workers,
                              tmp / "flow.log", recovery)  # fmt: skip
        flow = stack.enter_context(process)
        sentinels = [probe_profile(anonymous_id) for anonymous_id, _ in ends.values()]
        throughput = measure_throughput(
            flow, client, keys_before, store, sentinels, base_count, progress
        )
        freshness = measure_freshness(
            bootstrap, flow, open_probe_store, stream.kept, bench, run_id, when, progress
        )
        flow.check()  # it must have lived through the whole run

    per_worker = throughput["events_per_s"] / bench.workers
    baseline = base_count / base_s if base_s else 0.0
    return {
        "benchmark": "stream",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "customers": bench.customers,
        "days": bench.days,
        "seed": bench.seed,
        "workers": bench.workers,
        "events": int(throughput["events"]),
        # Both read every message up to the sentinels: more than prefilled if the topics
        # (on a given broker) held messages before the run.
        "messages": base_count,
        "prefilled": prefilled,
        "events_per_s_per_worker": round(per_worker),
        "baseline_events_per_s": round(baseline),
        "ratio_to_baseline": round(per_worker / baseline, 3) if baseline else None,
        "freshness_ms": {k: freshness.pop(k) for k in ("p50", "p99", "max")},
        "freshness": freshness,
        "flow": {
            "elapsed_s": round(throughput["elapsed_s"], 2),
            "startup_s": round(throughput["startup_s"], 2),
            "events_per_s": round(throughput["events_per_s"]),
            "recovery": bench.snapshot_interval_s is not None,
            "snapshot_interval_s": bench.snapshot_interval_s,
        },
        "baseline": {"elapsed_s": round(base_s, 2)},
        "partitions_per_topic": len(ends) // len(EVENT_TOPICS),
        "services": {
            "kafka": "external" if bench.bootstrap else "tansu, started for the run",
            "redis": "external" if bench.redis_url else "redis-server, started for the run",
            "redis_namespace": namespace,
        },
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def _ms(value: float | None) -> str:
    return f"> {GRACE_S * 1000:,.0f} ms after the last produce" if value is None else (
        f"{value:,} ms")


def result_table(result: dict[str, Any]) -> Table:
    """Return the result as a two-column table."""
    fresh, ms = result["freshness"], result["freshness_ms"]
    ratio = result["ratio_to_baseline"]
    table = Table(title="stream benchmark (feature flow: kafka → redis)", show_header=False)
    rows = [
        ("world", f"{result['customers']:,} customers × {result['days']} days"),
        ("events processed by the flow", f"{result['events']:,}"),
        ("workers", str(result["workers"])),
        ("recovery (snapshot interval)", f"every {result['flow']['snapshot_interval_s']:g} s"
         if result["flow"].get("recovery") else "off"),
        ("flow events/s per worker", f"{result['events_per_s_per_worker']:,}"),
        ("  flow time (first write → sentinels)", f"{result['flow']['elapsed_s']:.1f} s"),
        ("  flow startup (spawn → first write)", f"{result['flow']['startup_s']:.1f} s"),
        ("baseline events/s (consume + loads)", f"{result['baseline_events_per_s']:,}"),
        ("ratio to baseline", "n/a" if ratio is None else f"{ratio:.3f}"),
        ("freshness p50 / p99 / max", " / ".join(_ms(ms[k]) for k in ("p50", "p99", "max"))),
        ("  of the probes that became readable", f"{fresh['p50_readable']:,} / "
                                                 f"{fresh['p99_readable']:,} ms (p50 / p99)"),
        ("  produce rate target / achieved", f"{fresh['rate']:,} / {fresh['achieved_rate']:,}/s"),
        ("  flow rate meanwhile", f"{fresh['flow_events_per_s']:,}/s"),
        ("  cpu of producer + poller", f"{fresh['bench_cpu_percent']}% of a core"),
        ("  probes (missing)", f"{fresh['probes']:,} ({fresh['probes_missing']})"),
        ("machine", f"{platform.system()} {platform.machine()}, {result['cpu_count']} cpus"),
        ("date", result["date"]),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
