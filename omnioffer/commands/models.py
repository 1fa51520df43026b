"""``omnioffer train``, ``evaluate`` and ``models``: training, evaluation, the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table

from omnioffer.console import (
    BootstrapOption,
    SourceOption,
    catalog_or_exit,
    console,
    progress_bar,
    settings_with,
    write_json,
)

# --- models: train, evaluate, registry (issue 5) ------------------------------------------------
models_app = typer.Typer(help="Model registry: list, promote, roll back.", no_args_is_help=True)


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


def train(
    events: Annotated[Path | None, typer.Option(help="File event log folder.")] = None,
    seed: Annotated[int | None, typer.Option(help="Training seed (default: settings).")] = None,
    promote: Annotated[bool, typer.Option(help="Promote the new version.")] = False,
    source: SourceOption = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Build point-in-time training sets, train and calibrate both models, register them.

    From the file event log, or with `--source kafka` from the event topics and the
    `decisions` topic (read whole; erased decisions left out).
    """
    from models.bundle import TrainingDataError
    from models.train import TrainConfig
    from models.workflow import train as train_models

    settings = settings_with(seed=seed, source=source, kafka_bootstrap=bootstrap)
    # An explicit folder wins over OMNIOFFER_SOURCE=kafka in the environment.
    kafka = settings.kafka_bootstrap if settings.source == "kafka" and events is None else None
    folder = None if kafka else events or settings.event_log_dir
    if folder is not None and not (folder / "decisions.jsonl").exists():
        console.print(f"[red]no decisions.jsonl in {folder}[/red]: run `omnioffer simulate` first")
        raise typer.Exit(2)
    with progress_bar() as progress:
        try:
            version, _bundle, ts, report = train_models(
                settings, folder, config=TrainConfig(seed=settings.seed), promote=promote,
                progress=_stage_progress(progress), bootstrap=kafka,
            )
        except TrainingDataError as error:  # nothing to train on, or no broker
            console.print(f"[red]cannot train:[/red] {error}")
            raise typer.Exit(2) from None
    console.print(_metrics_table(f"{version}: held-out time slice", report))
    state = "promoted" if promote else "registered (promote with `omnioffer models promote`)"
    console.print(f"{version} {state}: {len(ts):,} labelled decisions, "
                  f"registry {settings.model_registry_dir}")


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
    promote: Annotated[
        bool | None,
        typer.Option(help="Promote the evaluated version (default: yes if trained here)."),
    ] = None,
    model_version: Annotated[
        str | None,
        typer.Option(help="Evaluate this registered version instead of training one; "
                          "--events defaults to the events it was trained on."),
    ] = None,
) -> None:
    """Train (or take a registered version), then evaluate: held-out metrics, OPE, closed loop."""
    from models.registry import Registry, RegistryError
    from models.workflow import EvaluationConfig, run_evaluation, simulate_world

    settings = settings_with()
    folder = events
    if model_version is not None and folder is None:
        try:
            trained_on = Registry(settings.model_registry_dir).metadata(model_version)
        except RegistryError as error:
            console.print(f"[red]{error}[/red]")
            raise typer.Exit(2) from None
        if "events_dir" not in trained_on:
            console.print(f"[red]{model_version} does not say what it was trained on: "
                          "pass --events[/red]")  # fmt: skip
            raise typer.Exit(2)
        folder = Path(trained_on["events_dir"])
    with progress_bar() as progress:
        update = _stage_progress(progress)
        if folder is None:
            folder = settings.data_dir / "evaluate" / f"world-{customers}x{days}-s{settings.seed}"
            if not (folder / "ground_truth.jsonl").exists():
                simulate_world(folder, customers, days, settings.seed, settings,
                               catalog_or_exit(settings), update)
        try:
            document = run_evaluation(
                settings, folder, promote=model_version is None if promote is None else promote,
                progress=update, version=model_version,
                evaluation=EvaluationConfig(eval_customers=eval_customers, eval_days=eval_days,
                                            warmup_days=warmup_days, n_bootstrap=bootstrap,
                                            measure=measure),
            )  # fmt: skip
        except RegistryError as error:
            console.print(f"[red]{error}[/red]")
            raise typer.Exit(2) from None
    if model_version is not None:
        state = "promoted" if promote else "not promoted (--promote to promote it)"
        console.print(f"evaluated registered {model_version} ({state}); nothing was trained")
    console.print(_metrics_table("held-out time slice", document["heldout"]))
    table = Table("policy", "reward / decision (sampled)", "expected", title="closed loop")
    for name, value in document["closed_loop"].items():
        table.add_row(name, f"{value:.4f}", f"{document['closed_loop_expected'][name]:.4f}")
    console.print(table)
    served = document["served_policy"]
    ope = Table("estimator", "model's argmax", "95 % interval",
                f"served (× value × lever, {served['policy']})", "95 % interval",
                title="off-policy estimates of conversion per decision")  # fmt: skip
    for name, e in document["ope"].items():
        s = document["ope_served"][name]
        ope.add_row(name, f"{e['value']:.4f}", f"[{e['ci_low']:.4f}, {e['ci_high']:.4f}]",
                    f"{s['value']:.4f}", f"[{s['ci_low']:.4f}, {s['ci_high']:.4f}]")  # fmt: skip
    ope.add_row("closed loop (truth)", f"{document['ope_true_value']:.4f}", "",
                f"{document['ope_served_true_value']:.4f}", "")  # fmt: skip
    console.print(ope)
    console.print(document["targets"])
    write_json(json_path, document)
    console.print(f"wrote {json_path}; plots in {document['run_dir']}")


@models_app.command("list")
def models_list() -> None:
    """List registered model versions; the promoted one is marked."""
    from models.registry import Registry

    registry = Registry(settings_with().model_registry_dir)
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

    registry = Registry(settings_with().model_registry_dir)
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

    registry = Registry(settings_with().model_registry_dir)
    try:
        version = registry.rollback()
    except RegistryError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    console.print(f"rolled back to {version}")
