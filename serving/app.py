"""The HTTP API (FastAPI): page-load offers, channel choice, profiles, erasure, health, metrics.

:func:`create_app` builds an app from :class:`~omnioffer.settings.Settings`; tests and
benchmarks pass their own store, scorer, clock or decision log. Bodies are msgspec structs
(:mod:`serving.schemas`), decoded strictly: a bad request gets a 422 whose ``error`` names
the field, a body over ``max_request_bytes`` a 413. Decisions never answer 5xx: a store
outage or an internal error degrades the answer (``degraded: true``). Endpoints and bodies
are in ``docs/api.md`` and at ``/docs``.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from features.catalog import DEFAULT_CATALOG_DIR, Catalog
from features.eventlog import topic_path
from features.kafka_log import KAFKA_ERRORS
from features.policy import DEFAULT_POLICIES_PATH
from features.scoring import HeuristicScorer, Scorer
from features.store import OnlineStore
from features.topics import MESSAGES_OUTBOUND, TRIGGERS
from omnioffer.settings import Settings
from serving.budgets import BudgetSpend
from serving.decision_log import DecisionLog, FileSink, KafkaSink, Sink
from serving.engine import Engine, UnavailableError, parse_identifier, store_breaker, utc_now
from serving.eraser import erasure_status
from serving.fence import ErasureFence
from serving.metrics import ServingMetrics
from serving.policy_source import PolicySource
from serving.registry import Loader, ModelWatcher, ScorerHolder, default_loader
from serving.schemas import (
    ChannelRequest,
    ChannelResponse,
    ErrorOut,
    ModelChoice,
    OffersRequest,
    OffersResponse,
    RequestError,
    UnlinkRequest,
    decode_request,
    error_body,
)

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()
JSON = "application/json"
ENDPOINTS = (
    "/v1/offers", "/v1/channel", "/v1/profiles/{id}", "/v1/customers/{id}",
    "/v1/erasures/{id}", "/v1/identity/unlinks", "/healthz", "/readyz", "/metrics",
    "/admin/reload",
)  # fmt: skip


class BodyTooLargeError(Exception):
    """The request body is over the configured limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"(body): request body is {size:,} bytes or more; the limit is {limit:,} bytes "
            "(setting max_request_bytes)"
        )


def _json(value: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(value), status_code=status, media_type=JSON)


def _error(status: int, message: str, field: str | None, kind: str = "value_error") -> Response:
    return _json(error_body(field, message, kind), status)


_bearer = HTTPBearer(
    auto_error=False,
    description="The support and admin endpoints need `Authorization: Bearer <token>` when "
    "the setting `admin_token` (`OMNIOFFER_ADMIN_TOKEN`) is set.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def staff_denied(token: bytes | None, credentials: HTTPAuthorizationCredentials | None,
                 ) -> Response | None:  # fmt: skip
    """Return the 401 for a support or admin request without the token, else ``None``.

    With no token configured the endpoints are open (a local default; ``omnioffer serve``
    warns when it listens beyond loopback that way).
    """
    if token is None:
        return None
    if credentials is None:
        message = ("authorization: this endpoint needs the header "
                   "`Authorization: Bearer <token>` (setting admin_token)")  # fmt: skip
    elif not hmac.compare_digest(credentials.credentials.encode(), token):
        message = "authorization: the bearer token is not the one configured (admin_token)"
    else:
        return None
    body = ErrorOut(error=message, field="authorization", detail=[
        {"loc": ["header", "authorization"], "msg": message, "type": "unauthorized"}])  # fmt: skip
    response = _json(body, 401)
    response.headers["www-authenticate"] = "Bearer"
    return response


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """Return the request body, or raise :class:`BodyTooLargeError` past ``limit`` bytes."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLargeError(int(value), limit)
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:  # a chunked body declares no length: count while reading
            raise BodyTooLargeError(size, limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


class _Timing:
    """Pure ASGI middleware: latency histogram and status counts per endpoint (cheap).

    Latency is the time until the response's last byte is handed to the server: what the
    decision lane does after that (building the decision's record) is not the caller's.
    """

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._latency = {e: metrics.latency.labels(endpoint=e) for e in (*ENDPOINTS, "other")}

    @staticmethod
    def endpoint(path: str) -> str:
        if path.startswith("/v1/profiles/"):
            return "/v1/profiles/{id}"
        if path.startswith("/v1/customers/"):
            return "/v1/customers/{id}"
        if path.startswith("/v1/erasures/"):
            return "/v1/erasures/{id}"
        return path if path in ENDPOINTS else "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = self.endpoint(scope["path"])
        started = time.perf_counter()
        status = 500
        answered: float | None = None

        async def sending(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered = time.perf_counter()

        try:
            await self.app(scope, receive, sending)
        finally:
            self._latency[endpoint].observe((answered or time.perf_counter()) - started)
            self.metrics.inc(self.metrics.responses, endpoint, str(status))
            if status >= 400:
                kind = "client" if status < 500 else "server"
                self.metrics.inc(self.metrics.errors, endpoint, kind)


class _DecisionLane:
    """Pure ASGI lane for ``POST`` to the decision endpoints, ahead of FastAPI's routing.

    FastAPI's request handling (a ``Request``, dependency resolution, a response object)
    costs about 0.3 ms of CPU a request, as much as scoring 200 offers; at 500 requests/s
    on two cores that is the difference between keeping up and queueing. Here a decision
    is: read the body (413 past ``limit``), decide, send the JSON, then call ``after``
    (which builds the decision's log record once the caller has its answer). Everything
    else goes on to FastAPI, which also documents these endpoints.
    """

    def __init__(
        self, app: ASGIApp, decisions: dict[str, Callable[[bytes], tuple[int, bytes]]],
        limit: int, after: Callable[[], object] | None = None,
    ) -> None:  # fmt: skip
        self.app = app
        self.decisions = decisions
        self.limit = limit
        self.after = after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        decide = None
        if scope["type"] == "http" and scope["method"] == "POST":
            decide = self.decisions.get(scope["path"])
        if decide is None:
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_body(scope, receive, self.limit)
        except BodyTooLargeError as error:
            status, payload = 413, _encoder.encode(
                error_body("(body)", str(error), "body_too_large")
            )  # fmt: skip
        else:
            status, payload = decide(body)
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(payload)).encode())]  # fmt: skip
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        if self.after is not None:
            # One turn of the loop first: requests already read go ahead of the record
            # (A/B, 6 rounds each at 500 req/s: offers p99 mean 3.5 against 4.4 ms).
            await asyncio.sleep(0)
            self.after()


def settle_heap() -> None:
    """Move every object alive now out of the cyclic collector's reach (``gc.freeze``).

    What startup and a model load build (catalog, policies, the model, the modules its
    loader imports: LightGBM, scikit-learn, numpy) lives as long as the process, or as
    long as the model is served. Left in the collector's oldest generation, each full pass
    walks all of it: measured here, a 40-53 ms pause every few seconds under load, felt by
    every request queued behind it. Frozen objects are still freed by reference counting
    (a replaced model is), only cycles among them are never collected.
    """
    gc.freeze()


def _sink(settings: Settings, metrics: ServingMetrics) -> Sink:
    if settings.decision_log == "kafka":
        return KafkaSink(
            settings.kafka_bootstrap,
            on_failure=lambda n: metrics.decision_log.labels(outcome="failed").inc(n),
            timeout=settings.decision_log_timeout_s,
        )
    return FileSink(settings.event_log_dir)


def create_app(
    settings: Settings | None = None,
    *,
    store: OnlineStore | None = None,
    scorer: Scorer | None = None,
    model_loader: Loader | None = None,
    catalog: Catalog | None = None,
    decision_log: DecisionLog | None = None,
    clock: Callable[[], datetime] | None = None,
    new_id: Callable[[], str] | None = None,
) -> FastAPI:
    """Build the API.

    Parameters
    ----------
    settings
        Everything not passed explicitly; ``Settings()`` (environment) when ``None``.
    store
        The online store; opened from the settings when ``None`` (and closed at shutdown).
    scorer
        The model to start with; the heuristic when ``None``. The heuristic stays the
        fallback for model errors either way.
    model_loader
        Loads a promoted model from the pointer file's content (``settings.promoted_pointer``,
        polled every ``model_poll_s``); the registry's loader when ``None`` and available.
    catalog, decision_log, clock, new_id
        Overrides for tests and benchmarks.

    Raises
    ------
    features.policy.PolicyError
        If the policies file is invalid (the message names the file, entry and field).
    features.catalog.CatalogError
        If the catalog is invalid.

    """
    settings = settings or Settings()
    if settings.decision_erasure == "queued" and settings.decision_log != "kafka":
        message = ("decision_erasure=queued needs decision_log=kafka: the eraser reads the "
                   "Kafka decisions topic (a file log is erased in the request)")  # fmt: skip
        raise ValueError(message)
    metrics = ServingMetrics()
    policies = PolicySource(
        settings.policies_path or DEFAULT_POLICIES_PATH,
        catalog or settings.catalog_dir or DEFAULT_CATALOG_DIR,
        quiet_margin_min=settings.quiet_margin_min,
        on_reload=lambda result: metrics.policy_reloads.labels(result=result).inc(),
        in_background=True,  # a catalog takes ~90 ms to load: not on a request's time
    )
    owns_store = store is None
    store = store or settings.open_store()

    def swapped(scorer: Scorer) -> None:
        metrics.serving_model(scorer.version)
        settle_heap()  # the new model, and the modules its loader imported

    holder = ScorerHolder(HeuristicScorer(), on_swap=swapped)
    if scorer is not None:
        holder.swap(scorer)
    metrics.serving_model(holder.current.version)
    # The workers of this host share the fence; queued erasures need none (they wait a grace).
    inline_erasure = decision_log is None and settings.decision_erasure != "queued"
    fence = ErasureFence(settings.event_log_dir, clock=clock or utc_now) if inline_erasure else None
    decisions = decision_log or DecisionLog(
        _sink(settings, metrics),
        max_queue=settings.decision_queue_size,
        on_outcome=lambda outcome, n: metrics.decision_log.labels(outcome=outcome).inc(n),
        fence=fence,
    )
    budgets = BudgetSpend(
        store,
        policies.current.catalog.offers.values(),
        refresh_s=settings.budget_refresh_s,
        on_refresh=metrics.budget_refreshed,
    )
    engine = Engine(
        store=store,
        policies=policies,
        scorers=holder,
        decisions=decisions,
        metrics=metrics,
        exploration=settings.exploration_policy(),
        clock=clock or utc_now,
        examples_path=settings.examples_path,
        journey_logs=[
            topic_path(settings.event_log_dir, MESSAGES_OUTBOUND),
            topic_path(settings.event_log_dir, TRIGGERS),
        ],
        budgets=budgets,
        queue_erasures=settings.decision_erasure == "queued",
        breaker=store_breaker(
            metrics, settings.store_breaker_failures, settings.store_breaker_reset_s
        ),
        **({"new_id": new_id} if new_id else {}),
    )
    loader = model_loader or default_loader(settings)
    watcher = None
    if loader is not None:
        watcher = ModelWatcher(
            holder,
            settings.promoted_pointer,
            loader,
            interval_s=settings.model_poll_s,
            on_event=lambda event: metrics.model_events.labels(event=event).inc(),
        )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if watcher is not None:
            watcher.start()  # loads the promoted model now, in this thread
        budgets.start()
        settle_heap()
        try:
            yield
        finally:
            budgets.stop()
            if watcher is not None:
                watcher.stop()
            decisions.close()
            if owns_store:
                store.close()

    app = FastAPI(
        title="omnioffer decision API",
        version="1",
        summary="Next best offers at page load and channel choice for messages, in milliseconds.",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.metrics = metrics
    app.state.watcher = watcher
    app.state.settings = settings
    token = settings.admin_token.get_secret_value().encode() if settings.admin_token else None
    _routes(app, engine, metrics, settings.max_request_bytes, token)
    app.add_middleware(_Timing, metrics=metrics)
    _document(app)
    return app


def _routes(
    app: FastAPI, engine: Engine, metrics: ServingMetrics, limit: int, token: bytes | None
) -> None:
    def answer(
        body: bytes, path: str, kind: type, run: Callable[[Any], Any],
        fallback: Callable[[Any], Any],
    ) -> tuple[int, bytes]:  # fmt: skip
        parsed = None
        try:
            parsed = decode_request(body, kind)
            result = run(parsed)  # inline: CPU-bound, and thread hops cost 25% throughput
        except RequestError as error:
            return 422, _encoder.encode(error_body(error.field, str(error)))
        except Exception:  # never an error page for a decision: degrade and count
            log.exception("decision failed; answering the degraded default")
            metrics.errors.labels(endpoint=path, kind="internal").inc()
            metrics.fallbacks.labels(cause="internal_error").inc()
            result = fallback(parsed)
            engine.log_failure(parsed, result.decision_id)
        return 200, _encoder.encode(result)

    def offers_fallback(_request: OffersRequest | None) -> OffersResponse:
        return OffersResponse(
            decision_id=engine.new_id(), offers=[], model_version=engine.scorers.current.version,
            degraded=True, cold_start=True, profile_id=None, policy=engine.policy_name,
            suppressed_by="internal_error",
        )  # fmt: skip

    def channel_fallback(_request: ChannelRequest | None) -> ChannelResponse:
        return ChannelResponse(
            decision_id=engine.new_id(), channel="none", send_at=None,
            reason="internal error: not sent; retry", suppressed_by="internal_error",
            propensity=None, alternatives=[],
            model_choice=ModelChoice(channel=None, score=None, allowed=False, matches=False),
            model_version=engine.scorers.current.version, degraded=True, profile_id=None,
            policy=engine.policy_name,
        )  # fmt: skip

    decisions: dict[str, Callable[[bytes], tuple[int, bytes]]] = {
        "/v1/offers": lambda body: answer(
            body, "/v1/offers", OffersRequest, engine.offers, offers_fallback
        ),
        "/v1/channel": lambda body: answer(
            body, "/v1/channel", ChannelRequest, engine.channel, channel_fallback
        ),
    }
    # A decision log passed in (a test's, a benchmark's) may build its records itself.
    after = getattr(engine.decisions, "build_deferred", None)
    app.add_middleware(_DecisionLane, decisions=decisions, limit=limit, after=after)

    # The lane answers these two; the routes document them (and answer the same way if a
    # request ever reaches FastAPI's router).
    async def routed(request: Request) -> Response:
        try:
            body = await _read_body(request.scope, request.receive, limit)
        except BodyTooLargeError as error:
            return _error(413, str(error), "(body)", "body_too_large")
        status, payload = decisions[request.url.path](body)
        return Response(payload, status_code=status, media_type=JSON)

    @app.post("/v1/offers", tags=["decisions"], openapi_extra=_body("OffersRequest"),
              responses=_answers("OffersResponse"))  # fmt: skip
    async def offers(request: Request) -> Response:
        """Rank the eligible offers for a visitor at page load (cold start when unknown)."""
        return await routed(request)

    @app.post("/v1/channel", tags=["decisions"], openapi_extra=_body("ChannelRequest"),
              responses=_answers("ChannelResponse"))  # fmt: skip
    async def channel(request: Request) -> Response:
        """Choose the channel and send time for a message, or none with the suppressing rule."""
        return await routed(request)

    @app.get("/v1/profiles/{id}", tags=["support"])
    async def profile(id: str, credentials: Credentials) -> Response:
        """Return a profile, its identifiers, persona scores and features as of now."""
        denied = staff_denied(token, credentials)
        return denied or await _support(id, "customer_id", engine.profile, "no profile for")

    @app.delete("/v1/customers/{id}", tags=["support"])
    async def erase(id: str, credentials: Credentials) -> Response:
        """Erase a person: online store, identity map, contact log and decision-log entries."""
        denied = staff_denied(token, credentials)
        return denied or await _support(id, "customer_id", engine.erase, None)

    @app.post("/v1/identity/unlinks", tags=["support"], status_code=202,
              openapi_extra=_body("UnlinkRequest"))  # fmt: skip
    async def unlink(request: Request, credentials: Credentials) -> Response:
        """Undo wrong identity links: the identifiers go back to profiles of their own.

        Publishes one ``identity_unlink`` event per identifier to ``events.consent``; the
        feature flow moves each identifier, with its history, out of the customer's profile
        and never links them again. 202: published, applied within the flow's lag.
        """
        if denied := staff_denied(token, credentials):
            return denied
        try:
            body = await _read_body(request.scope, request.receive, limit)
            parsed = decode_request(body, UnlinkRequest)
            result = engine.unlink(parsed)
        except BodyTooLargeError as error:
            return _error(413, str(error), "(body)", "body_too_large")
        except RequestError as error:
            return _error(422, str(error), error.field)
        except UnavailableError as error:
            return _error(503, f"{error}; retry later", None, "unavailable")
        return _json(result, 202)

    @app.get("/v1/erasures/{erasure_id}", tags=["support"])
    async def erasure(erasure_id: str, credentials: Credentials) -> Response:
        """State of a queued erasure of the Kafka decision log: ``queued`` or ``done``."""
        if denied := staff_denied(token, credentials):
            return denied
        settings = app.state.settings
        if settings.decision_erasure != "queued":
            message = ("erasure_id: no erasure is queued here: this API erases the decision "
                       "log in the request (decision_erasure=inline)")  # fmt: skip
            return _error(404, message, "erasure_id", "not_found")
        try:
            state = await run_in_threadpool(
                erasure_status, settings.kafka_bootstrap, erasure_id,
                timeout=settings.decision_log_timeout_s,
            )  # fmt: skip
        except KAFKA_ERRORS as error:
            return _error(503, f"decision log unavailable: {error}; retry later", None,
                          "unavailable")  # fmt: skip
        if state is None:
            message = f"erasure_id: no erasure {erasure_id!r} in the last 30 days"
            return _error(404, message, "erasure_id", "not_found")
        return _json(state)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> Response:
        """Liveness: the process answers, and which worker process it is."""
        return _json({"status": "ok", "worker": os.getpid()})

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> Response:
        """Readiness: the store answers and the promoted model is the one in force (else 503).

        A promoted model that cannot be loaded makes the instance not ready (``model_error``
        says why) while it keeps answering with the model before it, or the heuristic.
        """
        store_ok = await run_in_threadpool(engine.store.ping)
        watcher = app.state.watcher
        model_error = watcher.state.error if watcher is not None else None
        body = {
            "ready": store_ok and model_error is None,
            "store": store_ok,
            # "open": decisions skip the store for now (it failed repeatedly); they degrade.
            "store_breaker": engine.breaker.current_state,
            "model": model_error is None,
            "model_error": model_error,
            "model_version": engine.scorers.current.version,
            "policies_error": engine.policies.error,
            "decision_log_pending": engine.decisions.pending,
        }
        return _json(body, 200 if body["ready"] else 503)

    @app.get("/metrics", tags=["operations"])
    async def prometheus() -> Response:
        """Prometheus metrics."""
        metrics.decision_queue.set(engine.decisions.pending)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", tags=["operations"])
    async def reload(credentials: Credentials) -> Response:
        """Reload the policies file now; an invalid file is rejected with the error."""
        if denied := staff_denied(token, credentials):
            return denied
        result = await run_in_threadpool(engine.policies.reload, force=True)
        return _json({"policies": result, "error": engine.policies.error})

    async def _support(
        raw_id: str,
        default_field: str,
        call: Callable[[str], Awaitable[Any] | Any],
        missing: str | None,
    ) -> Response:
        try:
            identifier = parse_identifier(raw_id, default_field)
            result = await run_in_threadpool(call, identifier)
        except RequestError as error:
            return _error(422, str(error), error.field)
        except UnavailableError as error:
            return _error(503, f"{error}; retry later", None, "unavailable")
        if result is None and missing is not None:
            return _error(404, f"id: {missing} {identifier!r}", "id", "not_found")
        return _json(result)


def _body(name: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": True, "content": {JSON: {"schema": ref}}}}


def _answers(name: str) -> dict[int | str, dict[str, Any]]:
    def ref(n: str) -> dict[str, Any]:
        return {"content": {JSON: {"schema": {"$ref": f"#/components/schemas/{n}"}}}}

    return {
        200: {"description": "The decision", **ref(name)},
        413: {"description": "Body too large", **ref("ErrorOut")},
        422: {"description": "Invalid request; `error` names the field", **ref("ErrorOut")},
    }


def _document(app: FastAPI) -> None:
    """Put the msgspec schemas of the bodies into the OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                             summary=app.summary)  # fmt: skip
        _, components = msgspec.json.schema_components(
            [OffersRequest, ChannelRequest, OffersResponse, ChannelResponse, ErrorOut,
             UnlinkRequest],
            ref_template="#/components/schemas/{name}",
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = ["Path", "create_app"]
