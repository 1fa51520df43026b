"""The ``omnioffer`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from features.catalog import CatalogError, load_catalog
from features.events import json_schemas
from features.profile import PERSONAS
from omnioffer.settings import Settings

app = typer.Typer(
    name="omnioffer",
    help="Real-time personalization engine for omnichannel retail and loyalty programs.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)
DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "features" / "data" / "catalog"


def _settings(**overrides: object) -> Settings:
    """Build settings from the environment, with CLI flags (when given) taking precedence."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _catalog(settings: Settings):
    try:
        return load_catalog(settings.catalog_dir or DEFAULT_CATALOG)
    except CatalogError as error:
        console.print(f"[red]catalog error:[/red] {error}")
        raise typer.Exit(2) from None


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@app.command()
def schema(
    kind: Annotated[str | None, typer.Option(help="Only this event kind, e.g. purchase.")] = None,
) -> None:
    """Print the JSON Schema of every event kind (the event contract)."""
    document = json_schemas()
    if kind is not None:
        definitions = document["$defs"]  # type: ignore[index]
        matches = {
            name: spec
            for name, spec in definitions.items()  # type: ignore[union-attr]
            if spec.get("properties", {}).get("kind", {}).get("enum") == [kind]
        }
        if not matches:
            console.print(f"[red]unknown event kind {kind!r}[/red]")
            raise typer.Exit(2)
        document = {"$defs": definitions, **next(iter(matches.values()))}
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


@app.command()
def catalog(
    directory: Annotated[Path | None, typer.Argument(help="Catalog folder to check.")] = None,
) -> None:
    """Validate catalog files (offers, stores, products, channels) and summarize them."""
    settings = _settings(catalog_dir=directory)
    loaded = _catalog(settings)
    console.print(
        f"catalog OK: {len(loaded.offers)} offers, {len(loaded.stores)} stores, "
        f"{len(loaded.products)} products in {len(loaded.categories)} categories, "
        f"{len(loaded.channels)} channels"
    )


@app.command()
def simulate(
    customers: Annotated[int, typer.Option(min=1, help="How many customers.")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="How many days of activity.")] = 14,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: settings).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder for the file event log.")] = None,
    to: Annotated[Literal["files", "kafka"], typer.Option(help="Files or Kafka.")] = "files",
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers.")] = None,
    rate: Annotated[int, typer.Option(min=0, help="Events per second to Kafka; 0 = max.")] = 0,
) -> None:
    """Generate a seeded synthetic omnichannel world into files or Kafka."""
    settings = _settings(seed=seed, kafka_bootstrap=bootstrap)
    stats = _run_simulation(settings, customers, days, out or settings.event_log_dir, to, rate)
    _print_simulation(stats, out or settings.event_log_dir, to)


def _run_simulation(
    settings: Settings, customers: int, days: int, out: Path, to: str, rate: int
):
    from simulator import FileSink, KafkaSink, SimulationConfig, simulate

    config = SimulationConfig(
        customers=customers, days=days, seed=settings.seed, contact_hash_key=settings.hash_key
    )
    sink = (
        KafkaSink(settings.kafka_bootstrap, rate=rate) if to == "kafka" else FileSink(out)
    )
    with _progress() as progress:
        task = progress.add_task(f"simulating {customers:,} customers, days", total=days)
        stats = simulate(
            config,
            _catalog(settings),
            sink,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
            ground_truth=out / "ground_truth.jsonl",
        )
    return stats


def _print_simulation(stats, out: Path, to: str) -> None:
    table = Table(title="simulation", show_header=False)
    table.add_row("customers", f"{stats.customers:,}")
    table.add_row("events written", f"{stats.events:,}")
    for topic, count in sorted(stats.by_topic.items()):
        table.add_row(f"  {topic}", f"{count:,}")
    noise = f"{stats.malformed} / {stats.duplicates} / {stats.late}"
    table.add_row("malformed / duplicates / late", noise)
    table.add_row("logged decisions", f"{stats.decisions:,}")
    table.add_row("elapsed", f"{stats.elapsed_s:.1f} s")
    table.add_row("messages per second", f"{stats.events_per_second:,.0f}")
    table.add_row("output", str(out) if to == "files" else "kafka")
    console.print(table)


@app.command()
def demo(
    customers: Annotated[int, typer.Option(min=1, help="How many customers.")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="How many days.")] = 14,
) -> None:
    """Run the pipeline end to end on embedded defaults (files + SQLite; no Kafka or Redis)."""
    import shutil

    base = _settings().data_dir / "demo"
    shutil.rmtree(base, ignore_errors=True)
    settings = _settings(events_dir=base / "events", sqlite_path=base / "online.sqlite3")
    out = settings.event_log_dir
    console.rule("[bold]1. simulate a world")
    stats = _run_simulation(settings, customers, days, out, "files", 0)
    _print_simulation(stats, out, "files")

    console.rule("[bold]2. streaming feature flow: file event log -> Bytewax -> SQLite")
    _demo_flow(settings)

    console.rule("[bold]3. a few live profiles")
    _demo_profiles(settings)

    console.rule("[bold]4. train, evaluate (offline, off-policy, closed loop) and promote")
    run_dir = _demo_models(settings)

    console.rule("[bold]5. decisions from the serving API (promoted model)")
    _demo_decisions(settings)

    console.rule("[bold]not built yet")
    console.print(
        "Triggered journeys (issue 7) are not built yet; the demo runs them here when they land."
    )
    console.print(
        f"outputs: {out} (event log, one JSONL per topic; deadletter.jsonl; ground_truth.jsonl; "
        f"decisions.jsonl), {settings.store_path} (online store), {run_dir} (model run). "
        "Serve it: omnioffer serve --demo"
    )


def _demo_flow(settings: Settings) -> None:
    import time

    from flows import metrics
    from flows.features_flow import run

    started = time.perf_counter()
    run(settings.flow_config(), workers=1)
    elapsed = time.perf_counter() - started
    kinds = _samples(metrics.EVENTS_IN, "kind")
    reasons = _samples(metrics.DEADLETTERED, "reason")
    merges = _samples(metrics.MERGES, "rule")
    table = Table("accepted kind", "events", "dead-lettered reason", "events")
    left = sorted(kinds.items(), key=lambda kv: -kv[1])
    right = sorted(reasons.items(), key=lambda kv: -kv[1])
    for row in range(max(len(left), len(right))):
        kind, count = left[row] if row < len(left) else ("", 0)
        code, dead = right[row] if row < len(right) else ("", 0)
        table.add_row(kind, f"{count:,}" if kind else "", code, f"{dead:,}" if code else "")
    console.print(table)
    total = sum(kinds.values()) + sum(reasons.values())
    console.print(
        f"{total:,} events in {elapsed:.1f} s ({total / elapsed:,.0f}/s, one worker); "
        f"identity moves: {merges}"
    )


def _demo_models(settings: Settings) -> Path:
    from models.workflow import train_and_evaluate

    with _progress() as progress:
        task = progress.add_task("train and evaluate", total=None)

        def report(step: str, done: int, total: int) -> None:
            progress.update(task, description=f"train and evaluate: {step}")

        result = train_and_evaluate(settings, settings.event_log_dir, progress=report)
    loop = result["closed_loop"]
    table = Table("model", "next-best-offer AUC", "channel AUC", "ECE", "DR value [95 % CI]")
    dr = result["dr"]
    table.add_row(
        result["model_version"],
        f"{result['nbo_auc']:.3f}",
        f"{result['channel_auc']:.3f}",
        f"{result['nbo_ece']:.4f}",
        f"{dr['value']:.4f} [{dr['ci_low']:.4f}, {dr['ci_high']:.4f}]",
    )
    console.print(table)
    console.print(
        "closed loop, expected reward per decision: "
        + ", ".join(f"{name} {value:.4f}" for name, value in loop.items())
        + f" (true value of the model's policy {result['ope_true_value']:.4f})"
    )
    return Path(result["run_dir"])


def _demo_decisions(settings: Settings) -> None:
    import warnings
    from datetime import timedelta

    with warnings.catch_warnings():
        # The in-process client is only the demo's way in; its deprecation is not news.
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from serving.app import create_app

    truth = settings.event_log_dir / "ground_truth.jsonl"
    first = orjson.loads(truth.read_bytes().split(b"\n", 1)[0])
    with settings.open_store() as store:
        raw = store.read_profile(f"customer_id:{first['customer_id']}")
    last_seen = orjson.loads(raw)["last_seen"] if raw else int(datetime.now(UTC).timestamp())
    # Decide as if an hour after that customer's last event, when the profile is live.
    now = datetime.fromtimestamp(last_seen, tz=UTC) + timedelta(hours=1)
    with TestClient(create_app(settings, clock=lambda: now)) as api:
        web_home = {"channel": "web", "page": "home"}
        known = api.post(
            "/v1/offers",
            json={"customer_id": first["customer_id"], "context": web_home, "limit": 3},
        ).json()
        stranger = api.post(
            "/v1/offers",
            json={"anonymous_id": "demo-new-visitor", "context": {"channel": "app"}, "limit": 3},
        ).json()
        channel = api.post(
            "/v1/channel",
            json={"customer_id": first["customer_id"],
                  "message": {"campaign": "demo", "offer_id": known["offers"][0]["offer_id"]
                              if known.get("offers") else None, "kind": "marketing"}},
        ).json()
    table = Table("request", "answer", "why")
    for label, answer in ((first["customer_id"], known), ("new visitor (app)", stranger)):
        for offer in answer.get("offers", []):
            table.add_row(label, f"{offer['offer_id']} ({offer['score']:.3f})",
                          "; ".join(offer.get("reasons", [])[:2]))
            label = ""
    table.add_row(
        f"channel for {first['customer_id']}",
        f"{channel.get('channel')} at {channel.get('send_at')}",
        str(channel.get("reason") or channel.get("suppressed_by")),
    )
    console.print(table)
    console.print(f"model {known.get('model_version')}; every decision is in decisions.jsonl")


def _samples(metric: Any, label: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                values[sample.labels[label]] = int(sample.value)
    return values


def _demo_profiles(settings: Settings) -> None:
    from features.profile import decode_profile, profile_features

    with settings.open_store() as store:
        truth = settings.event_log_dir / "ground_truth.jsonl"
        lines = truth.read_bytes().splitlines()[:400]
        ids = [orjson.loads(line)["customer_id"] for line in lines]
        raws = store.read_profiles([f"customer_id:{c}" for c in ids])
    records = [decode_profile(raw) for raw in raws if raw is not None]
    records.sort(key=lambda r: -sum(d.get("ev", 0) for d in r["days"].values()))
    table = Table("profile", "ids", "orders", "spend", "top category", "strongest persona")
    for record in records[:6]:
        features = profile_features(record, record["last_seen"] + 3600)
        persona = max(PERSONAS, key=lambda p: features[f"persona_{p}"])
        table.add_row(
            record["profile_id"],
            str(len(record["fragments"])),
            str(features["frequency_90d_all"]),
            f"{features['monetary_90d_all']:.2f}",
            str(features["top_category"]),
            f"{persona} {features[f'persona_{persona}']:.2f}",
        )
    console.print(table)
    console.print(
        f"{len(records)} of the first {len(ids)} customers have a profile; features are as of "
        "an hour after each one's last event. Inspect one: omnioffer features show ID"
    )


flow_app = typer.Typer(help="Streaming dataflows (Bytewax).", no_args_is_help=True)
app.add_typer(flow_app, name="flow")
features_app = typer.Typer(help="Profiles and features: rebuild, inspect.", no_args_is_help=True)
app.add_typer(features_app, name="features")

Source = Literal["files", "kafka"]
StoreKind = Literal["sqlite", "redis"]


@flow_app.command("features")
def flow_features(
    source: Annotated[Source | None, typer.Option(help="Read files or Kafka.")] = None,
    store: Annotated[StoreKind | None, typer.Option(help="Online store.")] = None,
    events: Annotated[Path | None, typer.Option(help="File event log folder.")] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers.")] = None,
    redis_url: Annotated[str | None, typer.Option(help="Redis URL.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker threads in this process.")] = 1,
    recovery_dir: Annotated[Path | None, typer.Option(help="Enable recovery here.")] = None,
    snapshot_interval: Annotated[float | None, typer.Option(help="Snapshot every N s.")] = None,
    tail: Annotated[bool | None, typer.Option(help="Keep reading Kafka at its end.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics.")] = None,
) -> None:
    """Run the streaming feature flow: validate, resolve identities, roll features, store."""
    from flows.features_flow import run

    settings = _settings(
        source=source,
        store=store,
        kafka_bootstrap=bootstrap,
        redis_url=redis_url,
        recovery_dir=recovery_dir,
        snapshot_interval_s=snapshot_interval,
        tail=tail,
        metrics_port=metrics_port,
    )
    overrides = {"event_log_dir": events} if events is not None else {}
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port)
    console.print(
        f"feature flow: {settings.source} -> {settings.store}, {workers} worker(s)"
        + (f", recovery in {settings.recovery_dir}" if settings.recovery_dir else "")
    )
    run(
        settings.flow_config(**overrides),
        workers=workers,
        recovery_dir=settings.recovery_dir,
        snapshot_interval_s=settings.snapshot_interval_s,
        backup_interval_s=settings.backup_interval_s,
    )


@features_app.command("rebuild")
def features_rebuild(
    events: Annotated[Path | None, typer.Option(help="File event log folder.")] = None,
    as_of: Annotated[
        datetime | None, typer.Option(help="Only events before this time (ISO-8601, UTC).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write features as of --as-of to this JSONL file.")
    ] = None,
) -> None:
    """Recompute every profile from the event log with the stream's own feature code."""
    from features.eventlog import load_events
    from features.pipeline import recompute
    from flows.rebuild import features_as_of, write_to_store

    settings = _settings()
    when = as_of.replace(tzinfo=UTC) if as_of is not None and as_of.tzinfo is None else as_of
    loaded = load_events(
        events or settings.event_log_dir, key=settings.hash_key, max_bytes=settings.max_event_bytes
    )
    console.print(f"{len(loaded):,} valid events")
    if out is not None:
        if when is None:
            console.print("[red]--out needs --as-of[/red]")
            raise typer.Exit(2)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as handle:
            count = 0
            for profile_id, features in features_as_of(loaded, when):
                handle.write(orjson.dumps({"profile_id": profile_id, **features}) + b"\n")
                count += 1
        console.print(f"wrote features of {count:,} profiles as of {when.isoformat()} to {out}")
        return
    if when is not None:
        loaded = [e for e in loaded if e.event_time < when]
    result = recompute(loaded)
    with settings.open_store() as store:
        written = write_to_store(result, store)
    console.print(f"rebuilt {written:,} profiles, {len(result.identity):,} identifiers")


@features_app.command("show")
def features_show(
    identifier: Annotated[str, typer.Argument(help="e.g. customer_id:cu-000001")],
) -> None:
    """Print the features of the profile an identifier resolves to, as of now."""
    import time

    from features.profile import decode_profile, profile_features

    settings = _settings()
    with settings.open_store() as store:
        profile_id = store.resolve([identifier]) or identifier
        raw = store.read_profile(profile_id)
    if raw is None:
        console.print(f"[red]no profile for {identifier!r}[/red]")
        raise typer.Exit(1)
    features = profile_features(decode_profile(raw), int(time.time()))
    document = orjson.dumps({"profile_id": profile_id, **features}, option=orjson.OPT_INDENT_2)
    sys.stdout.write(document.decode() + "\n")


bench_app = typer.Typer(help="Benchmarks: print a table and write JSON under bench/results/.")
app.add_typer(bench_app, name="bench")


@bench_app.command("simulate")
def bench_simulate(
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the JSON.")] = Path(
        "bench/results/simulate.json"
    ),
    customers: Annotated[int, typer.Option(min=1)] = 10_000,
    days: Annotated[int, typer.Option(min=1)] = 30,
) -> None:
    """Measure simulator throughput (events generated per second into the file event log)."""
    import platform
    import tempfile

    settings = _settings()
    with tempfile.TemporaryDirectory() as out:
        stats = _run_simulation(settings, customers, days, Path(out), "files", 0)
    _print_simulation(stats, Path(json_path), "files")
    result = {
        "benchmark": "simulate",
        "customers": customers,
        "days": days,
        "seed": settings.seed,
        "events": stats.events,
        "messages": stats.messages,
        "elapsed_s": round(stats.elapsed_s, 3),
        "events_per_s": round(stats.events / stats.elapsed_s) if stats.elapsed_s else 0,
        "messages_per_s": round(stats.events_per_second),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    console.print(f"wrote {json_path}")


@bench_app.command("stream")
def bench_stream(
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the JSON.")] = Path(
        "bench/results/stream.json"
    ),
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka HOST:PORT (default: start a Tansu broker).")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis URL (default: start a redis-server).")
    ] = None,
    customers: Annotated[int, typer.Option(min=1, help="~300,000 events over 14 days.")] = 2600,
    days: Annotated[int, typer.Option(min=1)] = 14,
    workers: Annotated[int, typer.Option(min=1, help="Flow worker threads.")] = 1,
    rate: Annotated[int, typer.Option(min=1, help="Events/s in the freshness phase.")] = 5000,
    freshness_seconds: Annotated[float, typer.Option(min=1.0)] = 30.0,
) -> None:
    """Measure the feature flow on Kafka + Redis: throughput vs a bare consumer, freshness."""
    from bench.stream import BenchError, StreamBench, result_table, run_stream_bench

    settings = _settings()
    bench = StreamBench(
        customers=customers,
        days=days,
        seed=settings.seed,
        hash_key=settings.hash_key,
        workers=workers,
        rate=rate,
        freshness_seconds=freshness_seconds,
        bootstrap=bootstrap,
        redis_url=redis_url,
    )
    try:
        with _progress() as progress:
            result = run_stream_bench(bench, _catalog(settings), progress)
    except BenchError as error:
        console.print(f"[red]stream benchmark failed:[/red] {error}")
        raise typer.Exit(1) from None
    console.print(result_table(result))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    console.print(f"wrote {json_path}")


# --- models: train, evaluate, registry (issue 5) ------------------------------------------------
models_app = typer.Typer(help="Model registry: list, promote, roll back.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _stage_progress(progress: Progress):
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    return update


def _metrics_table(title: str, report: dict[str, Any]) -> Table:
    table = Table("model", "AUC", "log loss", "ECE", "test rows", "positives", title=title)
    rows = [("next best offer", report["nbo"]), ("channel", report["channel"])]
    for kind in ("nbo", "channel"):
        for name, m in report.get("baselines", {}).get(kind, {}).items():
            rows.append((f"  {kind} {name} baseline", m))
    for name, m in rows:
        table.add_row(name, f"{m['auc']:.3f}", f"{m['logloss']:.4f}", f"{m['ece']:.4f}",
                      str(m.get("n", "")), str(m.get("positives", "")))
    return table


@app.command()
def train(
    events: Annotated[Path | None, typer.Option(help="File event log folder.")] = None,
    seed: Annotated[int | None, typer.Option(help="Training seed (default: settings).")] = None,
    promote: Annotated[bool, typer.Option(help="Promote the new version.")] = False,
) -> None:
    """Build point-in-time training sets, train and calibrate both models, register them."""
    from models.train import TrainConfig
    from models.workflow import train as train_models

    settings = _settings(seed=seed)
    folder = events or settings.event_log_dir
    if not (folder / "decisions.jsonl").exists():
        console.print(f"[red]no decisions.jsonl in {folder}[/red]: run `omnioffer simulate` first")
        raise typer.Exit(2)
    with _progress() as progress:
        version, _bundle, ts, report = train_models(
            settings, folder, config=TrainConfig(seed=settings.seed), promote=promote,
            progress=_stage_progress(progress),
        )
    console.print(_metrics_table(f"{version}: held-out time slice", report))
    state = "promoted" if promote else "registered (promote with `omnioffer models promote`)"
    console.print(f"{version} {state}: {len(ts):,} labelled decisions, "
                  f"registry {settings.model_registry_dir}")


@app.command()
def evaluate(
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the JSON.")] = Path(
        "bench/results/evaluate.json"
    ),
    events: Annotated[
        Path | None, typer.Option(help="Train on this event log (default: simulate one).")
    ] = None,
    customers: Annotated[int, typer.Option(min=1, help="Training world customers.")] = 6000,
    days: Annotated[int, typer.Option(min=1, help="Training world days.")] = 28,
    eval_customers: Annotated[int, typer.Option(min=1, help="Fresh world customers.")] = 2500,
    eval_days: Annotated[int, typer.Option(min=2, help="Fresh world days.")] = 21,
    warmup_days: Annotated[int, typer.Option(min=0, help="Fresh history before scoring.")] = 7,
    bootstrap: Annotated[int, typer.Option(min=10, help="Bootstrap resamples.")] = 1000,
    measure: Annotated[bool, typer.Option(help="Time 1M-row training and scoring.")] = True,
    promote: Annotated[bool, typer.Option(help="Promote the trained version.")] = True,
) -> None:
    """Train, then evaluate: held-out metrics, OPE and the closed loop on fresh customers."""
    from models.workflow import EvaluationConfig, run_evaluation, simulate_world

    settings = _settings()
    with _progress() as progress:
        update = _stage_progress(progress)
        folder = events
        if folder is None:
            folder = settings.data_dir / "evaluate" / f"world-{customers}x{days}-s{settings.seed}"
            if not (folder / "ground_truth.jsonl").exists():
                simulate_world(folder, customers, days, settings.seed, settings,
                               _catalog(settings), update)
        document = run_evaluation(
            settings, folder, promote=promote, progress=update,
            evaluation=EvaluationConfig(eval_customers=eval_customers, eval_days=eval_days,
                                        warmup_days=warmup_days, n_bootstrap=bootstrap,
                                        measure=measure),
        )
    console.print(_metrics_table("held-out time slice", document["heldout"]))
    table = Table("policy", "reward / decision (sampled)", "expected", title="closed loop")
    for name, value in document["closed_loop"].items():
        table.add_row(name, f"{value:.4f}", f"{document['closed_loop_expected'][name]:.4f}")
    console.print(table)
    ope = Table("estimator", "value", "95 % interval", title="off-policy estimates")
    for name, e in document["ope"].items():
        ope.add_row(name, f"{e['value']:.4f}", f"[{e['ci_low']:.4f}, {e['ci_high']:.4f}]")
    ope.add_row("closed loop (truth)", f"{document['ope_true_value']:.4f}", "")
    console.print(ope)
    console.print(document["targets"])
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    console.print(f"wrote {json_path}; plots in {document['run_dir']}")


@models_app.command("list")
def models_list() -> None:
    """List registered model versions; the promoted one is marked."""
    from models.registry import Registry

    registry = Registry(_settings().model_registry_dir)
    promoted = registry.promoted()
    table = Table("", "version", "created", "data", "nbo AUC", "channel AUC", "seed", "commit")
    for version in registry.versions():
        meta = registry.metadata(version)
        data = meta.get("data_range", {})
        m = meta.get("metrics", {})
        table.add_row(
            "*" if version == promoted else "",
            version,
            meta.get("created_at", ""),
            f"{data.get('first_decision', '')[:10]} .. {data.get('last_decision', '')[:10]}",
            f"{m.get('nbo', {}).get('auc', float('nan')):.3f}",
            f"{m.get('channel', {}).get('auc', float('nan')):.3f}",
            str(meta.get("seed", "")),
            str(meta.get("git_commit", ""))[:12],
        )
    console.print(table)


@models_app.command("promote")
def models_promote(version: Annotated[str, typer.Argument(help="e.g. v0003")]) -> None:
    """Promote a version: serving picks it up without a restart."""
    from models.registry import Registry, RegistryError

    registry = Registry(_settings().model_registry_dir)
    try:
        registry.promote(version)
    except RegistryError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    console.print(f"promoted {version}")


@models_app.command("rollback")
def models_rollback() -> None:
    """Promote the previously promoted version again."""
    from models.registry import Registry, RegistryError

    registry = Registry(_settings().model_registry_dir)
    try:
        version = registry.rollback()
    except RegistryError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    console.print(f"rolled back to {version}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    store: Annotated[StoreKind | None, typer.Option(help="Online store.")] = None,
    redis_url: Annotated[str | None, typer.Option(help="Redis URL.")] = None,
    policies: Annotated[Path | None, typer.Option(help="Policies file (levers, caps).")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Exploration rate.")] = None,
    decision_log: Annotated[Source | None, typer.Option(help="Files or Kafka.")] = None,
    model_pointer: Annotated[Path | None, typer.Option(help="Promoted-model pointer.")] = None,
    demo: Annotated[bool, typer.Option(help="Serve what `omnioffer demo` built.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the decision API (offers, channel choice, profiles, erasure, /metrics, /docs)."""
    import uvicorn

    from features.policy import PolicyError
    from serving.app import create_app

    base = _settings().data_dir / "demo"
    settings = _settings(
        serve_host=host,
        serve_port=port,
        store=store,
        redis_url=redis_url,
        policies_path=policies,
        explore_epsilon=epsilon,
        decision_log=decision_log,
        model_pointer=model_pointer,
        **({"events_dir": base / "events", "sqlite_path": base / "online.sqlite3"} if demo else {}),
    )
    try:
        api = create_app(settings)
    except (PolicyError, CatalogError) as error:
        console.print(f"[red]cannot start:[/red] {error}")
        raise typer.Exit(2) from None
    where = settings.redis_url if settings.store == "redis" else settings.store_path
    console.print(
        f"decision API on http://{settings.serve_host}:{settings.serve_port} (docs at /docs); "
        f"store {settings.store} {where}; model {api.state.engine.scorers.current.version}; "
        f"decisions to {settings.decision_log}"
    )
    if workers > 1:  # each worker process builds its own app from the environment
        from serving.server import export_settings

        api.state.engine.decisions.close()
        export_settings(settings)
        uvicorn.run(
            "serving.server:app_from_env", factory=True, workers=workers,
            host=settings.serve_host, port=settings.serve_port, log_level="warning",
            access_log=False,
        )  # fmt: skip
        return
    uvicorn.run(
        api, host=settings.serve_host, port=settings.serve_port, log_level="warning",
        access_log=False,
    )  # fmt: skip


@app.command()
def decisions(
    suppressed: Annotated[bool, typer.Option(help="Who was capped/suppressed, and why.")] = False,
    events: Annotated[Path | None, typer.Option(help="Embedded event log folder.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to show.")] = 30,
) -> None:
    """Read the embedded decision log: counts, or (--suppressed) who was capped and why."""
    from collections import Counter

    from serving.decision_log import read_decisions
    from serving.report import suppressions

    folder = events or _settings().event_log_dir
    logged = list(read_decisions(folder))
    if not logged:
        console.print(f"no decisions in {folder}/decisions.jsonl")
        raise typer.Exit(1)
    report = suppressions(logged)
    if suppressed:
        table = Table("decided at", "surface", "who", "about", "suppressed by", title="suppressed")
        for row in report.rows[-limit:]:
            rule = row.rule + (" (degraded)" if row.degraded else "")
            table.add_row(row.decided_at.isoformat(timespec="seconds"), row.surface, row.who,
                          row.about, rule)  # fmt: skip
        sys.stdout.flush()
        Console().print(table)
    counts = Table("rule", "decisions suppressed", "candidates blocked", title="by rule")
    for rule in sorted(set(report.by_rule) | set(report.blocked_by_rule)):
        counts.add_row(rule, str(report.by_rule.get(rule, 0)),
                       str(report.blocked_by_rule.get(rule, 0)))  # fmt: skip
    Console().print(counts)
    if not suppressed:
        chosen = Counter(
            (d.surface, c.channel if d.surface == "channel" else c.offer_id or "")
            for d in logged for c in d.chosen[:1]
        )
        top = Table("surface", "first choice", "decisions", title="most chosen")
        for (surface, what), n in chosen.most_common(limit):
            top.add_row(surface, what, str(n))
        Console().print(top)
    console.print(
        f"{report.decisions:,} decisions, {len(report.rows):,} suppressed, in {folder}"
    )


@bench_app.command("serve")
def bench_serve(
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the JSON.")] = Path(
        "bench/results/serve.json"
    ),
    redis_url: Annotated[
        str | None, typer.Option(help="Redis URL (default: start a redis-server).")
    ] = None,
    profiles: Annotated[int, typer.Option(min=1, help="Profiles in Redis.")] = 100_000,
    rate: Annotated[int, typer.Option(min=1, help="Offered load, requests/s.")] = 500,
    seconds: Annotated[float, typer.Option(min=1.0, help="Seconds per endpoint.")] = 20.0,
    feast: Annotated[bool, typer.Option(help="Measure Feast's read in its own venv.")] = True,
    workers: Annotated[int, typer.Option(min=1, help="API worker processes.")] = 2,
) -> None:
    """Measure the decision API against Redis at a fixed load, side by side with Feast."""
    from bench.serve import BenchError, ServeBench, result_table, run_serve_bench

    settings = _settings()
    bench = ServeBench(
        profiles=profiles, rate=rate, seconds=seconds, redis_url=redis_url, seed=settings.seed,
        feast=feast, registry_dir=settings.model_registry_dir, workers=workers,
    )  # fmt: skip
    try:
        result = run_serve_bench(bench, console)
    except BenchError as error:
        console.print(f"[red]serve benchmark failed:[/red] {error}")
        raise typer.Exit(1) from None
    Console().print(result_table(result))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    console.print(f"wrote {json_path}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
