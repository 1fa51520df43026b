"""``omnioffer serve`` and ``decisions``: the decision API and its decision log."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from features.catalog import CatalogError
from omnioffer.console import (
    RedisClusterOption,
    RedisOption,
    Source,
    StoreKind,
    console,
    settings_with,
)
from omnioffer.settings import Settings

if TYPE_CHECKING:
    from features.decisions import Decision


def _demo_is_the_embedded_store(settings: Settings, base: Path) -> bool:
    """Whether plain ``serve`` should use what ``omnioffer demo`` built.

    True when nothing names a store (SQLite, no path or event log set) and the default
    store file does not exist while the demo's does.
    """
    named = {"sqlite_path", "events_dir"} & settings.model_fields_set
    return (
        settings.store == "sqlite"
        and not named
        and not settings.store_path.exists()
        and (base / "online.sqlite3").exists()
    )


def _loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    store: Annotated[StoreKind | None, typer.Option(help="Online store.")] = None,
    redis_url: RedisOption = None,
    redis_cluster: RedisClusterOption = None,
    policies: Annotated[Path | None, typer.Option(help="Policies file (levers, caps).")] = None,
    exploration: Annotated[
        Literal["epsilon_greedy", "thompson"] | None,
        typer.Option(help="Exploration: epsilon-greedy (exact propensities) or Thompson."),
    ] = None,
    epsilon: Annotated[float | None, typer.Option(help="Epsilon-greedy exploration rate.")] = None,
    thompson_strength: Annotated[
        float | None, typer.Option(help="Thompson: observations a model estimate is worth.")
    ] = None,
    decision_log: Annotated[Source | None, typer.Option(help="Files or Kafka.")] = None,
    model_pointer: Annotated[Path | None, typer.Option(help="Promoted-model pointer.")] = None,
    reasons: Annotated[
        Literal["path", "shap"] | None,
        typer.Option(help="Reason codes: path attributions (fast) or TreeSHAP."),
    ] = None,
    demo: Annotated[bool, typer.Option(help="Serve what `omnioffer demo` built.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the decision API (offers, channel choice, profiles, erasure, /metrics, /docs)."""
    import uvicorn

    from features.policy import PolicyError
    from serving.app import create_app

    base = settings_with().data_dir / "demo"
    if not demo and _demo_is_the_embedded_store(settings_with(store=store), base):
        console.print(f"no online store at the default path: serving the demo's ({base})")
        demo = True
    settings = settings_with(
        serve_host=host,
        serve_port=port,
        store=store,
        redis_url=redis_url,
        redis_cluster=redis_cluster,
        policies_path=policies,
        exploration=exploration,
        explore_epsilon=epsilon,
        thompson_strength=thompson_strength,
        decision_log=decision_log,
        model_pointer=model_pointer,
        reasons=reasons,
        **({"events_dir": base / "events", "sqlite_path": base / "online.sqlite3"} if demo else {}),
    )
    try:
        api = create_app(settings)
    except (PolicyError, CatalogError) as error:
        console.print(f"[red]cannot start:[/red] {error}")
        raise typer.Exit(2) from None
    where = settings.redis_url if settings.store == "redis" else settings.store_path
    if settings.admin_token is None and not _loopback(settings.serve_host):
        console.print(
            f"[yellow]warning:[/yellow] listening on {settings.serve_host} with no admin token: "
            "anyone who reaches the port can read profiles and erase people "
            "(set OMNIOFFER_ADMIN_TOKEN)"
        )
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


def _moment(value: str | None, option: str) -> datetime | None:
    """Parse an ISO 8601 date or time for a CLI option; without a zone it is UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        message = ("expected an ISO 8601 date or time (2026-03-02, 2026-03-02T18:00+01:00); "
                   f"got {value!r}")  # fmt: skip
        raise typer.BadParameter(message, param_hint=option) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def decisions(
    suppressed: Annotated[bool, typer.Option(help="Who was capped/suppressed, and why.")] = False,
    events: Annotated[Path | None, typer.Option(help="Embedded event log folder.")] = None,
    bootstrap: Annotated[
        str | None,
        typer.Option(help="Read the Kafka decisions topic here (erased ones skipped); the "
                     "default when OMNIOFFER_DECISION_LOG=kafka."),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Decisions from this time on (ISO 8601; UTC if no zone).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Decisions before this time (ISO 8601; UTC if no zone).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to show (the newest).")] = 30,
) -> None:
    """Read the decision log: counts, or (--suppressed) who was capped and why."""
    from features.kafka_log import read_kafka_decisions
    from serving.decision_log import read_decisions
    from serving.report import suppressions

    start, end = _moment(since, "--since"), _moment(until, "--until")
    settings = settings_with()
    if bootstrap is None and events is None and settings.decision_log == "kafka":
        bootstrap = settings.kafka_bootstrap  # where serving writes them
    window = ""
    if start is not None or end is not None:
        window = f" between {start or 'the start'} and {end or 'now'}"
    if bootstrap is not None:
        source = f"the decisions topic on {bootstrap}"

        def in_window(d: Decision) -> bool:
            return (start is None or d.decided_at >= start) and (end is None or d.decided_at < end)

        # Erasures come as later tombstones, so the topic's live decisions in the window
        # are held until it is read to the end; the embedded log is read as a stream.
        logged: Iterable[Decision] = read_kafka_decisions(bootstrap, select=in_window)
    else:
        events_dir = events or settings.event_log_dir
        source = f"{events_dir}/decisions.jsonl"
        logged = read_decisions(events_dir)
    report = suppressions(logged, since=start, until=end, keep=limit)
    if not report.decisions:
        console.print(f"no decisions in {source}{window}")
        raise typer.Exit(1)
    if suppressed:
        table = Table("decided at", "surface", "who", "about", "suppressed by", title="suppressed")
        for row in report.rows:
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
        top = Table("surface", "first choice", "decisions", title="most chosen")
        chosen = Counter(report.first_choices or {})
        for (surface, what), n in chosen.most_common(limit):
            top.add_row(surface, what, str(n))
        Console().print(top)
    console.print(
        f"{report.decisions:,} decisions, {report.suppressed:,} suppressed, in {source}{window}"
    )


def eraser(
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers.")] = None,
    every: Annotated[float, typer.Option(min=1.0, help="Seconds between passes.")] = 60.0,
    once: Annotated[bool, typer.Option(help="Make one pass, then exit.")] = False,
    index: Annotated[
        Path | None,
        typer.Option(
            help="The eraser's index of the decisions topic (SQLite; default "
            "<data_dir>/eraser/decision-owners.sqlite)."
        ),
    ] = None,
    grace: Annotated[
        float | None,
        typer.Option(min=0.0, help="Seconds a job waits before it is done (default: "
                     "OMNIOFFER_ERASER_GRACE_S, 330)."),
    ] = None,
) -> None:
    """Erase the decisions of the people queued by `DELETE /v1/customers` (Kafka log).

    For `OMNIOFFER_DECISION_ERASURE=queued`: each pass reads the jobs waiting on
    `decisions.erasures`, reads the `decisions` records added since the last pass into
    its index of who owns which record, tombstones the jobs' people's records, then
    commits. A job waits `--grace` seconds first, so every decision asked before it is on
    the topic. Run one.
    """
    import signal
    import threading

    from serving.eraser import PASS_ERRORS, DecisionEraser, Erased

    settings = settings_with(kafka_bootstrap=bootstrap)
    worker = DecisionEraser(
        settings.kafka_bootstrap, timeout=settings.decision_log_timeout_s,
        index_path=index or settings.data_dir / "eraser" / "decision-owners.sqlite",
        grace_s=settings.eraser_grace_s if grace is None else grace,
    )  # fmt: skip

    def report(done: list[Erased], seconds: float) -> None:
        read = worker.last_catch_up
        if read.records or read.expired:
            console.print(f"index: {read.records:,} new records read ({read.decisions:,} "
                          f"decisions), {read.expired:,} entries expired")  # fmt: skip
        for item in done:
            console.print(f"{item.job.erasure_id}: {item.decisions:,} decisions erased "
                          f"(asked {item.job.requested_at:%Y-%m-%d %H:%M:%S} UTC)")  # fmt: skip
        if done:
            total = sum(item.decisions for item in done)
            console.print(f"pass: {len(done)} erasures, {total:,} decisions, {seconds:.1f} s")

    if once:
        import time

        started = time.monotonic()
        try:
            report(worker.run_once(), time.monotonic() - started)
        except PASS_ERRORS as error:
            console.print(f"[red]pass failed, the erasures stay queued:[/red] {error}")
            raise typer.Exit(1) from None
        return
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    console.print(f"erasing queued decisions on {settings.kafka_bootstrap} every {every:g} s")
    worker.run(every_s=every, stop=stopped.is_set, on_pass=report)
