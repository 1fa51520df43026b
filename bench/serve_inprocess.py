"""In-process cost of one decision: ``Engine.offers`` / ``Engine.channel`` without HTTP.

``omnioffer bench serve`` measures the API under load; this script measures what one
decision costs in Python, so a change to the decision path can be judged in seconds:

1. **setup** (once, in this process) — a small simulated world ending at a fixed time, its
   customer profiles in a SQLite store file; the bench catalog of ``bench.serve`` (200
   offers, no limits) and its policies; the promoted model of the registry
   (``--registry``, default the settings' registry), or a small model trained here when
   nothing is promoted.
2. **runs** — a worker process per run builds the app (``serving.app.create_app``) on a
   fresh copy of the store with a fixed clock and fixed decision ids, and times, per call,
   the request as the HTTP handler does it (decode the body, decide, encode the answer)
   and, separately, the decision record (build + encode, which the API does once the
   response is sent, in the same process, so it costs the same CPU). Then a cProfile pass.
3. **before/after** — with ``--baseline-rev REV`` the same runs are made with the
   serving and model code of that git revision (``git archive`` into a temporary folder;
   the world, catalog, model and requests are shared), alternating baseline and current.
   Every response and decision record of both is hashed: the JSON says whether they are
   byte-identical, besides the timings.

Without ``--baseline-rev`` only the current code is measured. Once the optimized path is
committed, compare with a commit before it (the committed results were measured against
``dccfd25``, ``baseline_commit`` in the JSON)::

    python -m bench.serve_inprocess --baseline-rev dccfd25 --json bench/results/serve_inprocess.json

The world, requests and clock are fixed, so runs are comparable; the machine is not (the
JSON keeps the load average): compare only within a run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The world ends at midnight; decisions are asked at noon of the next day.
WORLD_START = datetime(2026, 3, 1, tzinfo=UTC)
HASH_KEY = b"bench-serve-key"


# --- setup (parent process) ----------------------------------------------------------------


def build_world(folder: Path, customers: int, days: int, seed: int) -> tuple[Path, list[str]]:
    """Simulate a world, write its profiles and identity map to a SQLite file.

    Returns the store file and the customer ids with a profile.
    """
    from features.catalog import load_catalog
    from features.eventlog import load_events
    from features.pipeline import recompute
    from features.store import IdentityWrite, ProfileWrite, StoreBatch, open_store
    from simulator import FileSink, SimulationConfig, simulate

    events = folder / "world"
    config = SimulationConfig(customers=customers, days=days, seed=seed, start=WORLD_START,
                              contact_hash_key=HASH_KEY)  # fmt: skip
    simulate(config, load_catalog(), FileSink(events))
    result = recompute(load_events(events, key=HASH_KEY))
    path = folder / "online.sqlite3"
    ids = sorted(p for p in result.profiles if p.startswith("customer_id:"))
    with open_store("sqlite", sqlite_path=path) as store:
        store.write(StoreBatch(profiles=[ProfileWrite(p, result.profiles[p]) for p in ids]))
        known = set(ids)
        identity = [IdentityWrite(i, p) for i, p in result.identity.items() if p in known]
        for first in range(0, len(identity), 1000):
            store.write(StoreBatch(identity=identity[first : first + 1000]))
    return path, [p.split(":", 1)[1] for p in ids]


def promoted_model(registry: Path | None, work: Path, seed: int) -> tuple[Path, str, str]:
    """Return ``(registry dir, version, note)``: the promoted model, or a small one trained now."""
    from models.registry import Registry

    if registry is not None and (registry / "promoted").exists():
        version = Registry(registry).promoted()
        if version:
            return registry, version, f"promoted model {version} of {registry}"
    from models.train import TrainConfig
    from models.workflow import catalog_of, simulate_world, train
    from omnioffer.settings import Settings

    settings = Settings(data_dir=work / "train", contact_hash_key=HASH_KEY,
                        conversion_window_days=1, outcome_lateness_hours=1, seed=seed)  # fmt: skip
    world = work / "train-world"
    simulate_world(world, 400, 8, seed, settings, catalog_of(settings))
    config = TrainConfig(seed=seed, num_threads=1, max_rounds=60, early_stopping_rounds=10,
                         min_data_in_leaf=10)  # fmt: skip
    version, *_ = train(settings, world, config=config, promote=True)
    return settings.model_registry_dir, version, f"small model {version} trained for the bench"


def request_bodies(customers: list[str], n: int, seed: int) -> dict[str, list[bytes]]:
    """Return the timed bodies (as ``bench.serve``'s load generator sends) and coverage ones.

    ``offers``/``channel`` are timed; ``coverage_*`` are only compared (cold start,
    anonymous ids, stores, baskets, slate sizes, transactional messages, channel limits).
    """
    rng = random.Random(seed)
    dumps = json.dumps
    offers = [
        dumps({"customer_id": rng.choice(customers),
               "context": {"channel": rng.choice(["web", "app"]), "page": "home"},
               "limit": 5}).encode()
        for _ in range(n)
    ]  # fmt: skip
    # Channel decisions write contacts, and caps then suppress the next message to the same
    # person: as in bench.serve (100,000 customers), each customer once before any twice.
    order = list(customers)
    rng.shuffle(order)
    channel = [
        dumps({"customer_id": order[i % len(order)],
               "message": {"campaign": f"bench-{i}", "kind": "marketing", "urgency": "normal"}}
              ).encode()
        for i in range(n)
    ]  # fmt: skip
    cover_offers, cover_channel = [], []
    pages = ["home", "product", "category", "cart", "checkout", "search"]
    for i in range(400):
        body: dict[str, Any] = {"context": {"channel": rng.choice(["web", "app", "store"]),
                                            "page": rng.choice(pages)}}  # fmt: skip
        who = rng.random()
        if who < 0.6:
            body["customer_id"] = rng.choice(customers)
        elif who < 0.75:
            body["anonymous_id"] = f"unknown-{i}"  # cold start
        elif who < 0.85:
            body["customer_id"] = f"nobody-{i}"
        if body["context"]["channel"] == "store" and rng.random() < 0.8:
            body["context"]["store_id"] = rng.choice(["st-001", "st-002", "st-003", "st-004"])
        if rng.random() < 0.3:
            body["context"]["basket_value"] = rng.choice([0.0, 5.0, 20.0, 80.0])
        if rng.random() < 0.3:
            body["context"]["placement"] = "hero"
        body["limit"] = rng.choice([1, 3, 5, 10, 50])
        cover_offers.append(dumps(body).encode())
        message: dict[str, Any] = {
            "campaign": f"cover-{i % 50}", "kind": rng.choice(["marketing", "transactional"]),
            "urgency": rng.choice(["immediate", "high", "normal", "low"]),
        }  # fmt: skip
        if rng.random() < 0.3:
            # One catalog's offer is unknown to the other: the 422 is an answer compared too.
            bench_offer = f"of-bench-{rng.randrange(200):03d}"
            message["offer_id"] = rng.choice(["of-disc-dairy", bench_offer])
        if rng.random() < 0.3:
            message["allowed_channels"] = rng.sample(["email", "push", "sms", "messenger"], 2)
        cover_channel.append(
            dumps({"customer_id": rng.choice(customers), "message": message}).encode()
        )
    return {"offers": offers, "channel": channel, "coverage_offers": cover_offers,
            "coverage_channel": cover_channel}  # fmt: skip


# --- the worker (a fresh process per run) ------------------------------------------------


class CaptureLog:
    """A decision log that keeps what is submitted, for the worker to build and time."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.pending = 0

    def submit(self, decision: Any) -> bool:
        """Keep the record (or its builder)."""
        self.items.append(decision)
        return True

    def publish(self, topic: str, key: bytes | None, value: Any) -> bool:
        """Keep the record (or its builder)."""
        self.items.append(value)
        return True

    def build_deferred(self) -> int:
        """Nothing: the worker builds each record itself, timed apart from the decision."""
        return 0

    def close(self) -> None:
        """Nothing to release."""


def _engine(spec: dict[str, Any], phase: dict[str, Any], tag: str) -> tuple[Any, CaptureLog]:
    from features.catalog import load_catalog
    from features.store import open_store
    from omnioffer.settings import Settings
    from serving.app import create_app

    work = Path(spec["work"]) / f"run-{os.getpid()}-{phase['name']}-{tag}"
    work.mkdir(parents=True)
    store_file = work / "online.sqlite3"
    shutil.copy(spec["store"], store_file)
    store = open_store("sqlite", sqlite_path=store_file)
    catalog = load_catalog(phase["catalog"]) if phase["catalog"] else load_catalog()
    scorer = None
    if phase["model"]:
        from models.adapter import RegistryScorer
        from models.rows import OfferTable
        from models.scoring import load_version

        _, nbo, channel = load_version(spec["registry"], spec["version"])
        scorer = RegistryScorer(spec["version"], nbo, channel, OfferTable.from_catalog(catalog))
    settings = Settings(data_dir=work / "data", policies_path=phase["policies"],
                        catalog_dir=phase["catalog"], explore_epsilon=0.05)  # fmt: skip
    now = datetime.fromisoformat(spec["now"])
    counter = iter(range(10**9))
    capture = CaptureLog()
    app = create_app(settings, store=store, scorer=scorer, catalog=catalog,
                     decision_log=capture,  # type: ignore[arg-type]
                     model_loader=lambda _target: scorer, clock=lambda: now,
                     new_id=lambda: f"bench-{next(counter):x}")  # fmt: skip
    return app.state.engine, capture


def record_bytes(item: Any) -> tuple[bytes | None, bytes]:
    from features.decisions import Decision, encode_decision
    from serving.decision_log import decision_key

    decision = item if isinstance(item, Decision) else item()
    return decision_key(decision), encode_decision(decision)


def handle(engine: Any, kind: str, body: bytes) -> bytes:
    """Decide one body as the HTTP handler does (decode, decide, encode), minus ASGI."""
    from serving.app import _encoder
    from serving.schemas import ChannelRequest, OffersRequest, decode_request

    if kind == "offers":
        return _encoder.encode(engine.offers(decode_request(body, OffersRequest)))
    return _encoder.encode(engine.channel(decode_request(body, ChannelRequest)))


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {"p50_us": round(q(0.5), 1), "p90_us": round(q(0.9), 1), "p99_us": round(q(0.99), 1),
            "mean_us": round(statistics.fmean(ordered), 1)}  # fmt: skip


def _timed(engine: Any, capture: CaptureLog, kind: str, bodies: list[bytes],
           warmup: int) -> dict[str, Any]:  # fmt: skip
    """Time each call and its record; hash every answer and record."""
    import gc

    clock = time.perf_counter_ns
    request_us, record_us = [], []
    digest = hashlib.sha256()
    gc.collect()
    for number, body in enumerate(bodies):
        t0 = clock()
        answer = handle(engine, kind, body)
        t1 = clock()
        key, record = record_bytes(capture.items.pop())
        t2 = clock()
        digest.update(answer + b"\n" + (key or b"") + b"\n" + record + b"\n")
        if number >= warmup:
            request_us.append((t1 - t0) / 1000)
            record_us.append((t2 - t1) / 1000)
    total = [a + b for a, b in zip(request_us, record_us, strict=True)]
    return {"calls": len(request_us), "request": _quantiles(request_us),
            "record": _quantiles(record_us), "total": _quantiles(total),
            "sha256": digest.hexdigest()}  # fmt: skip


def _answers(engine: Any, capture: CaptureLog, kind: str, bodies: list[bytes]) -> list[str]:
    from serving.schemas import RequestError

    out = []
    for body in bodies:
        try:
            answer = handle(engine, kind, body)
        except RequestError as error:  # the API's 422, with nothing logged
            out.append(f"422 {error}")
            continue
        key, record = record_bytes(capture.items.pop())
        out.append((answer + b"\n" + (key or b"") + b"\n" + record).decode())
    return out


def _profile(engine: Any, capture: CaptureLog, kind: str, bodies: list[bytes],
             top: int = 20) -> list[dict[str, Any]]:  # fmt: skip
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for body in bodies:
        handle(engine, kind, body)
        record_bytes(capture.items.pop())
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    calls = len(bodies)
    for (file, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        # Paths relative to the tree under test (the baseline's is a temporary folder).
        where = file.replace(os.getcwd() + "/", "").replace(str(ROOT) + "/", "")
        where = "" if file == "~" else where
        rows.append({"function": f"{where}:{line}({name})" if where else name,
                     "calls_per_decision": round(nc / calls, 2),
                     "tottime_us": round(tt / calls * 1e6, 1),
                     "cumtime_us": round(ct / calls * 1e6, 1)})  # fmt: skip
    rows.sort(key=lambda r: -r["tottime_us"])
    return rows[:top]


def worker(spec_path: Path) -> dict[str, Any]:
    """Run the phases of one spec (see :func:`main`) and return timings, hashes, profiles."""
    spec = json.loads(spec_path.read_text())
    bodies = {k: [b.encode() for b in v] for k, v in json.loads(
        Path(spec["bodies"]).read_text()).items()}  # fmt: skip
    out: dict[str, Any] = {"phases": {}}
    for phase in spec["phases"]:
        result: dict[str, Any] = {}
        # A fresh store for every pass: channel decisions write contacts that later ones see.
        for kind in ("offers", "channel"):
            if phase["timed"]:
                engine, capture = _engine(spec, phase, f"{kind}-timed")
                result[kind] = _timed(engine, capture, kind, bodies[kind], spec["warmup"])
                engine.store.close()
                if spec["profile"]:
                    engine, capture = _engine(spec, phase, f"{kind}-profile")
                    calls = bodies[kind][: spec["profile_calls"]]
                    result[f"{kind}_profile"] = _profile(engine, capture, kind, calls)
                    engine.store.close()
            engine, capture = _engine(spec, phase, f"{kind}-coverage")
            cover = _answers(engine, capture, kind, bodies[f"coverage_{kind}"])
            engine.store.close()
            result[f"coverage_{kind}"] = cover if spec["keep_answers"] else None
            result[f"coverage_{kind}_sha256"] = hashlib.sha256(
                "\n".join(cover).encode()).hexdigest()  # fmt: skip
        out["phases"][phase["name"]] = result
    return out


# --- orchestration -------------------------------------------------------------------------


def _baseline_tree(rev: str, into: Path) -> Path:
    """Export the packages of git revision ``rev`` into ``into`` (the working tree is untouched)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "features", "models",
                              "serving", "omnioffer", "simulator", "flows"],
                             check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _run_worker(spec: dict[str, Any], tree: Path, work: Path, tag: str) -> dict[str, Any]:
    path = work / f"spec-{tag}.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(path)],
                          env=env, cwd=str(tree), capture_output=True, timeout=3600)  # fmt: skip
    if done.returncode != 0:
        message = f"worker {tag} failed:\n{done.stderr.decode()[-4000:]}"
        raise RuntimeError(message)
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def _print_profile(rows: list[dict[str, Any]], title: str) -> None:
    print(f"\n{title} (per decision; tottime, cumtime in µs)")
    for r in rows:
        print(f"  {r['tottime_us']:8.1f} {r['cumtime_us']:8.1f} {r['calls_per_decision']:8.2f}  "
              f"{r['function']}")  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Set up, run the workers, print and write the results."""
    from omnioffer.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m bench.serve_inprocess")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--customers", type=int, default=1500)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--offers", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--registry", type=Path, default=None,
                        help="model registry (default: the settings' registry)")
    parser.add_argument("--baseline-rev", default=None,
                        help="also run the code of this git revision (e.g. HEAD), alternating")
    parser.add_argument("--rounds", type=int, default=2, help="runs per code version")
    parser.add_argument("--profile-calls", type=int, default=500)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--dump", type=Path, default=None,
                        help="write the current code's coverage answers and records here")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/serve_inprocess.json")
    args = parser.parse_args(argv)

    from bench.serve import bench_catalog, bench_policies

    with tempfile.TemporaryDirectory(prefix="omnioffer-inprocess-") as folder:
        work = Path(folder)
        started = time.perf_counter()
        store, customers = build_world(work, args.customers, args.days, args.seed)
        bench_catalog(work / "catalog", args.offers)
        bench_policies(work / "policies.yaml")
        registry, version, model = promoted_model(
            (args.registry or Settings().model_registry_dir).resolve(), work, args.seed
        )
        bodies = request_bodies(customers, args.calls + args.warmup, args.seed)
        (work / "bodies.json").write_text(
            json.dumps({k: [b.decode() for b in v] for k, v in bodies.items()})
        )
        now = WORLD_START + timedelta(days=args.days, hours=12)
        print(f"setup {time.perf_counter() - started:.1f} s: {len(customers)} profiles, "
              f"{args.offers} offers, {model}")  # fmt: skip
        bench_phase = {"name": "bench", "catalog": str(work / "catalog"),
                       "policies": str(work / "policies.yaml"), "model": True, "timed": True}
        spec = {
            "work": str(work), "store": str(store), "registry": str(registry),
            "version": version, "now": now.isoformat(), "bodies": str(work / "bodies.json"),
            "warmup": args.warmup, "profile": not args.no_profile,
            "profile_calls": args.profile_calls, "keep_answers": False,
            "phases": [
                bench_phase,
                # The shipped catalog (limits, tiers, stores) and policies, model and heuristic:
                # compared only, for eligibility and suppression paths the bench catalog lacks.
                {"name": "shipped-model", "catalog": None, "policies": None, "model": True,
                 "timed": False},
                {"name": "shipped-heuristic", "catalog": None, "policies": None,
                 "model": False, "timed": False},
            ],
        }  # fmt: skip
        versions = {"current": ROOT}
        if args.baseline_rev:
            versions = {"baseline": _baseline_tree(args.baseline_rev, work / "baseline"),
                        "current": ROOT}  # fmt: skip
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in versions}
        for round_no in range(args.rounds):
            for name, tree in versions.items():
                profile = round_no == args.rounds - 1 and not args.no_profile
                one = {**spec, "profile": profile}
                runs[name].append(_run_worker(one, tree, work, f"{name}-{round_no}"))
                bench = runs[name][-1]["phases"]["bench"]
                print(f"round {round_no} {name:8s} offers p50/p99 "
                      f"{bench['offers']['request']['p50_us']:.0f}/"
                      f"{bench['offers']['request']['p99_us']:.0f} µs (+ record "
                      f"{bench['offers']['record']['p50_us']:.0f}), channel "
                      f"{bench['channel']['request']['p50_us']:.0f}/"
                      f"{bench['channel']['request']['p99_us']:.0f} µs (+ record "
                      f"{bench['channel']['record']['p50_us']:.0f})")  # fmt: skip
        if args.dump is not None:
            dumped = _run_worker({**spec, "keep_answers": True, "profile": False,
                                  "phases": [{**p, "timed": False} for p in spec["phases"]]},
                                 ROOT, work, "dump")  # fmt: skip
            args.dump.write_text(json.dumps(dumped, indent=1))
    result = summarize(runs, args, model)
    for name in runs:
        for kind in ("offers", "channel"):
            rows = runs[name][-1]["phases"]["bench"].get(f"{kind}_profile")
            if rows:
                _print_profile(rows, f"{name}: {kind} top {len(rows)} by own time")
    print(json.dumps({k: v for k, v in result.items() if k != "profiles"}, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _best(runs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """Return the run with the lowest median total (noisy machine: the fastest is cleanest)."""
    return min((r["phases"]["bench"][kind] for r in runs), key=lambda r: r["total"]["p50_us"])


def summarize(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace,
              model: str) -> dict[str, Any]:  # fmt: skip
    """Return the result document: best run per code version, identity of the outputs."""
    result: dict[str, Any] = {
        "benchmark": "serve_inprocess",
        "calls": args.calls, "warmup": args.warmup, "rounds": args.rounds,
        "customers": args.customers, "candidates_per_request": args.offers, "model": model,
        "measures": "request = decode body + Engine.offers/channel + encode answer; record = "
                    "build + encode the decision record (the API does it after the response, "
                    "in the same process); total = both; best of the rounds by median total",
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    for name, done in runs.items():
        result[name] = {kind: _best(done, kind) for kind in ("offers", "channel")}
        last = done[-1]["phases"]["bench"]
        result.setdefault("profiles", {})[name] = {
            kind: last.get(f"{kind}_profile") for kind in ("offers", "channel")
        }
    if "baseline" in runs:
        result["baseline_rev"] = args.baseline_rev
        result["baseline_commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", args.baseline_rev],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip

        def hashes(run: dict[str, Any]) -> list[str]:
            out = []
            for name, phase in sorted(run["phases"].items()):
                for key, value in sorted(phase.items()):
                    if key.endswith("sha256") or key in ("offers", "channel"):
                        digest = value if isinstance(value, str) else value["sha256"]
                        out.append(f"{name}.{key}={digest}")
            return out

        base, cur = hashes(runs["baseline"][0]), hashes(runs["current"][0])
        result["identical_outputs"] = base == cur
        result["differing"] = sorted(set(base) ^ set(cur))
        for kind in ("offers", "channel"):
            before = result["baseline"][kind]["total"]["p50_us"]
            after = result["current"][kind]["total"]["p50_us"]
            result[f"{kind}_speedup_p50_total"] = round(before / after, 2)
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        # Runs with the code tree under test first on sys.path (see _run_worker).
        sys.path[0] = os.getcwd()
        sys.stdout.write(json.dumps(worker(Path(sys.argv[2]))) + "\n")
    else:
        main()
