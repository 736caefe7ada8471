"""Prometheus metrics: imgproxy's names and labels (so its dashboards work) plus imgorigin's own.

One ``Metrics`` object owns one registry. Every label has a small fixed set of values (never a URL).
Served on a separate listener (``IMGORIGIN_PROMETHEUS_BIND``) by ``serve_metrics``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

__all__ = ["SPANS", "Metrics"]

#: request phases, as imgproxy names them in ``request_span_duration_seconds{span}``
SPANS = ("queue", "downloading_source_image", "processing_image", "streaming_image")

_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Every metric imgorigin exports, registered in one registry."""

    def __init__(self, namespace: str = "", *, version: str = "", workers: int = 1,
                 vips_memory: Callable[[], tuple[int, int, int]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ns = namespace
        reg = self.registry
        self.requests = Counter("requests", "Requests received (images, not health checks).",
                                namespace=ns, registry=reg)
        self.status_codes = Counter("status_codes", "Responses by status code.", ["status"],
                                    namespace=ns, registry=reg)
        self.errors = Counter("errors", "Errors by type (imgproxy's types).", ["type"],
                              namespace=ns, registry=reg)
        self.request_duration = Histogram("request_duration_seconds", "Whole request time.",
                                          namespace=ns, registry=reg, buckets=_DURATION_BUCKETS)
        self.span_duration = Histogram("request_span_duration_seconds", "Time of each request phase.",
                                       ["span"], namespace=ns, registry=reg, buckets=_DURATION_BUCKETS)
        self.workers = Gauge("workers", "Images processed at once at most.", namespace=ns, registry=reg)
        self.requests_in_progress = Gauge("requests_in_progress", "Requests being answered.",
                                          namespace=ns, registry=reg)
        self.images_in_progress = Gauge("images_in_progress", "Images being fetched or rendered.",
                                        namespace=ns, registry=reg)
        self.workers_utilization = Gauge("workers_utilization",
                                         "Images in progress per worker, in percent.",
                                         namespace=ns, registry=reg)
        self.vips_memory = Gauge("vips_memory_bytes", "Memory libvips holds now.", namespace=ns,
                                 registry=reg)
        self.vips_max_memory = Gauge("vips_max_memory_bytes", "Most memory libvips held.",
                                     namespace=ns, registry=reg)
        self.vips_allocs = Gauge("vips_allocs", "Live libvips allocations.", namespace=ns, registry=reg)
        self.cache_hits = Counter("cache_hits", "Results served from a cache tier.", ["tier"],
                                  namespace=ns, registry=reg)
        self.cache_misses = Counter("cache_misses", "Results that had to be rendered.", namespace=ns,
                                    registry=reg)
        self.coalesced = Counter("coalesced_requests", "Requests that waited for an identical render.",
                                 namespace=ns, registry=reg)
        self.source_bytes = Counter("source_bytes", "Bytes fetched from sources.", namespace=ns,
                                    registry=reg)
        self.source_fetches = Counter("source_fetches", "Source fetches made.", namespace=ns, registry=reg)
        self.renders = Counter("renders", "Images rendered.", namespace=ns, registry=reg)
        self.output_bytes = Counter("output_bytes", "Bytes of images sent, by format.", ["format"],
                                    namespace=ns, registry=reg)
        self.loop_lag = Gauge("event_loop_lag_seconds", "How late the event loop ran a timer, last check.",
                              namespace=ns, registry=reg)
        self.loop_lag_max = Gauge("event_loop_lag_max_seconds", "Largest event-loop lag seen.",
                                  namespace=ns, registry=reg)
        self.build_info = Gauge("build_info", "Always 1; the version is a label.", ["version"],
                                namespace=ns, registry=reg)
        self.build_info.labels(version=version).set(1)
        self.workers.set(workers)
        self._workers = workers
        self._vips_memory = vips_memory

    def image_started(self) -> None:
        """An image fetch-and-render began."""
        self.images_in_progress.inc()
        self._utilization()

    def image_finished(self) -> None:
        """An image fetch-and-render ended."""
        self.images_in_progress.dec()
        self._utilization()

    def _utilization(self) -> None:
        self.workers_utilization.set(self.images_in_progress._value.get() / self._workers * 100)

    def sample_vips(self) -> None:
        """Read libvips' memory counters into their gauges."""
        if self._vips_memory is not None:
            memory, highwater, allocs = self._vips_memory()
            self.vips_memory.set(memory)
            self.vips_max_memory.set(highwater)
            self.vips_allocs.set(allocs)

    def exposition(self) -> bytes:
        """The text exposition of every metric."""
        self.sample_vips()
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
        """Serve the exposition on its own listener (any path), in a daemon thread."""
        registry = self.registry
        metrics = self

        class _Sampling:
            """Refreshes libvips' gauges before each scrape."""

            def collect(self):  # type: ignore[no-untyped-def]
                metrics.sample_vips()
                return []

        registry.register(_Sampling())
        return start_http_server(port, addr=host, registry=registry)
