"""``omnioffer flow`` and ``omnioffer features``: the streaming flow, rebuilds, profiles."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer

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
)

flow_app = typer.Typer(help="Streaming dataflows (Bytewax).", no_args_is_help=True)
features_app = typer.Typer(help="Profiles and features: rebuild, inspect.", no_args_is_help=True)



@flow_app.command("features")
def flow_features(
    source: SourceOption = None,
    store: StoreOption = None,
    events: EventsOption = None,
    bootstrap: BootstrapOption = None,
    redis_url: RedisOption = None,
    redis_cluster: RedisClusterOption = None,
    workers: WorkersOption = 1,
    recovery_dir: RecoveryOption = None,
    snapshot_interval: SnapshotOption = None,
    tail: TailOption = None,
    metrics_port: MetricsOption = None,
) -> None:
    """Run the streaming feature flow: validate, resolve identities, roll features, store."""
    from flows.features_flow import run

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
    )
    overrides = {"event_log_dir": events} if events is not None else {}
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


@flow_app.command("outcomes")
def flow_outcomes(
    source: SourceOption = None,
    events: EventsOption = None,
    bootstrap: BootstrapOption = None,
    tail: TailOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Labelled examples (JSONL); default: data dir.")
    ] = None,
    idle_s: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="With --tail, a topic silent this long stops holding the join back "
            "(0: always wait); default 300.",
        ),
    ] = None,
) -> None:
    """Run the outcome join: decisions + engagement and purchases -> labelled examples."""
    from flows.outcome_join import config_from, run

    settings = settings_with(
        source=source, events_dir=events, kafka_bootstrap=bootstrap, tail=tail,
        outcome_idle_s=idle_s,
    )  # fmt: skip
    target = out or settings.examples_path
    console.print(f"outcome join: {settings.source} -> {target}")
    run(config_from(settings), target)
    lines = target.read_bytes().count(b"\n") if target.exists() else 0
    console.print(f"{lines:,} labelled examples in {target}")


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

    settings = settings_with()
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

    settings = settings_with()
    with settings.open_store() as store:
        profile_id = store.resolve([identifier]) or identifier
        raw = store.read_profile(profile_id)
    if raw is None:
        console.print(f"[red]no profile for {identifier!r}[/red]")
        raise typer.Exit(1)
    features = profile_features(decode_profile(raw), int(time.time()))
    document = orjson.dumps({"profile_id": profile_id, **features}, option=orjson.OPT_INDENT_2)
    sys.stdout.write(document.decode() + "\n")
