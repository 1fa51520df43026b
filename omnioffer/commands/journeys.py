"""``omnioffer flow journeys`` and ``omnioffer journeys``: triggered journeys, run and report."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from omnioffer.commands.features import flow_app
from omnioffer.console import (
    BootstrapOption,
    EventsOption,
    MetricsOption,
    RecoveryOption,
    RedisClusterOption,
    RedisOption,
    SnapshotOption,
    SourceOption,
    StoreOption,
    TailOption,
    WorkersOption,
    console,
    flow_settings,
    settings_with,
    write_json,
)

journeys_app = typer.Typer(help="Triggered journeys: check, report.", no_args_is_help=True)


@flow_app.command("journeys")
def flow_journeys(
    source: SourceOption = None,
    store: StoreOption = None,
    events: EventsOption = None,
    journeys: Annotated[Path | None, typer.Option(help="Journey definitions file.")] = None,
    bootstrap: BootstrapOption = None,
    redis_url: RedisOption = None,
    redis_cluster: RedisClusterOption = None,
    workers: WorkersOption = 1,
    recovery_dir: RecoveryOption = None,
    snapshot_interval: SnapshotOption = None,
    lateness: Annotated[int | None, typer.Option(help="Allowed lateness, seconds.")] = None,
    tail: TailOption = None,
    metrics_port: MetricsOption = None,
) -> None:
    """Run the feature flow with journeys: profiles to the store, messages to messages.outbound."""
    from features.datafile import DataFileError
    from flows.journey_flow import run

    try:
        settings = flow_settings(
            source=source,
            store=store,
            kafka_bootstrap=bootstrap,
            redis_url=redis_url,
            redis_cluster=redis_cluster,
            recovery_dir=recovery_dir,
            snapshot_interval_s=snapshot_interval,
            tail=tail,
            metrics_port=metrics_port,
            journeys_path=journeys,
            journey_lateness_s=lateness,
        )
        setup = settings.journey_setup()
    except DataFileError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    overrides = {"event_log_dir": events} if events is not None else {}
    console.print(
        f"journey flow: {settings.source} -> {settings.store}, "
        f"{len(setup.book.journeys)} journeys, {workers} worker(s)"
    )
    run(
        settings.flow_config(**overrides),
        setup,
        workers=workers,
        recovery_dir=settings.recovery_dir,
        snapshot_interval_s=settings.snapshot_interval_s,
    )


@journeys_app.command("check")
def journeys_check(
    path: Annotated[Path | None, typer.Argument(help="Journeys file; default: shipped.")] = None,
) -> None:
    """Validate a journeys file against the schema and the catalog."""
    from features.datafile import DataFileError

    try:
        book = settings_with(journeys_path=path).journey_setup().book
    except DataFileError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    for journey in book.journeys:
        steps = ", ".join(f"{s.id}@{s.after_hours:g}h" for s in journey.steps)
        console.print(f"{journey.id}: entry {journey.entry.event}, steps {steps}, "
                      f"control {journey.control_share:.0%}")  # fmt: skip


@journeys_app.command("report")
def journeys_report(
    events: Annotated[Path | None, typer.Option(help="Folder with triggers.jsonl.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")] = None,
    source: SourceOption = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Per journey and step: conversion of treated vs control, entries, exits, messages.

    From the embedded `triggers.jsonl`, or with `--source kafka` from the `triggers` topic
    (read whole).
    """
    from features.eventlog import topic_path
    from features.journey_report import journey_report, report_table
    from features.journeys import Exited, Outbound, Suppressed, decode_record
    from features.kafka_log import KAFKA_ERRORS, scan_topic
    from features.topics import TRIGGERS

    settings = settings_with(source=source, kafka_bootstrap=bootstrap)
    if settings.source == "kafka" and events is None:
        where = f"the {TRIGGERS} topic at {settings.kafka_bootstrap}"
        try:
            records = [decode_record(r.value) for r in scan_topic(
                settings.kafka_bootstrap, TRIGGERS, settings.decision_log_timeout_s
            ) if r.value is not None]  # fmt: skip
        except KAFKA_ERRORS as error:
            console.print(f"[red]cannot read {where}:[/red] {error}")
            raise typer.Exit(2) from None
    else:
        path = topic_path(events or settings.event_log_dir, TRIGGERS)
        where = str(path)
        if not path.exists():
            console.print(f"no journey records in {path}: run `omnioffer flow journeys` first")
            raise typer.Exit(1)
        with path.open("rb") as handle:
            records = [decode_record(line) for line in handle if line.strip()]
    if not records:
        console.print(f"no journey records in {where}: run `omnioffer flow journeys` first")
        raise typer.Exit(1)
    reports = journey_report(records)
    table = Table("journey", "step", "treated", "control", "lift [95 %]",
                  title="conversion after each step: treated vs control")  # fmt: skip
    for row in report_table(reports):
        table.add_row(*row)
    sys.stdout.flush()
    Console().print(table)
    exits = Counter((r.journey, r.reason) for r in records if isinstance(r, Exited))
    sent = Counter((r.journey, r.channel) for r in records if isinstance(r, Outbound))
    rules = Counter((r.journey, r.rule) for r in records if isinstance(r, Suppressed))
    counts = Table("journey", "what", "count", title="exits, messages, suppressions")
    for (journey, reason), n in sorted(exits.items()):
        counts.add_row(journey, f"exit: {reason}", str(n))
    for (journey, channel), n in sorted(sent.items()):
        counts.add_row(journey, f"sent: {channel}", str(n))
    for (journey, rule), n in sorted(rules.items()):
        counts.add_row(journey, f"suppressed: {rule}", str(n))
    Console().print(counts)
    if json_path is not None:
        document = {
            r.journey: {
                "entries": r.entries.as_dict(),
                "steps": {step: rate.as_dict() for step, rate in r.steps.items()},
            }
            for r in reports
        }
        write_json(json_path, document)
    console.print(f"{len(records):,} journey records in {where}")
