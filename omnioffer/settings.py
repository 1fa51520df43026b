"""One settings object for every command: ``OMNIOFFER_*`` environment variables and CLI flags.

Defaults run locally with nothing installed: the embedded file event log and SQLite under
``./.omnioffer/``.

>>> Settings(data_dir="/tmp/x").event_log_dir
PosixPath('/tmp/x/events')
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.contacts import DEV_CONTACT_HASH_KEY
from features.store import OnlineStore, open_store

if TYPE_CHECKING:
    from features.arbitration import Exploration
    from features.attribution import AttributionWindows
    from flows.features_flow import FlowConfig
    from flows.journey_flow import JourneySetup

# Only for local runs: production deployments must set OMNIOFFER_CONTACT_HASH_KEY.
_DEV_HASH_KEY = DEV_CONTACT_HASH_KEY.decode()


class Settings(BaseSettings):
    """Runtime configuration; every field can be set as ``OMNIOFFER_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="OMNIOFFER_", extra="ignore")

    data_dir: Path = Field(Path(".omnioffer"), description="Where local outputs live.")
    catalog_dir: Path | None = Field(None, description="Catalog files; default: shipped set.")
    contact_hash_key: SecretStr = Field(SecretStr(_DEV_HASH_KEY), description="HMAC key.")
    source: Literal["files", "kafka"] = Field("files", description="Where events come from.")
    store: Literal["sqlite", "redis"] = Field("sqlite", description="The online store.")
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis online store.")
    redis_namespace: str = Field("omni", description="Prefix of every Redis key.")
    redis_cluster: bool = Field(False, description="redis_url names a Redis Cluster node.")
    max_event_bytes: int = Field(64 * 1024, gt=0, description="Larger events dead-letter.")
    seed: int = Field(7, description="Seed for simulation and training.")
    events_dir: Path | None = Field(None, description="File event log; default under data_dir.")
    sqlite_path: Path | None = Field(None, description="SQLite store; default under data_dir.")
    recovery_dir: Path | None = Field(None, description="Bytewax recovery; off if unset.")
    snapshot_interval_s: float = Field(10.0, gt=0, description="Bytewax epoch/snapshot interval.")
    backup_interval_s: float = Field(0.0, ge=0, description="Keep old snapshots this long.")
    tail: bool = Field(False, description="Keep reading Kafka at the end of the topics.")
    kafka_fetch_wait_ms: int = Field(10, ge=0, description="Longest a fetch may wait.")
    metrics_port: int | None = Field(None, description="Serve flow metrics on this port.")
    serve_host: str = Field("127.0.0.1", description="Serving API: listen address.")
    serve_port: int = Field(8000, description="Serving API: port.")
    admin_token: SecretStr | None = Field(
        None, description="Bearer token the support and admin endpoints require; open if unset."
    )

    @field_validator("admin_token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty variable is a secret that failed to mount, not a wish for open endpoints.
        if value is not None and not value.get_secret_value().strip():
            message = "admin_token is empty: set a token, or leave the variable unset"
            raise ValueError(message)
        return value
    policies_path: Path | None = Field(None, description="Contact policy file; default: shipped.")
    quiet_margin_min: int = Field(
        60, ge=0, le=180,
        description="Quiet hours widened this much per side when timing a send: the customer's "
        "UTC offset is the one of their last event, and a daylight-saving change may have come "
        "since.",
    )  # fmt: skip
    exploration: Literal["epsilon_greedy", "thompson"] = Field(
        "epsilon_greedy", description="How serving explores: epsilon-greedy or Thompson sampling."
    )
    explore_epsilon: float = Field(0.05, ge=0, le=1, description="Epsilon-greedy exploration.")
    thompson_strength: float = Field(
        100.0, gt=0, description="Thompson: how many observations a model estimate is worth."
    )
    thompson_draws: int = Field(
        100, ge=1, description="Thompson: draws that estimate the logged propensities."
    )
    decision_log: Literal["files", "kafka"] = Field("files", description="Where decisions go.")
    decision_erasure: Literal["inline", "queued"] = Field(
        "inline",
        description="Erasure of a person's decisions on Kafka: in the request (a pass over "
        "the topic) or queued for `omnioffer eraser`.",
    )
    decision_queue_size: int = Field(10_000, gt=0, description="Decision-log queue; full: drop.")
    decision_log_timeout_s: float = Field(
        30.0, gt=0,
        description="How long reading or writing the Kafka logs in bulk (an erasure pass, "
        "training from Kafka) waits on the broker at each step.",
    )
    eraser_grace_s: float = Field(
        330.0, ge=0,
        description="How old a queued erasure must be before `omnioffer eraser` does it: "
        "longer than a decision may take to reach the broker (300 s), so every decision "
        "asked before the erasure is on the topic.",
    )
    max_request_bytes: int = Field(64 * 1024, gt=0, description="Larger bodies get a 413.")
    store_breaker_failures: int = Field(
        5, ge=1,
        description="Serving: store failures in a row that open the breaker (decisions then "
        "degrade at once instead of each waiting for the store's timeout).",
    )
    store_breaker_reset_s: float = Field(
        1.0, gt=0,
        description="Serving: how long the store breaker stays open before one decision "
        "tries the store again.",
    )
    model_pointer: Path | None = Field(None, description="Promoted-model pointer to watch.")
    model_poll_s: float = Field(2.0, gt=0, description="How often to check the model pointer.")
    budget_refresh_s: float = Field(
        1.0, gt=0, description="How often serving reads offer budget spend (redemptions)."
    )
    registry_dir: Path | None = Field(None, description="Model registry; default under data_dir.")
    click_window_hours: float = Field(24.0, gt=0, description="Opens/clicks count this long.")
    conversion_window_days: float = Field(7.0, gt=0, description="Conversions count this long.")
    outcome_lateness_hours: float = Field(6.0, ge=0, description="How late outcomes may arrive.")
    outcome_idle_s: float = Field(
        300.0, ge=0, description="With --tail, a topic that delivers nothing this long stops "
        "holding the outcome join's watermark until it delivers again (0: always wait).",
    )  # fmt: skip
    refund_window_days: float = Field(
        0.0, ge=0, description="How long past the conversion window a refund still voids a "
        "redemption (examples wait that long).",
    )  # fmt: skip
    journeys_path: Path | None = Field(None, description="Journey definitions; default: shipped.")
    journey_shards: int = Field(16, gt=0, description="Journey state shards (timer owners).")
    journey_lateness_s: int = Field(3600, ge=0, description="How late a journey fact may come.")
    journey_epsilon: float = Field(0.0, ge=0, le=1, description="Exploration in journey sends.")
    scorer_backend: Literal["auto", "booster", "lleaves"] = Field(
        "auto", description="LightGBM Booster or the lleaves-compiled model for scoring."
    )
    reasons: Literal["path", "shap"] = Field(
        "path", description="Reason codes from path attributions (fast) or TreeSHAP."
    )

    @property
    def event_log_dir(self) -> Path:
        """The embedded event log (one JSONL file per topic)."""
        return self.events_dir or self.data_dir / "events"

    @property
    def examples_path(self) -> Path:
        """The outcome join's labelled examples (JSONL); serving's erasure reaches it too."""
        return self.data_dir / "examples.jsonl"

    @property
    def model_registry_dir(self) -> Path:
        """The model registry (versions and the ``promoted`` pointer).

        ``registry_dir``, else the folder of ``model_pointer`` (a pointer lives in its
        registry, as ``omnioffer models promote`` writes it), else ``<data_dir>/registry``.
        """
        if self.registry_dir is not None:
            return self.registry_dir
        if self.model_pointer is not None:
            return self.model_pointer.parent
        return self.data_dir / "registry"

    @property
    def promoted_pointer(self) -> Path:
        """The pointer file naming the promoted model, which serving watches."""
        return self.model_pointer or self.model_registry_dir / "promoted"

    @property
    def attribution_windows(self) -> AttributionWindows:
        """The outcome join's windows, in seconds."""
        from features.attribution import AttributionWindows

        return AttributionWindows(
            click=round(self.click_window_hours * 3600),
            conversion=round(self.conversion_window_days * 86400),
            lateness=round(self.outcome_lateness_hours * 3600),
            refund=round(self.refund_window_days * 86400),
        )

    @property
    def store_path(self) -> Path:
        """The SQLite online store file."""
        return self.sqlite_path or self.data_dir / "online.sqlite3"

    def store_opener(self, *, patient: bool = False) -> Callable[[], OnlineStore]:
        """Return a function that opens the configured online store.

        ``patient`` stores wait seconds for Redis (the flow can); others time out in
        milliseconds so serving degrades instead of waiting.
        """
        options: dict[str, Any] = {}
        if self.store == "redis":
            options.update(namespace=self.redis_namespace, cluster=self.redis_cluster)
            if patient:
                options.update(socket_timeout=5.0, connect_timeout=5.0)
        return functools.partial(
            open_store, self.store, sqlite_path=self.store_path, redis_url=self.redis_url, **options
        )

    def open_store(self) -> OnlineStore:
        """Open the configured online store."""
        return self.store_opener()()

    def exploration_policy(self, *, draws: int | None = None) -> Exploration:
        """Return the exploration serving runs (``draws`` overrides Thompson's draws)."""
        from features.arbitration import EpsilonGreedy, Thompson

        if self.exploration == "thompson":
            return Thompson(self.thompson_strength, self.thompson_draws if draws is None else draws)
        return EpsilonGreedy(self.explore_epsilon)

    def flow_config(self, **overrides: Any) -> FlowConfig:
        """Return the feature flow's configuration from these settings."""
        from flows.features_flow import FlowConfig

        values: dict[str, Any] = {
            "open_store": self.store_opener(patient=True),
            "hash_key": self.hash_key,
            "source": self.source,
            "event_log_dir": self.event_log_dir,
            "kafka_bootstrap": self.kafka_bootstrap,
            "tail": self.tail,
            "fetch_wait_ms": self.kafka_fetch_wait_ms,
            "max_event_bytes": self.max_event_bytes,
        }
        values.update(overrides)
        return FlowConfig(**values)

    def journey_setup(self, **overrides: Any) -> JourneySetup:
        """Return the journey flow's definitions and dependencies from these settings."""
        from features.catalog import DEFAULT_CATALOG_DIR, load_catalog
        from features.journeys import DEFAULT_JOURNEYS_PATH, load_journeys
        from features.policy import DEFAULT_POLICIES_PATH
        from flows.journey_flow import JourneySetup

        catalog = load_catalog(self.catalog_dir or DEFAULT_CATALOG_DIR)
        book = load_journeys(
            self.journeys_path or DEFAULT_JOURNEYS_PATH, catalog.offers, catalog.categories
        )
        values: dict[str, Any] = {
            "book": book,
            "catalog": catalog,
            "policies_path": self.policies_path or DEFAULT_POLICIES_PATH,
            "promoted_pointer": self.promoted_pointer,
            "shards": self.journey_shards,
            "lateness_s": self.journey_lateness_s,
            "epsilon": self.journey_epsilon,
            "quiet_margin_min": self.quiet_margin_min,
        }
        values.update(overrides)
        return JourneySetup(**values)

    @property
    def hash_key(self) -> bytes:
        """The contact-hashing key as bytes."""
        return self.contact_hash_key.get_secret_value().encode()
