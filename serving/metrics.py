"""Prometheus metrics of the API, on a registry of each app's own (tests run several apps).

=============================================  ==============================================
metric                                         what
=============================================  ==============================================
``omnioffer_serve_request_seconds``            latency histogram per endpoint
``omnioffer_serve_responses_total``            responses per endpoint and status code
``omnioffer_serve_errors_total``               4xx/5xx answers and internal errors, by kind
``omnioffer_serve_decisions_total``            chosen actions by surface, offer and channel
``omnioffer_serve_reasons_total``              chosen actions by surface and top reason code
``omnioffer_serve_suppressed_total``           suppressions by surface and rule
``omnioffer_serve_fallbacks_total``            degraded answers by cause (store, model, …)
``omnioffer_serve_decision_log_total``         decision-log records written / dropped
``omnioffer_serve_decision_log_queue``         records waiting to be written
``omnioffer_serve_model_info``                 1 for the model version being served
``omnioffer_serve_store_breaker_open``         1 while this worker's store breaker is open
``omnioffer_serve_model_events_total``         model swaps and load failures
``omnioffer_serve_policy_reloads_total``       policy-file reloads by result
``omnioffer_serve_offer_budget_spent``         budget spent by redemptions, per offer
``omnioffer_serve_budget_refreshes_total``     budget spend reads by result (ok / failure)
=============================================  ==============================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Sub-millisecond buckets: the target is a p99 under 10 ms.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


class ServingMetrics:
    """Every metric of one app, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "omnioffer_serve_request_seconds",
            "Request latency by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.responses = Counter(
            "omnioffer_serve_responses", "Responses by endpoint and status.",
            ["endpoint", "status"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "omnioffer_serve_errors", "Errors by endpoint and kind.", ["endpoint", "kind"],
            registry=r,
        )  # fmt: skip
        self.decisions = Counter(
            "omnioffer_serve_decisions", "Chosen actions by surface, offer and channel.",
            ["surface", "offer", "channel"], registry=r,
        )  # fmt: skip
        self.reasons = Counter(
            "omnioffer_serve_reasons", "Chosen actions by surface and top reason code.",
            ["surface", "reason"], registry=r,
        )  # fmt: skip
        self.suppressed = Counter(
            "omnioffer_serve_suppressed", "Suppressions by surface and rule.",
            ["surface", "rule"], registry=r,
        )  # fmt: skip
        self.fallbacks = Counter(
            "omnioffer_serve_fallbacks", "Degraded answers and model fallbacks by cause.",
            ["cause"], registry=r,
        )  # fmt: skip
        self.decision_log = Counter(
            "omnioffer_serve_decision_log", "Decision-log records by outcome.", ["outcome"],
            registry=r,
        )  # fmt: skip
        self.decision_queue = Gauge(
            "omnioffer_serve_decision_log_queue", "Records waiting to be written.", registry=r
        )
        self.model_info = Gauge(
            "omnioffer_serve_model_info", "1 for the model version served.", ["version"],
            registry=r,
        )  # fmt: skip
        self.model_events = Counter(
            "omnioffer_serve_model_events", "Model swaps and load failures.", ["event"],
            registry=r,
        )  # fmt: skip
        self.budget_spent = Gauge(
            "omnioffer_serve_offer_budget_spent", "Offer budget spent by redemptions.",
            ["offer"], registry=r,
        )  # fmt: skip
        self.budget_refreshes = Counter(
            "omnioffer_serve_budget_refreshes", "Budget spend refreshes by result.",
            ["result"], registry=r,
        )  # fmt: skip
        self.store_breaker = Gauge(
            "omnioffer_serve_store_breaker_open",
            "1 while the store breaker is open: decisions skip the store and degrade.",
            registry=r,
        )  # fmt: skip
        self.policy_reloads = Counter(
            "omnioffer_serve_policy_reloads", "Policy reloads by result.", ["result"],
            registry=r,
        )  # fmt: skip

        # Labelled children by (metric, label values): labels() costs microseconds a call.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def budget_refreshed(self, result: str, live: Mapping[str, float]) -> None:
        """Count a budget refresh and publish the spend of each offer redeemed so far."""
        self.budget_refreshes.labels(result=result).inc()
        for offer_id, amount in live.items():
            self.budget_spent.labels(offer=offer_id).set(amount)

    def inc(self, counter: Counter, *labels: str) -> None:
        """Add one to ``counter`` for ``labels`` (positional, in the counter's label order)."""
        key = (id(counter), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc()

    def serving_model(self, version: str) -> None:
        """Mark ``version`` as the model served (and no other)."""
        self.model_info.clear()
        self.model_info.labels(version=version).set(1)

    def value(self, name: str, **labels: str) -> float:
        """Return one sample's value (0 when absent); for tests and the bench."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found
