"""Subcommands about the simulated world and the contract: schema, catalog, simulate, topics."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import orjson
import typer
from rich.console import Console
from rich.table import Table

from features.events import json_schemas
from omnioffer.console import (
    catalog_or_exit,
    console,
    progress_bar,
    settings_with,
)
from omnioffer.settings import Settings


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


def catalog(
    directory: Annotated[Path | None, typer.Argument(help="Catalog folder to check.")] = None,
) -> None:
    """Validate catalog files (offers, stores, products, channels) and summarize them."""
    settings = settings_with(catalog_dir=directory)
    loaded = catalog_or_exit(settings)
    console.print(
        f"catalog OK: {len(loaded.offers)} offers, {len(loaded.stores)} stores, "
        f"{len(loaded.products)} products in {len(loaded.categories)} categories, "
        f"{len(loaded.channels)} channels"
    )


def simulate(
    customers: Annotated[int, typer.Option(min=1, help="How many customers.")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="How many days of activity.")] = 14,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: settings).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder for the file event log.")] = None,
    to: Annotated[Literal["files", "kafka"], typer.Option(help="Files or Kafka.")] = "files",
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers.")] = None,
    rate: Annotated[int, typer.Option(min=0, help="Events per second to Kafka; 0 = max.")] = 0,
    refund_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of orders refunded later.")
    ] = 0.0,
) -> None:
    """Generate a seeded synthetic omnichannel world into files or Kafka."""
    settings = settings_with(seed=seed, kafka_bootstrap=bootstrap)
    stats = run_simulation(
        settings, customers, days, out or settings.event_log_dir, to, rate, refund_rate=refund_rate
    )
    print_simulation(stats, out or settings.event_log_dir, to)


def run_simulation(
    settings: Settings, customers: int, days: int, out: Path, to: str, rate: int,
    *, refund_rate: float = 0.0,
):  # fmt: skip
    from simulator import FileSink, KafkaSink, SimulationConfig, simulate

    config = SimulationConfig(
        customers=customers, days=days, seed=settings.seed, contact_hash_key=settings.hash_key,
        refund_rate=refund_rate,
    )  # fmt: skip
    sink = (
        KafkaSink(settings.kafka_bootstrap, rate=rate) if to == "kafka" else FileSink(out)
    )
    with progress_bar() as progress:
        task = progress.add_task(f"simulating {customers:,} customers, days", total=days)
        stats = simulate(
            config,
            catalog_or_exit(settings),
            sink,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
            ground_truth=out / "ground_truth.jsonl",
        )
    return stats


def print_simulation(stats, out: Path, to: str) -> None:
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


def topics(
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers.")] = None,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions per new topic.")] = 3,
    replication: Annotated[int, typer.Option(min=1, help="Replicas per partition.")] = 1,
) -> None:
    """Create every Kafka topic omnioffer uses, with its settings (existing ones are kept)."""
    from features.topics import ALL_TOPICS, TOPIC_CONFIGS
    from omnioffer.services import ServiceError, create_topics

    settings = settings_with(kafka_bootstrap=bootstrap)
    try:
        create_topics(settings.kafka_bootstrap, ALL_TOPICS, partitions, replication)
    except ServiceError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    table = Table("topic", "settings (on creation)", title=f"topics on {settings.kafka_bootstrap}")
    for name in ALL_TOPICS:
        configs = TOPIC_CONFIGS.get(name, {})
        table.add_row(name, ", ".join(f"{k}={v}" for k, v in configs.items()) or "broker defaults")
    Console().print(table)
