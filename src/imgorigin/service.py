"""Origin: the request use case, verify → parse → check → cache → fetch → render → store. No HTTP here."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Self

import anyio

from .cache import ByteStore, Cache, DiskCache, NullCache, Rendered, SourceCache, StoreCache, cache_key
from .codec import ClientFeatures, client_features, setup
from .config import ConfigError, Settings
from .errors import InvalidImage, InvalidURL, SignatureLooksLikeOption, SourceError, TooManyRequests
from .metrics import Metrics
from .options import Options, ParsePolicy, normalize_path, parse_path, to_path
from .pipeline import RenderConfig, render
from .security import SourcePolicy, parse_allowed_networks
from .signing import Verifier
from .sources import Fetched, Source, build_sources, s3_config, scheme_of

__all__ = ["ImageRequest", "Origin", "Reply"]

log = logging.getLogger("imgorigin")


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """What the HTTP layer hands over: the signature segment, the raw path after it, the Accept header."""

    signature: str
    path: str
    accept: str = ""


@dataclass(frozen=True, slots=True)
class Reply:
    """A rendered image and what the HTTP layer needs to answer with it."""

    rendered: Rendered
    options: Options
    source_url: str
    vary_accept: bool
    #: "hit" (this replica's disk), "shared" (the shared tier), "miss" (rendered), "coalesced"
    #: (rendered once for several concurrent requests; this one waited)
    cache_status: str


class Origin:
    """Owns the sources, the cache and the worker limit; answers image requests."""

    def __init__(self, settings: Settings, *, sources: dict[str, Source] | None = None,
                 cache: Cache | None = None, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(settings.prometheus_namespace, workers=settings.workers)
        #: set when SIGTERM arrived: /health answers 503 while in-flight requests finish
        self.draining = False
        try:
            networks = parse_allowed_networks(settings.allowed_source_networks)
        except ValueError as exc:
            raise ConfigError(f"IMGORIGIN_ALLOWED_SOURCE_NETWORKS: {exc}") from None
        self.policy = SourcePolicy(
            allowed_sources=settings.allowed_sources,
            allow_loopback=settings.allow_loopback_source_addresses,
            allow_link_local=settings.allow_link_local_source_addresses,
            allow_private=settings.allow_private_source_addresses,
            allowed_networks=networks)
        self.parse_policy = ParsePolicy(presets=dict(settings.presets), only_presets=settings.only_presets,
                                        base_url=settings.base_url,
                                        allow_security_options=settings.allow_security_options)
        _check_presets(self.parse_policy)
        self.verifier = Verifier(settings.key, settings.salt, size=settings.signature_size,
                                 trusted=settings.trusted_signatures)
        self._given_sources = sources
        self._given_cache = cache
        self.sources: dict[str, Source] = {}
        self.cache: Cache = NullCache()
        self.render_config: RenderConfig | None = None
        self.shared: Cache | None = None
        self.source_cache: SourceCache[Fetched] | None = None
        if settings.source_cache_size:
            self.source_cache = SourceCache(settings.source_cache_size, lambda f: len(f.data))
        self._limiter = anyio.CapacityLimiter(settings.workers)
        self._waiting = 0
        self._inflight: dict[str, asyncio.Task[tuple[Rendered, str]]] = {}
        self._stack = AsyncExitStack()
        #: counters the tests and metrics read: renders done, source fetches made
        self.renders = 0
        self.fetches = 0

    async def __aenter__(self) -> Self:
        available = setup(concurrency=1)
        self.render_config = RenderConfig.from_settings(self.settings, available)
        self.sources = self._given_sources if self._given_sources is not None else build_sources(
            self.settings, self.policy)
        for source in {id(s): s for s in self.sources.values()}.values():
            self._stack.push_async_callback(source.aclose)
        if self._given_cache is not None:
            self.cache = self._given_cache
        elif self.settings.cache_dir:
            try:
                self.cache = DiskCache(self.settings.cache_dir, self.settings.cache_size)
            except Exception as exc:  # an unusable cache directory must not stop the server
                log.error("disk cache %s unusable, serving without it: %s", self.settings.cache_dir, exc)
        self._stack.push_async_callback(self.cache.aclose)
        if self.settings.result_storage:
            self.shared = StoreCache(self._result_store(self.settings.result_storage))
            self._stack.push_async_callback(self.shared.aclose)
        return self

    def _result_store(self, url: str) -> ByteStore:
        if url.startswith("s3://"):
            from .sources.s3 import S3Storage

            return S3Storage.for_results(s3_config(self.settings), url)
        from .sources.local import LocalStore

        return LocalStore(url[len("local://"):])

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stack.aclose()

    @property
    def vary_accept(self) -> bool:
        """Whether image responses depend on the Accept header."""
        s = self.settings
        return s.auto_webp or s.auto_avif or s.enforce_webp or s.enforce_avif

    def parse(self, request: ImageRequest) -> tuple[Options, str]:
        """Verify the signature and parse the path; raises before anything is fetched or read."""
        path = normalize_path(request.path)
        if not self.verifier.enabled and ":" in request.signature:
            raise SignatureLooksLikeOption(f"signature segment {request.signature!r} holds an option")
        self.verifier.verify(request.signature, path)
        options, source_url = parse_path(path, self.parse_policy)
        if options.expires > 0 and options.expires < time.time():
            raise InvalidURL(f"expired URL (expires={options.expires})")
        return options, source_url

    async def image(self, request: ImageRequest) -> Reply:
        """Answer one image request from the cache or by fetching and rendering."""
        options, source_url = self.parse(request)
        scheme = scheme_of(source_url)
        if scheme not in self.sources:
            raise SourceError(f"no source handles {scheme!r} URLs")
        self.policy.check_url(source_url)
        client = self._client(request.accept)
        variant = f"webp={int(client.webp)},avif={int(client.avif)}" if self.vary_accept else ""
        key = cache_key(to_path(options, source_url), variant)
        rendered = await self.cache.get(key)
        if rendered is not None:
            self.metrics.cache_hits.labels(tier="disk").inc()
            return Reply(rendered, options, source_url, self.vary_accept, "hit")
        rendered, status = await self._coalesced(key, options, source_url, client)
        return Reply(rendered, options, source_url, self.vary_accept, status)

    def _client(self, accept: str) -> ClientFeatures:
        s = self.settings
        return client_features(accept, webp=s.auto_webp or s.enforce_webp,
                               avif=s.auto_avif or s.enforce_avif)

    async def _coalesced(self, key: str, options: Options, source_url: str,
                         client: ClientFeatures) -> tuple[Rendered, str]:
        """Produce once for all concurrent requests with one key (the work outlives a cancelled caller)."""
        task = self._inflight.get(key)
        led = task is None
        if task is None:
            task = asyncio.create_task(self._produce(key, options, source_url, client))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._inflight.pop(key, None) if self._inflight.get(key) is t
                                   else None)
        if not led:
            self.metrics.coalesced.inc()
        rendered, status = await asyncio.shield(task)
        return rendered, status if led else "coalesced"

    async def _produce(self, key: str, options: Options, source_url: str,
                       client: ClientFeatures) -> tuple[Rendered, str]:
        """The shared tier's copy (also stored on this replica's disk), or a fresh render stored in both."""
        if self.shared is not None:
            rendered = await self.shared.get(key)
            if rendered is not None:
                self.metrics.cache_hits.labels(tier="shared").inc()
                await self.cache.set(key, rendered)
                return rendered, "shared"
        self.metrics.cache_misses.inc()
        rendered = await self._render(key, options, source_url, client)
        await self.cache.set(key, rendered)
        if self.shared is not None:
            await self.shared.set(key, rendered)
        return rendered, "miss"

    async def _fetch(self, source_url: str, max_bytes: int) -> Fetched:
        source = self.sources[scheme_of(source_url)]

        async def fetch() -> Fetched:
            fetched = await source.fetch(source_url, max_bytes=max_bytes)
            self.fetches += 1
            self.metrics.source_fetches.inc()
            self.metrics.source_bytes.inc(len(fetched.data))
            return fetched

        if self.source_cache is None:
            return await fetch()
        fetched = await self.source_cache.get_or_fetch(source_url, fetch)
        if max_bytes and len(fetched.data) > max_bytes:
            raise InvalidImage(f"source is {len(fetched.data)} bytes, over the {max_bytes} byte limit")
        return fetched

    async def _render(self, key: str, options: Options, source_url: str, client: ClientFeatures) -> Rendered:
        """Wait for a worker (or refuse when the queue is full), then fetch and render."""
        assert self.render_config is not None
        started = time.monotonic()
        if self._limiter.available_tokens > 0:
            self._limiter.acquire_nowait()  # synchronous: nobody can slip in between check and take
        else:
            queue = self.settings.requests_queue_size
            if queue and self._waiting >= queue:
                raise TooManyRequests(f"queue full: {self._waiting} requests wait for a worker")
            self._waiting += 1
            try:
                await self._limiter.acquire()
            finally:
                self._waiting -= 1
        spans = self.metrics.span_duration
        spans.labels(span="queue").observe(time.monotonic() - started)
        self.metrics.image_started()
        try:
            max_bytes = options.max_src_file_size if options.max_src_file_size is not None \
                else self.settings.max_src_file_size
            with spans.labels(span="downloading_source_image").time():
                fetched = await self._fetch(source_url, max_bytes)
            with spans.labels(span="processing_image").time():
                rendered = await anyio.to_thread.run_sync(render, fetched.data, options, self.render_config,
                                                          client)
        finally:
            self._limiter.release()
            self.metrics.image_finished()
        self.renders += 1
        self.metrics.renders.inc()
        version = fetched.etag or fetched.last_modified or hashlib.sha256(fetched.data).hexdigest()
        etag = '"' + hashlib.sha256(f"{key}\n{version}".encode()).hexdigest()[:40] + '"'
        return Rendered(rendered.data, rendered.format, rendered.width, rendered.height, etag,
                        fetched.last_modified)


def _check_presets(policy: ParsePolicy) -> None:
    """Every preset must parse: a bad preset is fatal at start-up, as in imgproxy."""
    check = replace(policy, only_presets=False)
    for name in policy.presets:
        try:
            parse_path(f"/pr:{name}/plain/memory://preset-check", check)
        except Exception as exc:
            raise ConfigError(f"IMGORIGIN_PRESETS: preset {name!r} is invalid: {exc}") from None
