"""Prometheus metrics: imgproxy's names and labels (so its dashboards work) plus imgorigin's own.

One ``Metrics`` object owns one registry. Every label has a small fixed set of values (never a URL).
Served on a separate listener (``IMGORIGIN_PROMETHEUS_BIND``): by the server itself, or, when several
processes serve (``IMGORIGIN_PROCESSES``), by the supervisor, which adds up what every process wrote into
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode; each gauge says how to combine).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

__all__ = ["SPANS", "Metrics", "forget_process", "serve_combined"]

#: request phases, as imgproxy names them in ``request_span_duration_seconds{span}``
SPANS = ("queue", "downloading_source_image", "processing_image", "streaming_image")

_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Every metric imgorigin exports, registered in one registry."""

    def __init__(self, namespace: str = "", *, version: str = "", workers: int = 1, server_workers: int = 0,
                 vips_memory: Callable[[], tuple[int, int, int]] | None = None) -> None:
        """``workers``: this process's worker slots; ``server_workers``: the whole server's (when several
        processes serve), so that per-process utilization shares add up to the server's."""
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
        self.workers = Gauge("workers", "Images processed at once at most.", namespace=ns, registry=reg,
                             multiprocess_mode="livesum")
        self.requests_in_progress = Gauge("requests_in_progress", "Requests being answered.",
                                          namespace=ns, registry=reg, multiprocess_mode="livesum")
        self.images_in_progress = Gauge("images_in_progress", "Images being fetched or rendered.",
                                        namespace=ns, registry=reg, multiprocess_mode="livesum")
        self.workers_utilization = Gauge("workers_utilization",
                                         "Images in progress per worker, in percent.",
                                         namespace=ns, registry=reg, multiprocess_mode="livesum")
        self.vips_memory = Gauge("vips_memory_bytes", "Memory libvips holds now.", namespace=ns,
                                 registry=reg, multiprocess_mode="livesum")
        self.vips_max_memory = Gauge("vips_max_memory_bytes", "Most memory libvips held.",
                                     namespace=ns, registry=reg, multiprocess_mode="livesum")
        self.vips_allocs = Gauge("vips_allocs", "Live libvips allocations.", namespace=ns, registry=reg,
                                 multiprocess_mode="livesum")
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
                              namespace=ns, registry=reg, multiprocess_mode="livemax")
        self.loop_lag_max = Gauge("event_loop_lag_max_seconds", "Largest event-loop lag seen.",
                                  namespace=ns, registry=reg, multiprocess_mode="max")
        self.build_info = Gauge("build_info", "Always 1; the version is a label.", ["version"],
                                namespace=ns, registry=reg, multiprocess_mode="max")
        self.build_info.labels(version=version).set(1)
        #: the labelled children used on every request, looked up once
        self.spans = {span: self.span_duration.labels(span=span) for span in SPANS}
        self.hits = {tier: self.cache_hits.labels(tier=tier) for tier in ("memory", "disk", "shared")}
        self._statuses: dict[int, Counter] = {}
        self.workers.set(workers)
        self._utilization_base = server_workers or workers
        self._vips_memory = vips_memory

    def status(self, code: int) -> Counter:
        """The ``status_codes`` counter of ``code``."""
        child = self._statuses.get(code)
        if child is None:
            child = self._statuses[code] = self.status_codes.labels(status=str(code))
        return child

    def image_started(self) -> None:
        """An image fetch-and-render began."""
        self.images_in_progress.inc()
        self._utilization()

    def image_finished(self) -> None:
        """An image fetch-and-render ended."""
        self.images_in_progress.dec()
        self._utilization()

    def _utilization(self) -> None:
        self.workers_utilization.set(self.images_in_progress._value.get() / self._utilization_base * 100)

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


def serve_combined(directory: str, host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """Serve, on its own listener, the sum of what every server process wrote into ``directory``."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return start_http_server(port, addr=host, registry=registry)


def forget_process(directory: str, pid: int) -> None:
    """Drop a dead process's live gauges (``live*`` modes) from the combined metrics in ``directory``."""
    mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
