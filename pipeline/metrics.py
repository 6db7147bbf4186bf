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
            (
                "imgrag_files_pending_live",
                1 if r.pending_live else 0,
                "1 when imgrag_files_pending is current; 0 when it comes from a background walk.",
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        if r.pending_age is not None:
            yield GaugeMetricFamily(
                "imgrag_files_pending_age_seconds",
                "Age of the background walk behind imgrag_files_pending (when not live).",
                value=r.pending_age,
            )
        for name, value, doc in (
            ("imgrag_embed_requests", r.usage.requests, "Requests sent to the embedder."),
            ("imgrag_embed_images", r.usage.images, "Images embedded."),
            ("imgrag_embed_tokens", r.usage.tokens, "Tokens billed by the embedder."),
            ("imgrag_embed_retries", r.usage.retries, "Embedding requests retried."),
            ("imgrag_embed_throttled", r.usage.throttled, "HTTP 429 answers received."),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield from _deployments(r)


def _deployments(r: StatusReport) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """Per deployment of a pool, labelled by its name (nothing for a single endpoint)."""
    if not r.usage.deployments:
        return
    labels = ["deployment"]
    requests = CounterMetricFamily(
        "imgrag_deployment_requests", "Requests sent to this deployment.", labels=labels
    )
    throttled = CounterMetricFamily(
        "imgrag_deployment_throttled", "HTTP 429 answers from this deployment.", labels=labels
    )
    failures = CounterMetricFamily(
        "imgrag_deployment_failures",
        "Requests that failed at this deployment and moved to another.",
        labels=labels,
    )
    healthy = GaugeMetricFamily(
        "imgrag_deployment_healthy", "1 while this deployment is in service.", labels=labels
    )
    share = GaugeMetricFamily(
        "imgrag_deployment_share", "Fraction of the inputs this deployment embedded.", labels=labels
    )
    for d in r.usage.deployments:
        requests.add_metric([d.name], d.requests)
        throttled.add_metric([d.name], d.throttled)
        failures.add_metric([d.name], d.failures)
        healthy.add_metric([d.name], 1.0 if d.healthy else 0.0)
        share.add_metric([d.name], d.share)
    yield from (requests, throttled, failures, healthy, share)


class Metrics:
    """A registry per daemon, with latency histograms and the counts of the status report,
    read at each scrape from what is kept (the journal's count, the index's count, the
    daemon's own counts): a scrape walks nothing and reads no point."""

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
