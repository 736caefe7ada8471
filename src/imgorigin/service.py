"""Origin: the request use case, verify → parse → check → cache → fetch → render → store. No HTTP here."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Self, cast

import anyio

from .cache import (
    ByteStore,
    Cache,
    DiskCache,
    MemoryCache,
    NullCache,
    Rendered,
    SourceCache,
    StoreCache,
    cache_key,
)
from .codec import ClientFeatures, client_features, setup, sniff
from .config import ConfigError, Settings
from .errors import (
    BadSignature,
    ImgOriginError,
    InvalidImage,
    InvalidURL,
    RequestTimeout,
    SignatureLooksLikeOption,
    SourceError,
    TooManyRequests,
)
from .feed import Feed
from .formats import ImageFormat
from .metrics import Metrics
from .options import Options, ParsePolicy, normalize_path, parse_path, to_path
from .pipeline import RenderConfig, describe, render
from .security import SourcePolicy, parse_allowed_networks
from .signing import Verifier
from .sources import Fetched, Source, Streamed, StreamingSource, build_sources, s3_config, scheme_of

__all__ = ["ImageRequest", "Origin", "Reply"]

#: accepted URLs remembered with their parsed options (about 1 KB each: 1 MB in all)
_ACCEPTED_URLS = 1024

log = logging.getLogger("imgorigin")

#: signature segments that ask for the unsigned constrained mode
UNSIGNED_SIGNATURES = frozenset({"unsafe", "insecure"})
#: the client-hint headers responses vary on when client hints are enabled
HINT_HEADERS = ("Sec-CH-DPR", "DPR", "Sec-CH-Width", "Width")


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """What the HTTP layer hands over: the signature segment, the raw path after it, request headers."""

    signature: str
    path: str
    accept: str = ""
    #: ``time.monotonic()`` by which the answer is due; work still running then is stopped
    deadline: float | None = None
    #: client hints (when enabled): device pixel ratio and width in physical pixels
    dpr_hint: float | None = None
    width_hint: int | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A rendered image and what the HTTP layer needs to answer with it."""

    rendered: Rendered
    options: Options
    source_url: str
    #: request headers the response depends on (for ``Vary``)
    vary: tuple[str, ...]
    #: "hit" (this replica's disk), "shared" (the shared tier), "miss" (rendered), "coalesced"
    #: (rendered once for several concurrent requests; this one waited), "bypass" (raw, fallback)
    cache_status: str
    #: the status the request would have had when the fallback image was served instead
    fallback_status: int | None = None


@dataclass(frozen=True, slots=True)
class _Job:
    key: str
    options: Options
    source_url: str
    client: ClientFeatures
    deadline: float | None


@dataclass(frozen=True, slots=True)
class _Outcome:
    rendered: Rendered
    status: str
    fallback_status: int | None = None


class Origin:
    """Owns the sources, the caches and the worker limit; answers image and info requests."""

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
        try:
            self.policy = SourcePolicy(
                allowed_sources=settings.allowed_sources,
                allow_loopback=settings.allow_loopback_source_addresses,
                allow_link_local=settings.allow_link_local_source_addresses,
                allow_private=settings.allow_private_source_addresses,
                allowed_networks=networks)
        except ValueError as exc:
            raise ConfigError(f"IMGORIGIN_ALLOWED_SOURCES: {exc}") from None
        self.parse_policy = ParsePolicy(presets=dict(settings.presets), only_presets=settings.only_presets,
                                        base_url=settings.base_url,
                                        allow_security_options=settings.allow_security_options)
        _check_presets(self.parse_policy)
        self.unsigned = _Unsigned.from_settings(settings)
        self.verifier = Verifier(settings.key, settings.salt, size=settings.signature_size,
                                 trusted=settings.trusted_signatures)
        self._given_sources = sources
        self._given_cache = cache
        self.sources: dict[str, Source] = {}
        self.memory: Cache = MemoryCache(settings.memory_cache_size) if settings.memory_cache_size \
            else NullCache()
        self.cache: Cache = NullCache()
        self.shared: Cache | None = None
        self.source_cache: SourceCache[Fetched] | None = None
        if settings.source_cache_size:
            self.source_cache = SourceCache(settings.source_cache_size, lambda f: len(f.data))
        self.render_config: RenderConfig | None = None
        self.fallback: bytes | None = None
        self._limiter = anyio.CapacityLimiter(settings.workers)
        self._waiting = 0
        self._inflight: dict[str, asyncio.Task[_Outcome]] = {}
        self._accepted: dict[tuple[str, str, float | None, int | None], tuple[Options, str, str]] = {}
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        available = setup(concurrency=1)
        self.sources = self._given_sources if self._given_sources is not None else build_sources(
            self.settings, self.policy)
        for source in {id(s): s for s in self.sources.values()}.values():
            self._stack.push_async_callback(source.aclose)
        s = self.settings
        watermark = await self._load_image("WATERMARK", s.watermark_data, s.watermark_path, s.watermark_url)
        self.fallback = await self._load_image("FALLBACK_IMAGE", s.fallback_image_data, s.fallback_image_path,
                                               s.fallback_image_url)
        self.render_config = RenderConfig.from_settings(s, available, watermark)
        if self._given_cache is not None:
            self.cache = self._given_cache
        elif s.cache_dir:
            try:
                self.cache = DiskCache(s.cache_dir, s.cache_size)
            except Exception as exc:  # an unusable cache directory must not stop the server
                log.error("disk cache %s unusable, serving without it: %s", s.cache_dir, exc)
        self._stack.push_async_callback(self.cache.aclose)
        if s.result_storage:
            self.shared = StoreCache(self._result_store(s.result_storage))
            self._stack.push_async_callback(self.shared.aclose)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stack.aclose()

    async def _load_image(self, name: str, data: str, path: str, url: str) -> bytes | None:
        """The watermark or fallback image from base64 data, a file or a URL; ConfigError if unusable."""
        try:
            if data:
                blob = base64.b64decode(data, validate=True)
            elif path:
                blob = await anyio.Path(path).read_bytes()
            elif url:
                scheme = scheme_of(url)
                if scheme not in self.sources:
                    raise ValueError(f"no source handles {scheme!r} URLs")
                blob = (await self.sources[scheme].fetch(url, max_bytes=self.settings.max_src_file_size)).data
            else:
                return None
            sniff(blob)
        except (OSError, ValueError, binascii.Error, SourceError, InvalidImage) as exc:
            raise ConfigError(f"IMGORIGIN_{name}_*: cannot use the image: {exc}") from None
        return blob

    def _result_store(self, url: str) -> ByteStore:
        if url.startswith("s3://"):
            from .sources.s3 import S3Storage

            return S3Storage.for_results(s3_config(self.settings), url)
        from .sources.local import LocalStore

        return LocalStore(url[len("local://"):])

    @property
    def vary(self) -> tuple[str, ...]:
        """Request headers every image response depends on."""
        s = self.settings
        accept = ("Accept",) if s.auto_webp or s.auto_avif or s.enforce_webp or s.enforce_avif else ()
        return accept + (HINT_HEADERS if s.enable_client_hints else ())

    # --- parsing ---------------------------------------------------------------------------------

    def parse(self, request: ImageRequest) -> tuple[Options, str]:
        """Verify the signature and parse the path; raises before anything is fetched or read."""
        path = normalize_path(request.path)
        unsigned = (self.verifier.enabled and self.unsigned.enabled
                    and request.signature in UNSIGNED_SIGNATURES)
        if not self.verifier.enabled and ":" in request.signature:
            raise SignatureLooksLikeOption(f"signature segment {request.signature!r} holds an option")
        if not unsigned:
            self.verifier.verify(request.signature, path)
        options, source_url = parse_path(path, self.parse_policy, base=self._hinted(request))
        if unsigned:
            self.unsigned.check(options)
            if not self.settings.allowed_sources:
                raise BadSignature("unsigned URLs need IMGORIGIN_ALLOWED_SOURCES")
            self.policy.check_url(source_url)
        _check_expiry(options)
        return options, source_url

    def _hinted(self, request: ImageRequest) -> Options | None:
        """Defaults from client hints (imgproxy: width in CSS pixels = hint width / dpr)."""
        if not self.settings.enable_client_hints or (request.dpr_hint is None and request.width_hint is None):
            return None
        dpr = request.dpr_hint or 1.0
        width = round(request.width_hint / dpr) if request.width_hint else 0
        return Options(dpr=dpr, width=width)

    def _checked(self, request: ImageRequest) -> tuple[Options, str, str]:
        """Options, source URL and canonical path of an allowed request. Accepted URLs are remembered
        (a hot URL is verified and parsed once, not on every cache hit); only expiry is checked again."""
        memo = (request.signature, request.path, request.dpr_hint, request.width_hint)
        known = self._accepted.get(memo)
        if known is not None:
            _check_expiry(known[0])
            return known
        options, source_url = self.parse(request)
        scheme = scheme_of(source_url)
        if scheme not in self.sources:
            raise SourceError(f"no source handles {scheme!r} URLs")
        self.policy.check_url(source_url)
        known = (options, source_url, to_path(options, source_url))
        if len(self._accepted) >= _ACCEPTED_URLS:
            del self._accepted[next(iter(self._accepted))]  # the oldest
        self._accepted[memo] = known
        return known

    # --- images ----------------------------------------------------------------------------------

    async def image(self, request: ImageRequest) -> Reply:
        """Answer one image request from a cache, or by fetching and rendering once for all callers."""
        options, source_url, canonical = self._checked(request)
        if options.raw:
            return await self._raw(options, source_url)
        client = self._client(request.accept)
        variant = [f"webp={int(client.webp)},avif={int(client.avif)}"] if "Accept" in self.vary else []
        if self.settings.enable_client_hints:
            variant.append(f"dpr={request.dpr_hint},width={request.width_hint}")
        key = cache_key(canonical, ";".join(variant))
        rendered = await self.memory.get(key)
        if rendered is not None:
            self.metrics.hits["memory"].inc()
            return Reply(rendered, options, source_url, self.vary, "hit")
        rendered = await self.cache.get(key)
        if rendered is not None:
            self.metrics.hits["disk"].inc()
            await self.memory.set(key, rendered)
            return Reply(rendered, options, source_url, self.vary, "hit")
        outcome = await self._coalesced(_Job(key, options, source_url, client, request.deadline))
        return Reply(outcome.rendered, options, source_url, self.vary, outcome.status,
                     outcome.fallback_status)

    def _client(self, accept: str) -> ClientFeatures:
        s = self.settings
        return client_features(accept, webp=s.auto_webp or s.enforce_webp,
                               avif=s.auto_avif or s.enforce_avif)

    async def _coalesced(self, job: _Job) -> _Outcome:
        """Produce once for all concurrent requests with one key (the work outlives a cancelled caller)."""
        task = self._inflight.get(job.key)
        led = task is None
        if task is None:
            task = asyncio.create_task(self._produce(job))
            self._inflight[job.key] = task
            task.add_done_callback(lambda t: self._inflight.pop(job.key, None)
                                   if self._inflight.get(job.key) is t else None)
        else:
            self.metrics.coalesced.inc()
        outcome = await asyncio.shield(task)
        return outcome if led or outcome.fallback_status is not None else replace(outcome, status="coalesced")

    async def _produce(self, job: _Job) -> _Outcome:
        """The shared tier's copy (also stored on this replica's disk), or a fresh render stored in both.
        A fallback image stands in for a source that cannot be fetched, and is never stored."""
        if self.shared is not None:
            rendered = await self.shared.get(job.key)
            if rendered is not None:
                self.metrics.hits["shared"].inc()
                await self.memory.set(job.key, rendered)
                await self.cache.set(job.key, rendered)
                return _Outcome(rendered, "shared")
        self.metrics.cache_misses.inc()
        await self._worker()  # admission covers the download too: the queue bounds fetches and memory
        self.metrics.image_started()
        try:
            try:
                rendered = await self._fetch_and_render(job)
            except SourceError as exc:
                if self.fallback is None:
                    raise
                log.info("serving the fallback image for %s: %s", job.source_url, exc)
                rendered = await self._render(job, Fetched(self.fallback))
                return _Outcome(rendered, "bypass", fallback_status=exc.status_code)
        finally:
            self._limiter.release()
            self.metrics.image_finished()
        await self.memory.set(job.key, rendered)
        await self.cache.set(job.key, rendered)
        if self.shared is not None:
            await self.shared.set(job.key, rendered)
        return _Outcome(rendered, "miss")

    def _max_bytes(self, options: Options) -> int:
        return options.max_src_file_size if options.max_src_file_size is not None \
            else self.settings.max_src_file_size

    async def _fetch(self, source_url: str, max_bytes: int) -> Fetched:
        source = self.sources[scheme_of(source_url)]

        async def fetch() -> Fetched:
            with self.metrics.spans["downloading_source_image"].time():
                fetched = await source.fetch(source_url, max_bytes=max_bytes)
            self.metrics.source_fetches.inc()
            self.metrics.source_bytes.inc(len(fetched.data))
            return fetched

        if self.source_cache is None:
            return await fetch()
        fetched = await self.source_cache.get_or_fetch(source_url, fetch)
        if max_bytes and len(fetched.data) > max_bytes:
            raise InvalidImage(f"source is {len(fetched.data)} bytes, over the {max_bytes} byte limit")
        return fetched

    async def _worker(self) -> None:
        """Take a worker slot, waiting in the queue; refuse at once when the queue is full."""
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
        self.metrics.spans["queue"].observe(time.monotonic() - started)

    async def _fetch_and_render(self, job: _Job) -> Rendered:
        """Fetch the source and render it: decoding as it downloads where the source can stream."""
        source = self.sources[scheme_of(job.source_url)]
        max_bytes = self._max_bytes(job.options)
        if self.settings.stream_sources and self.source_cache is None and hasattr(source, "stream"):
            return await self._render_streamed(job, cast(StreamingSource, source), max_bytes)
        return await self._render(job, await self._fetch(job.source_url, max_bytes))

    async def _render(self, job: _Job, fetched: Fetched) -> Rendered:
        """Render ``fetched`` in a worker thread (the caller holds a worker slot)."""
        rendered = await self._rendered(job, fetched.data)
        version = fetched.etag or fetched.last_modified or hashlib.sha256(fetched.data).hexdigest()
        return _stamped(job.key, rendered, version, fetched.last_modified)

    async def _rendered(self, job: _Job, data: bytes | Feed) -> Rendered:
        assert self.render_config is not None
        with self.metrics.spans["processing_image"].time():
            rendered = await anyio.to_thread.run_sync(functools.partial(
                render, data, job.options, self.render_config, job.client, deadline=job.deadline))
        self.metrics.renders.inc()
        return rendered

    async def _render_streamed(self, job: _Job, source: StreamingSource, max_bytes: int) -> Rendered:
        """Render while the source downloads. The result counts only once the whole body has arrived
        within its cap; a download that fails midway fails the request with the download's error."""
        started = time.monotonic()
        opened = False
        try:
            async with source.stream(job.source_url, max_bytes=max_bytes) as body:
                opened = True  # from here on, the pump times the download
                rendered, feed = await self._download_and_render(job, body, started)
        except BaseException:
            if not opened:
                self.metrics.spans["downloading_source_image"].observe(time.monotonic() - started)
            raise
        return _stamped(job.key, rendered, body.etag or body.last_modified or feed.digest, body.last_modified)

    async def _download_and_render(self, job: _Job, body: Streamed, started: float) -> tuple[Rendered, Feed]:
        """Download ``body`` into a Feed while rendering from it; the download's own outcome (its cap, its
        errors) decides first, as it does when the whole body is read before rendering, so streaming
        never changes the answer."""
        feed = Feed(job.deadline)
        pump = asyncio.create_task(self._pump(body, feed, started))
        try:
            rendered = await self._rendered(job, feed)
            await pump
        except ImgOriginError as exc:
            await pump
            if feed.error is not None:
                raise _download_error(feed.error) from exc
            raise
        finally:
            if not pump.done():  # cancelled: stop the download too
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
        if feed.error is not None:
            raise _download_error(feed.error)
        return rendered, feed

    async def _pump(self, body: Streamed, feed: Feed, started: float) -> None:
        """Hand the body to ``feed`` as it arrives; a failure is recorded in the feed, not raised."""
        size = 0
        try:
            async for chunk in body.chunks:
                feed.put(chunk)
                size += len(chunk)
        except ImgOriginError as exc:
            feed.fail(exc)
            return
        except asyncio.CancelledError:
            feed.fail(SourceError("the download was stopped"))
            raise
        finally:
            self.metrics.spans["downloading_source_image"].observe(time.monotonic() - started)
        feed.close()
        self.metrics.source_fetches.inc()
        self.metrics.source_bytes.inc(size)

    async def _raw(self, options: Options, source_url: str) -> Reply:
        """``raw:1``: the source's bytes as they are (an image type we recognise), never cached."""
        fetched = await self._fetch(source_url, self._max_bytes(options))
        fmt = sniff(fetched.data)
        etag = fetched.etag or '"' + hashlib.sha256(fetched.data).hexdigest()[:40] + '"'
        rendered = Rendered(fetched.data, fmt, 0, 0, etag, fetched.last_modified)
        return Reply(rendered, options, source_url, (), "bypass")

    # --- info --------------------------------------------------------------------------------------

    async def info(self, request: ImageRequest) -> dict[str, Any]:
        """Facts about the source and a placeholder for pages to paint before the image loads."""
        options, source_url, _ = self._checked(request)
        fetched = await self._fetch(source_url, self._max_bytes(options))
        assert self.render_config is not None
        await self._worker()
        try:
            return await anyio.to_thread.run_sync(describe, fetched.data, self.render_config)
        finally:
            self._limiter.release()


def _check_expiry(options: Options) -> None:
    """InvalidURL once the URL's ``exp`` time has passed."""
    if options.expires > 0 and options.expires < time.time():
        raise InvalidURL(f"expired URL (expires={options.expires})")


def _stamped(key: str, rendered: Rendered, version: str, last_modified: str | None) -> Rendered:
    """``rendered`` with its strong ETag (the variant's key and the source's version) and Last-Modified."""
    etag = '"' + hashlib.sha256(f"{key}\n{version}".encode()).hexdigest()[:40] + '"'
    return Rendered(rendered.data, rendered.format, rendered.width, rendered.height, etag, last_modified)


def _download_error(error: BaseException) -> ImgOriginError:
    """The request's error for a download that stopped: its own, or a timeout at the deadline."""
    if isinstance(error, ImgOriginError):
        return error
    return RequestTimeout(f"the source did not arrive in time: {error}")


@dataclass(frozen=True, slots=True)
class _Unsigned:
    """The unsigned constrained mode: with signing on, ``unsafe``/``insecure`` URLs are served only
    for the widths, qualities and formats listed, and only from ALLOWED_SOURCES."""

    widths: frozenset[int]
    qualities: frozenset[int]
    formats: frozenset[ImageFormat]

    @property
    def enabled(self) -> bool:
        return bool(self.widths)

    @classmethod
    def from_settings(cls, s: Settings) -> _Unsigned:
        try:
            widths = frozenset(int(w) for w in s.unsigned_widths)
            qualities = frozenset(int(q) for q in s.unsigned_qualities)
            formats = frozenset(ImageFormat.from_name(f) for f in s.unsigned_formats)
        except ValueError as exc:
            raise ConfigError(f"IMGORIGIN_UNSIGNED_*: {exc}") from None
        if any(w <= 0 for w in widths) or any(not 0 < q <= 100 for q in qualities):
            raise ConfigError("IMGORIGIN_UNSIGNED_WIDTHS/_QUALITIES: expected positive widths and "
                              "qualities from 1 to 100")
        return cls(widths, qualities, formats)

    def check(self, options: Options) -> None:
        """BadSignature unless ``options`` is a plain resize within the allowed values."""
        if options.width not in self.widths:
            raise BadSignature(f"unsigned URL: width {options.width} is not allowed")
        if options.quality and options.quality not in self.qualities:
            raise BadSignature(f"unsigned URL: quality {options.quality} is not allowed")
        if options.format is not None and options.format not in self.formats:
            raise BadSignature(f"unsigned URL: format {options.format.value} is not allowed")
        rest = replace(options, width=0, quality=0, format=None)
        if rest != Options():  # resizing_type too must stay fit: rs:fit:W:0 is the only resize allowed
            raise BadSignature("unsigned URL: only width, quality and format may be given")


def _check_presets(policy: ParsePolicy) -> None:
    """Every preset must parse: a bad preset is fatal at start-up, as in imgproxy."""
    check = replace(policy, only_presets=False)
    for name in policy.presets:
        try:
            parse_path(f"/pr:{name}/plain/memory://preset-check", check)
        except Exception as exc:
            raise ConfigError(f"IMGORIGIN_PRESETS: preset {name!r} is invalid: {exc}") from None
