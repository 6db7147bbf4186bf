"""Prometheus metrics for the daemon's ``GET /metrics``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from imgrag.pipeline.status import StatusReport
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _StatusCollector(Collector):
    def __init__(self, report: Callable[[], StatusReport]) -> None:
        self._report = report

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        r = self._report()
        for name, value, doc in (
            ("imgrag_files_indexed", r.indexed, "Files in the index."),
            ("imgrag_files_pending", r.pending, "Files seen and not processed yet."),
            ("imgrag_files_failed", r.failed, "Files that could not be indexed."),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        for name, value, doc in (
            ("imgrag_embed_requests", r.usage.requests, "Requests sent to the embedder."),
            ("imgrag_embed_images", r.usage.images, "Images embedded."),
            ("imgrag_embed_tokens", r.usage.tokens, "Tokens billed by the embedder."),
            ("imgrag_embed_retries", r.usage.retries, "Embedding requests retried."),
            ("imgrag_embed_throttled", r.usage.throttled, "HTTP 429 answers received."),
        ):
            yield CounterMetricFamily(name, doc, value=value)


class Metrics:
    """A registry per daemon, with latency histograms and live counts from the status."""

    def __init__(self, report: Callable[[], StatusReport]) -> None:
        self.registry = CollectorRegistry()
        self.embed_seconds = Histogram(
            "imgrag_embed_seconds",
            "Time to embed one batch of images.",
            registry=self.registry,
            buckets=_BUCKETS,
        )
        self.search_seconds = Histogram(
            "imgrag_search_seconds",
            "Time to answer a search, embedding included.",
            registry=self.registry,
            buckets=_BUCKETS,
        )
        self.registry.register(_StatusCollector(report))

    def render(self) -> bytes:
        return generate_latest(self.registry)
