"""``omnioffer demo``: the whole pipeline on embedded defaults, step by step."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from features.profile import PERSONAS
from omnioffer.commands.world import print_simulation, run_simulation
from omnioffer.console import (
    console,
    progress_bar,
    settings_with,
)
from omnioffer.settings import Settings


def demo(
    customers: Annotated[int, typer.Option(min=1, help="How many customers.")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="How many days.")] = 14,
) -> None:
    """Run the pipeline end to end on embedded defaults (files + SQLite; no Kafka or Redis)."""
    import shutil

    base = settings_with().data_dir / "demo"
    shutil.rmtree(base, ignore_errors=True)
    settings = settings_with(events_dir=base / "events", sqlite_path=base / "online.sqlite3")
    out = settings.event_log_dir
    console.rule("[bold]1. simulate a world")
    stats = run_simulation(settings, customers, days, out, "files", 0)
    print_simulation(stats, out, "files")

    console.rule(
        "[bold]2. streaming flow: file event log -> Bytewax -> SQLite + journey messages"
    )
    _demo_flow(settings)

    console.rule("[bold]3. a few live profiles")
    _demo_profiles(settings)

    console.rule("[bold]4. train, evaluate (offline, off-policy, closed loop) and promote")
    run_dir = _demo_models(settings)

    console.rule("[bold]5. decisions from the serving API (promoted model)")
    _demo_decisions(settings)

    console.rule("[bold]6. triggered journeys: what the flow sent, and a closed loop")
    _demo_journeys(settings, min(customers, 1000), min(days, 14))
    console.print(
        f"outputs: {out} (event log, one JSONL per topic; deadletter.jsonl; ground_truth.jsonl; "
        f"decisions.jsonl; messages.outbound.jsonl and triggers.jsonl from the journeys), "
        f"{settings.store_path} (online store), {run_dir} (model run). "
        "Serve it: omnioffer serve --demo"
    )


def _demo_flow(settings: Settings) -> None:
    import time

    from flows import metrics
    from flows.journey_flow import run

    started = time.perf_counter()
    run(settings.flow_config(), settings.journey_setup(), workers=1)
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


def _demo_journeys(settings: Settings, customers: int, days: int) -> None:
    from collections import Counter

    from bench.journeys import result_table, run_journey_bench
    from features.eventlog import topic_path
    from features.journeys import Exited, Outbound, Suppressed, decode_record
    from features.topics import TRIGGERS

    path = topic_path(settings.event_log_dir, TRIGGERS)
    records = [decode_record(line) for line in path.read_bytes().splitlines() if line.strip()]
    sent = Counter((r.journey, r.channel) for r in records if isinstance(r, Outbound))
    held = Counter((r.journey, r.rule) for r in records if isinstance(r, Suppressed))
    exits = Counter((r.journey, r.reason) for r in records if isinstance(r, Exited))
    table = Table("journey", "messages by channel", "suppressed by rule", "exits by reason")
    for journey in sorted({key[0] for key in (*sent, *held, *exits)}):
        def cell(counts: Counter[tuple[str, str]], journey: str = journey) -> str:
            return ", ".join(f"{k[1]} {n}" for k, n in sorted(counts.items()) if k[0] == journey)

        table.add_row(journey, cell(sent), cell(held), cell(exits))
    console.print(table)
    console.print(
        "replayed log: customers cannot react to these messages, so the treated-vs-control "
        "report of this run (omnioffer journeys report) shows no lift; the closed loop does:"
    )
    with progress_bar() as bar:
        task = bar.add_task("closed loop, days", total=days)
        result = run_journey_bench(
            customers=customers, days=days, seed=settings.seed, control_share=0.5,
            progress=lambda done, _total: bar.update(task, completed=done),
        )  # fmt: skip
    console.print(result_table(result.document))


def _demo_models(settings: Settings) -> Path:
    from models.workflow import train_and_evaluate

    with progress_bar() as progress:
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
