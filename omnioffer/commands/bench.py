"""``omnioffer bench``: each benchmark prints a table and writes JSON under bench/results/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from omnioffer.commands.world import print_simulation, run_simulation
from omnioffer.console import (
    catalog_or_exit,
    console,
    progress_bar,
    settings_with,
    write_json,
)

bench_app = typer.Typer(help="Benchmarks: print a table and write JSON under bench/results/.")


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

    settings = settings_with()
    with tempfile.TemporaryDirectory() as out:
        stats = run_simulation(settings, customers, days, Path(out), "files", 0)
    print_simulation(stats, Path(json_path), "files")
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
    write_json(json_path, result)
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
    recovery: Annotated[
        bool, typer.Option(help="Run the flow with Bytewax recovery (snapshots every "
                           "OMNIOFFER_SNAPSHOT_INTERVAL_S seconds, 10 by default).")
    ] = False,
) -> None:
    """Measure the feature flow on Kafka + Redis: throughput vs a bare consumer, freshness."""
    from bench.stream import BenchError, StreamBench, result_table, run_stream_bench

    settings = settings_with()
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
        snapshot_interval_s=settings.snapshot_interval_s if recovery else None,
    )
    try:
        with progress_bar() as progress:
            result = run_stream_bench(bench, catalog_or_exit(settings), progress)
    except BenchError as error:
        console.print(f"[red]stream benchmark failed:[/red] {error}")
        raise typer.Exit(1) from None
    console.print(result_table(result))
    write_json(json_path, result)
    console.print(f"wrote {json_path}")




@bench_app.command("serve")
def bench_serve(
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the JSON.")] = Path(
        "bench/results/serve.json"
    ),
    redis_url: Annotated[
        str | None, typer.Option(help="Redis URL (default: start a redis-server).")
    ] = None,
    redis_cluster: Annotated[
        bool, typer.Option(help="A Redis Cluster (3 primaries started here), Feast reading it too.")
    ] = False,
    profiles: Annotated[int, typer.Option(min=1, help="Profiles in Redis.")] = 100_000,
    rate: Annotated[int, typer.Option(min=1, help="Offered load, requests/s.")] = 500,
    seconds: Annotated[float, typer.Option(min=1.0, help="Seconds per endpoint.")] = 20.0,
    feast: Annotated[bool, typer.Option(help="Measure Feast's read in its own venv.")] = True,
    workers: Annotated[int, typer.Option(min=1, help="API worker processes.")] = 1,
    repeats: Annotated[
        int, typer.Option(min=1, help="Rounds of both loads; the median p99 is reported.")
    ] = 3,
) -> None:
    """Measure the decision API against Redis at a fixed load, side by side with Feast."""
    from bench.serve import BenchError, ServeBench, result_table, run_serve_bench

    settings = settings_with()
    bench = ServeBench(
        profiles=profiles, rate=rate, seconds=seconds, redis_url=redis_url,
        cluster=redis_cluster, seed=settings.seed,
        feast=feast, registry_dir=settings.model_registry_dir, workers=workers,
        repeats=repeats,
    )  # fmt: skip
    try:
        result = run_serve_bench(bench, console)
    except BenchError as error:
        console.print(f"[red]serve benchmark failed:[/red] {error}")
        raise typer.Exit(1) from None
    Console().print(result_table(result))
    write_json(json_path, result)
    console.print(f"wrote {json_path}")


@bench_app.command("journeys")
def bench_journeys(
    json_path: Annotated[Path, typer.Option("--json", help="Where to write the JSON.")] = Path(
        "bench/results/journeys.json"
    ),
    customers: Annotated[int, typer.Option(min=1, help="Simulated customers.")] = 5000,
    days: Annotated[int, typer.Option(min=1, help="Simulated days.")] = 30,
    control_share: Annotated[
        float, typer.Option(min=0.01, max=0.99, help="Entries held out, for every journey.")
    ] = 0.5,
) -> None:
    """Run the simulator in a closed loop with the journeys: lift, message rate, violations."""
    from bench.journeys import result_table, run_journey_bench

    settings = settings_with()
    with progress_bar() as bar:
        task = bar.add_task("closed loop, days", total=days)
        result = run_journey_bench(
            customers=customers, days=days, seed=settings.seed, control_share=control_share,
            catalog=catalog_or_exit(settings),
            progress=lambda done, _total: bar.update(task, completed=done),
        )  # fmt: skip
    Console().print(result_table(result.document))
    write_json(json_path, result.document)
    console.print(f"wrote {json_path}")
