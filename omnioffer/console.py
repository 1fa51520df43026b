"""What every subcommand shares: the console, settings from flags, catalog, progress bars."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from features.catalog import Catalog, CatalogError, load_catalog
from omnioffer.settings import Settings

console = Console(stderr=True)
DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "features" / "data" / "catalog"
Source = Literal["files", "kafka"]
StoreKind = Literal["sqlite", "redis"]


# The options every streaming-flow command takes.
SourceOption = Annotated[Source | None, typer.Option(help="Read files or Kafka.")]
StoreOption = Annotated[StoreKind | None, typer.Option(help="Online store.")]
EventsOption = Annotated[Path | None, typer.Option(help="File event log folder.")]
BootstrapOption = Annotated[str | None, typer.Option(help="Kafka bootstrap servers.")]
RedisOption = Annotated[str | None, typer.Option(help="Redis URL.")]
RedisClusterOption = Annotated[
    bool | None, typer.Option(help="The Redis URL names a Redis Cluster node.")
]
WorkersOption = Annotated[int, typer.Option(min=1, help="Worker threads in this process.")]
RecoveryOption = Annotated[Path | None, typer.Option(help="Enable recovery here.")]
SnapshotOption = Annotated[float | None, typer.Option(help="Snapshot every N s.")]
TailOption = Annotated[bool | None, typer.Option(help="Keep reading Kafka at its end.")]
MetricsOption = Annotated[int | None, typer.Option(help="Serve Prometheus metrics.")]


def flow_settings(**overrides: object) -> Settings:
    """Build a streaming flow's settings from its flags; start the metrics server if asked."""
    settings = settings_with(**overrides)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port)
    return settings


def write_json(path: Path, document: object) -> None:
    """Write a result document as indented JSON (creating its folder)."""
    import orjson

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")


def settings_with(**overrides: object) -> Settings:
    """Build settings from the environment, with CLI flags (when given) taking precedence."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def catalog_or_exit(settings: Settings) -> Catalog:
    """Load the configured catalog, or exit with status 2 and the error that names the entry."""
    try:
        return load_catalog(settings.catalog_dir or DEFAULT_CATALOG)
    except CatalogError as error:
        console.print(f"[red]catalog error:[/red] {error}")
        raise typer.Exit(2) from None


def progress_bar() -> Progress:
    """Return a progress display on the console (stderr)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
