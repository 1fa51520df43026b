"""Journeys benchmark: the simulator in a closed loop with the journeys, treated vs control.

One run, hour by hour over ``days`` simulated days:

1. the seeded simulator (:class:`simulator.stepping.SteppedRun`) lives every customer's
   hour and returns the events;
2. the feature pipeline's own logic (:class:`features.pipeline.Replay`, what the flow runs
   per key) resolves identities and keeps profiles, and hands each journey fact with the
   profile's features to the journeys' state machine (:mod:`features.journey_state`, what
   the journey flow's shards run), which advances to the end of the hour;
3. the journey flow's own send step (:class:`flows.journey_flow.OutboundSender`) checks
   each message against the contact log in an online store (SQLite here), writes the
   contact and passes the message on; the journeys read that log back as the flow does;
4. every message sent is delivered to its customer, who reacts in later hours (opens,
   comes back to the cart, buys, or unsubscribes: :mod:`simulator.journey_response`).

The control group (``control_share`` of entries, stable per customer and journey) runs the
same timers and receives nothing, so ``cart_recovery`` compares carts still abandoned at
the first reminder's due time, treated vs control (:mod:`features.journey_report`).
``violations`` are counted over the outbound log by :mod:`features.contact_audit`, an
implementation independent of the rules that decided, against the simulator's **ground
truth**: each customer's real consent at the send time and real UTC offset (daylight
saving included).
"""

from __future__ import annotations

import platform
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import msgspec
from rich.table import Table

from features.catalog import Catalog, load_catalog
from features.contact_audit import Sent, audit
from features.journey_report import journey_report
from features.journey_state import JourneyContext, JourneyState, advance, observe, tick
from features.journeys import JourneyBook, JourneyRecord, Outbound, load_journeys
from features.pipeline import Replay
from features.policy import load_policies
from features.scoring import HeuristicScorer
from features.store import open_store
from flows.journey_flow import OutboundSender
from simulator.stepping import Delivery, SteppedRun
from simulator.world import SimulationConfig

HOUR = 3600
CUSTOMER = "customer_id:"


@dataclass
class JourneyBenchResult:
    """What one closed-loop run measured."""

    document: dict[str, object]
    records: list[JourneyRecord]


def with_control_share(book: JourneyBook, share: float) -> JourneyBook:
    """Return the book with every journey's control share set to ``share``."""
    journeys = [msgspec.structs.replace(j, control_share=share) for j in book.journeys]
    return msgspec.structs.replace(book, journeys=journeys)


def run_journey_bench(
    *,
    customers: int = 5000,
    days: int = 30,
    seed: int = 7,
    control_share: float = 0.5,
    catalog: Catalog | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> JourneyBenchResult:
    """Run the closed loop and measure it (see the module docstring)."""
    started = time.perf_counter()
    catalog = catalog or load_catalog()
    policies = load_policies()
    shipped = load_journeys(offer_ids=catalog.offers, categories=catalog.categories)
    book = with_control_share(shipped, control_share)
    scorer = HeuristicScorer()
    folder = tempfile.TemporaryDirectory(prefix="omnioffer-bench-journeys-")
    store = open_store("sqlite", sqlite_path=f"{folder.name}/contacts.sqlite3")
    ctx = JourneyContext(
        book=book, channels=catalog.channels, policies=lambda: policies, scorer=lambda: scorer,
        history=store.contacts_of,
    )  # fmt: skip
    outbound: list[int] = []  # messages written to messages.outbound, per batch
    sender = OutboundSender(lambda: store, lambda: lambda lines: outbound.append(len(lines)),
                            lambda: policies)  # fmt: skip
    run = SteppedRun(SimulationConfig(customers=customers, days=days, seed=seed), catalog)
    replay = Replay(journeys=True)
    state = JourneyState()
    records: list[JourneyRecord] = []
    events = delivered = 0
    hours = (run.end_ts - run.start_ts) // HOUR
    for hour in range(1, hours + 1):
        boundary = run.start_ts + hour * HOUR
        for event in run.advance(boundary):
            replay.feed(event)
            tick(state, int(event.event_time.timestamp()))
            events += 1
        for profile_id, (fact, features) in replay.take_journey_inputs():
            observe(state, profile_id, fact, features)
        for record in sender(advance(state, ctx, boundary)):
            records.append(record)
            if isinstance(record, Outbound) and record.profile_id.startswith(CUSTOMER):
                run.deliver(_delivery(record))
                delivered += 1
        if progress is not None and hour % 24 == 0:
            progress(hour // 24, days)
    loop_s = time.perf_counter() - started
    document = _measure(run, records, policies, catalog, customers, days, control_share)
    document.update(
        {
            "seed": seed,
            "events": events,
            "messages_delivered": delivered,
            "elapsed_s": round(loop_s, 1),
            "python": platform.python_version(),
        }
    )
    document["messages_written"] = sum(outbound)
    run.close()
    store.close()
    folder.cleanup()
    return JourneyBenchResult(document, records)


def _delivery(message: Outbound) -> Delivery:
    return Delivery(
        customer_id=message.profile_id.removeprefix(CUSTOMER),
        channel=message.channel,
        send_at=message.send_at,
        message_id=message.decision_id,
        campaign=message.campaign,
        content=message.content,
        kind=message.kind,
        offer_id=message.offer_id,
        discount_pct=message.discount_pct,
        cart_id=message.cart_id,
    )


def _measure(
    run: SteppedRun,
    records: list[JourneyRecord],
    policies: object,
    catalog: Catalog,
    customers: int,
    days: int,
    control_share: float,
) -> dict[str, object]:
    sent = [r for r in records if isinstance(r, Outbound)]
    reports = {r.journey: r for r in journey_report(records)}
    cart = reports.get("cart_abandonment")
    recovery = cart.steps.get("reminder") if cart else None

    def true_consent(profile_id: str, channel: str, at: datetime) -> bool | None:
        st = run.state(profile_id.removeprefix(CUSTOMER))
        if at.timestamp() < st.consent_until[channel]:
            return True
        if channel == "push" and not st.customer.app_user:
            return None  # never asked: no app, no permission prompt, nothing on record
        return False

    def true_offset(profile_id: str, at: datetime) -> int:
        st = run.state(profile_id.removeprefix(CUSTOMER))
        return run.sim.clock.offset_seconds(st.zone, int(at.timestamp())) // 60

    quiet = {name for name, spec in catalog.channels.items() if spec.quiet_hours_apply}
    checked = audit(
        [_sent(m) for m in sent],
        policies,  # type: ignore[arg-type]
        consent=true_consent,
        tz_offset_min=true_offset,
        quiet_channels=quiet,
        opt_in_channels={n for n, spec in catalog.channels.items() if spec.opt_in_required},
    )
    weeks = days / 7
    treated_customers = len({m.profile_id for m in sent})
    return {
        "benchmark": "journeys",
        "customers": customers,
        "days": days,
        "control_share": control_share,
        "cart_recovery": _recovery(recovery),
        "journeys": {
            name: {
                "entries": report.entries.as_dict(),
                "steps": {step: rate.as_dict() for step, rate in report.steps.items()},
            }
            for name, report in reports.items()
        },
        "messages": len(sent),
        "messages_by_channel": dict(Counter(m.channel for m in sent)),
        "messages_per_customer_per_week": round(len(sent) / customers / weeks, 4),
        "messages_per_messaged_customer_per_week": round(
            len(sent) / max(1, treated_customers) / weeks, 4
        ),
        "suppressed_by_rule": dict(
            Counter(r.rule for r in records if type(r).__name__ == "Suppressed")  # type: ignore[attr-defined]
        ),
        "violations": checked.counts,
        "violation_examples": {k: v[:3] for k, v in checked.examples.items() if v},
    }


def _sent(message: Outbound) -> Sent:
    return Sent(
        message.profile_id, message.channel, message.send_at, message.kind, message.campaign,
        message.offer_id, message.urgency, message.decision_id,
    )  # fmt: skip


def _recovery(rate: object) -> dict[str, object]:
    if rate is None:
        return {"treated": None, "control": None, "lift": None, "lift_95": None}
    document = rate.as_dict()  # type: ignore[attr-defined]
    return {
        "treated": document["treated"]["rate"],
        "control": document["control"]["rate"],
        "lift": document["lift"],
        "lift_95": document["lift_95"],
        "carts_treated": document["treated"]["n"],
        "carts_control": document["control"]["n"],
        "measured_at": "carts still abandoned when the first reminder fell due (20 h)",
    }


def result_table(document: dict[str, object]) -> Table:
    """Return the benchmark's headline figures as a table."""
    table = Table("measure", "value", "target", title="journeys, closed loop")
    recovery = document["cart_recovery"]
    assert isinstance(recovery, dict)
    if recovery["lift"] is not None:
        low, high = recovery["lift_95"]
        table.add_row(
            "cart recovery: treated / control",
            f"{recovery['treated']:.3f} / {recovery['control']:.3f} "
            f"({recovery['carts_treated']:,} / {recovery['carts_control']:,} carts)",
            "",
        )
        table.add_row("cart recovery lift [95 %]", f"{recovery['lift']:+.3f} [{low:+.3f}, "
                      f"{high:+.3f}]", "> 0, interval above 0")  # fmt: skip
    table.add_row(
        "messages per customer per week", f"{document['messages_per_customer_per_week']}", ""
    )
    violations = document["violations"]
    assert isinstance(violations, dict)
    for kind, count in violations.items():
        table.add_row(f"violations: {kind}", str(count), "0")
    table.add_row("simulated events", f"{document['events']:,}", "")
    table.add_row("elapsed", f"{document['elapsed_s']} s", "")
    return table
