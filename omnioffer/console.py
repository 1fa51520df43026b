"""What every subcommand shares: the console, settings from flags, catalog, progress bars."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from features.catalog import Catalog, CatalogError, load_catalog
from omnioffer.settings import Settings

console = Console(stderr=True)
DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "features" / "data" / "catalog"
Source = Literal["files", "kafka"]
StoreKind = Literal["sqlite", "redis"]


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
