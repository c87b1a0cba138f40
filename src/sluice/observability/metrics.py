"""Prometheus metrics, one ``Metrics`` object per worker, exported on ``GET /metrics``.

With several workers ``sluice serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before they start;
every worker then writes its values to memory-mapped files there and a scrape of any worker
aggregates all of them (prometheus_client multiprocess mode). With one process the metrics live
in a private registry, so several apps in one interpreter (the tests) never collide.

Hot path: label children are bound once and cached, so recording is a dict lookup and an
increment. Client-chosen label values (model names matched by glob patterns) are capped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

__all__ = ["Metrics", "MULTIPROC_ENV", "multiprocess_enabled"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_MAX_MODELS = 500
_OTHER = "_other"
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

_M = TypeVar("_M", Counter, Gauge, Histogram)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class _Children:
    """Bound label children by label tuple: ``labels()`` costs a lock and a dict build."""

    __slots__ = ("_metric", "_cache")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._cache: dict[tuple[str, ...], Any] = {}

    def get(self, *values: str) -> Any:
        child = self._cache.get(values)
        if child is None:
            child = self._cache[values] = self._metric.labels(*values)
        return child


class Metrics:
    def __init__(self) -> None:
        self.multiprocess = multiprocess_enabled()
        # Multiprocess mode: values go to files; a fresh collector reads them at scrape time.
        self._registry: CollectorRegistry | None = (
            None if self.multiprocess else CollectorRegistry(auto_describe=True)
        )
        self._models: set[str] = set()
        self.http_requests = self._children(
            Counter, "sluice_http_requests", "HTTP requests by route, method and status",
            ["route", "method", "status"],
        )  # fmt: skip
        self.http_latency = self._children(
            Histogram, "sluice_http_request_duration_seconds", "HTTP request duration",
            ["route"], buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.requests = self._children(
            Counter, "sluice_relay_requests",
            "Relayed requests by endpoint, model, channel, status",
            ["endpoint", "model", "channel", "status"],
        )  # fmt: skip
        self.latency = self._children(
            Histogram, "sluice_relay_latency_seconds", "Relayed request latency (to the end)",
            ["endpoint", "model"], buckets=_LATENCY_BUCKETS,
        )  # fmt: skip
        self.ttft = self._children(
            Histogram, "sluice_relay_ttft_seconds", "Time to first token of streamed responses",
            ["model"], buckets=_TTFT_BUCKETS,
        )  # fmt: skip
        self.upstream_errors = self._children(
            Counter, "sluice_upstream_errors", "Failed upstream attempts by channel and kind",
            ["channel", "kind"],
        )  # fmt: skip
        self.retries = self._children(
            Counter, "sluice_retries", "Attempts after the first (failover)", ["endpoint"]
        )
        self.tokens = self._children(
            Counter, "sluice_tokens", "Metered tokens by model and type", ["model", "type"]
        )
        self.cost = self._children(
            Counter, "sluice_cost_micro_usd", "Charged cost in micro-USD", ["model"]
        )
        self.circuit = self._children(
            Gauge, "sluice_circuit_state",
            "Circuit state per channel (model '' = whole channel): "
            "0 closed, 1 half_open, 2 open, 3 disabled",
            ["channel", "model"], multiprocess_mode="livemax",
        )  # fmt: skip
        self.usage_queue = Gauge(
            "sluice_usage_queue_depth", "Usage rows waiting to be written",
            registry=self._registry, multiprocess_mode="livesum",
        )  # fmt: skip

    def _children(
        self, kind: Callable[..., _M], name: str, doc: str, labels: list[str], **extra: Any
    ) -> _Children:
        return _Children(kind(name, doc, labels, registry=self._registry, **extra))

    def model_label(self, model: str) -> str:
        if model in self._models:
            return model
        if len(self._models) >= _MAX_MODELS:
            return _OTHER
        self._models.add(model)
        return model

    def observe_relay(
        self,
        *,
        endpoint: str,
        model: str,
        channel: str | None,
        status: int,
        latency_s: float,
        ttft_s: float | None,
        prompt: int,
        completion: int,
        cached: int,
        cost_micro: int,
    ) -> None:
        label = self.model_label(model)
        self.requests.get(endpoint, label, channel or "", str(status)).inc()
        self.latency.get(endpoint, label).observe(latency_s)
        if ttft_s is not None:
            self.ttft.get(label).observe(ttft_s)
        if prompt:
            self.tokens.get(label, "prompt").inc(prompt)
        if completion:
            self.tokens.get(label, "completion").inc(completion)
        if cached:
            self.tokens.get(label, "cached").inc(cached)
        if cost_micro:
            self.cost.get(label).inc(cost_micro)

    def upstream_error(self, channel: str, kind: str) -> None:
        self.upstream_errors.get(channel, kind).inc()

    def retry(self, endpoint: str) -> None:
        self.retries.get(endpoint).inc()

    def circuit_changed(self, channel: str, model: str | None, code: int) -> None:
        self.circuit.get(channel, "" if model is None else self.model_label(model)).set(code)

    def close(self) -> None:
        """A stopping worker drops its live gauges from the shared directory."""
        if self.multiprocess:
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def render(self) -> tuple[bytes, str]:
        if self._registry is not None:
            return generate_latest(self._registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
