"""Prometheus metrics: HTTP requests and latency, indexing jobs, photos indexed.

Each app gets its own registry, so several apps in one process (tests) never collide.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.jobs import JobView

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The server's collectors, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "peitu_http_requests",
            "HTTP requests by method, route template and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "peitu_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.jobs = Counter(
            "peitu_index_jobs",
            "Indexing jobs finished, by what started them and how they ended",
            ["trigger", "state"],
            registry=self.registry,
        )
        self.photos_processed = Counter(
            "peitu_index_photos",
            "Photos handled by indexing jobs: described, embedded or failed",
            ["outcome"],
            registry=self.registry,
        )
        self.schedule_skipped = Counter(
            "peitu_index_schedule_skipped",
            "Scheduled indexing runs skipped because a job was already running",
            registry=self.registry,
        )
        self.photos_indexed = Gauge(
            "peitu_photos_indexed", "Photos with a vector, i.e. findable", registry=self.registry
        )
        self.jobs_running = Gauge(
            "peitu_index_job_running", "1 while an indexing job runs", registry=self.registry
        )

    def job_finished(self, job: JobView) -> None:
        """Count a finished job and the photos it handled (a `JobManager` listener)."""
        self.jobs.labels(job.trigger, job.state).inc()
        for outcome in ("described", "embedded", "failed"):
            count = (job.counts or {}).get(outcome, 0)
            if count:
                self.photos_processed.labels(outcome).inc(count)

    def render(self) -> bytes:
        """The text exposition format of every collector."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request, labelled by route template (not the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, send_and_watch)
        finally:
            self._observe(scope, status, time.perf_counter() - start)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = _route_template(scope)
        method = str(scope.get("method", ""))
        self._metrics.requests.labels(method, route, str(status)).inc()
        self._metrics.latency.labels(method, route).observe(seconds)


def _route_template(scope: Scope) -> str:
    """`/api/photos/{photo_id}` rather than the id itself, to keep label values few."""
    route = scope.get("route")  # set by the router on the shared scope once a route matched
    if route is None:
        return "unmatched"
    if isinstance(route, Mount):
        return "static"
    # The route's own path lacks the prefixes of the routers it was included in; the request
    # path has them, with parameter values where the template has names.
    names = {str(value): name for name, value in scope.get("path_params", {}).items()}
    segments = str(scope.get("path", "")).split("/")
    return "/".join(f"{{{names[s]}}}" if s in names else s for s in segments)
