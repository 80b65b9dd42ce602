"""Prometheus metrics, defined in one place.

Names follow one scheme: prefix ``clipserve_``, durations as ``_duration_seconds`` histograms
(queue wait, preprocess and inference apart), counters as ``_total``. Each ``Metrics`` owns its
registry so that several apps (tests) can live in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """All metrics of one server instance, on a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "clipserve_requests", "Requests by route, protocol and status.",
            ["route", "protocol", "status"], registry=r,
        )
        self.request_duration = Histogram(
            "clipserve_request_duration_seconds", "End-to-end request duration.",
            ["route", "protocol"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.in_flight = Gauge(
            "clipserve_requests_in_flight", "Requests being served now.", ["protocol"], registry=r
        )
        self.queue_wait = Histogram(
            "clipserve_queue_wait_duration_seconds", "Time an item waits in the batcher queue.",
            ["model", "modality"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.preprocess = Histogram(
            "clipserve_preprocess_duration_seconds", "Decode and preprocessing time per item.",
            ["model", "modality"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.inference = Histogram(
            "clipserve_inference_duration_seconds", "Model compute time per batch.",
            ["model", "modality"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "clipserve_batch_size", "Items per computed batch.",
            ["model", "modality"], buckets=BATCH_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "clipserve_queue_depth", "Items waiting in the batcher queue.", ["model", "modality"], registry=r
        )
        self.items = Counter(
            "clipserve_items_embedded", "Items embedded, by modality.", ["model", "modality"], registry=r
        )
        self.batch_errors = Counter(
            "clipserve_batch_errors", "Batches whose compute raised.", ["model", "modality"], registry=r
        )
        self.dropped_items = Counter(
            "clipserve_dropped_items", "Items dropped before compute (expired or cancelled).",
            ["model", "modality", "reason"], registry=r,
        )
        self.model_load = Gauge(
            "clipserve_model_load_duration_seconds", "Time taken to load the model.", ["model"], registry=r
        )
        self.model_warmup = Gauge(
            "clipserve_model_warmup_duration_seconds", "Time taken to warm the model up.", ["model"],
            registry=r,
        )
        self.cache_hits = Counter(
            "clipserve_class_cache_hits", "Zero-shot class-embedding cache hits.", ["model"], registry=r
        )
        self.cache_misses = Counter(
            "clipserve_class_cache_misses", "Zero-shot class-embedding cache misses.", ["model"], registry=r
        )
        self.rejected = Counter(
            "clipserve_rejected", "Requests refused at the door (429): over the admission bound, or bytes in flight.",
            ["model", "reason"], registry=r,
        )
        self.fetch_duration = Histogram(
            "clipserve_image_fetch_duration_seconds", "Time to fetch one image URL (redirects included), by outcome.",
            ["outcome"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.fetch_failures = Counter(
            "clipserve_image_fetch_failures", "Image URLs refused or failed, by reason.", ["reason"], registry=r,
        )
        self.ready = Gauge("clipserve_ready", "1 when the server is ready to serve.", registry=r)

    def render(self) -> bytes:
        """The text exposition of every metric, for ``GET /metrics``."""
        return generate_latest(self.registry)
