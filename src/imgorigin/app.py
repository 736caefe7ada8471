"""The HTTP edge: Starlette routes, lifespan, and errors turned into short text/plain responses.

This is the only module that speaks HTTP. Paths are read from ASGI ``raw_path`` (still percent-encoded,
query dropped), because signatures are computed over exactly what the client sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__
from .config import Settings, parse_bind
from .errors import ImgOriginError, InvalidURL, RequestTimeout
from .headers import SECURITY_HEADERS, cache_control, content_disposition, filename_stem, safe_request_id
from .metrics import Metrics
from .pipeline import health_check, vips_memory
from .service import ImageRequest, Origin, Reply
from .sources import Source

__all__ = ["create_app"]

log = logging.getLogger("imgorigin")
access_log = logging.getLogger("imgorigin.access")

#: RFC 9211 Cache-Status for each outcome
_CACHE_STATUS = {
    "hit": "imgorigin; hit; detail=local",  # this replica: memory or disk
    "shared": "imgorigin; hit; detail=shared",
    "miss": "imgorigin; fwd=miss; stored",
    "coalesced": "imgorigin; fwd=miss; collapsed",
    "bypass": "imgorigin; fwd=bypass",
}
_LANDING = "imgorigin: an image origin. See /<signature>/<options>/plain/<source-url>.\n"


class _TimedResponse(Response):
    """A response that reports how long sending it took (imgproxy's ``streaming_image`` span)."""

    metrics: Metrics | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        await super().__call__(scope, receive, send)
        if self.metrics is not None:
            self.metrics.spans["streaming_image"].observe(time.monotonic() - started)


def _response(status: int, body: bytes, headers: Mapping[str, str], request_id: str, *,
              head: bool = False) -> Response:
    full = {**SECURITY_HEADERS, "X-Request-ID": request_id, **headers}
    response = _TimedResponse(b"" if head else body, status_code=status, headers=full)
    if head:
        response.headers["Content-Length"] = str(len(body))
    return response


def _error_response(error: ImgOriginError, request_id: str, *, head: bool) -> Response:
    body = error.public_message.encode()
    headers = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}
    if error.status_code == 429:
        headers["Retry-After"] = "1"
    return _response(error.status_code, body, headers, request_id, head=head)


def create_app(settings: Settings, *, sources: dict[str, Source] | None = None, server_workers: int = 0,
               serve_metrics: bool = True) -> Starlette:
    """The ASGI application for ``settings`` (``sources`` replaces the built-in ones, for tests).

    As one of several server processes, ``settings`` is this process's share, ``server_workers`` the
    whole server's worker count, and ``serve_metrics`` False: the supervisor serves the metrics."""
    metrics = Metrics(settings.prometheus_namespace, version=__version__, workers=settings.workers,
                      server_workers=server_workers, vips_memory=vips_memory)
    origin = Origin(settings, sources=sources, metrics=metrics)
    prefix = settings.path_prefix.encode()
    clients = anyio.Semaphore(settings.max_clients) if settings.max_clients else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with origin:
            app.state.origin = origin
            listener = None
            if settings.prometheus_bind and serve_metrics:
                host, port = parse_bind(settings.prometheus_bind)
                listener, _ = metrics.serve(host, port)
            monitor = asyncio.create_task(_watch_loop_lag(metrics))
            try:
                yield
            finally:
                monitor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await monitor
                if listener is not None:
                    listener.shutdown()
                    listener.server_close()

    async def endpoint(request: Request) -> Response:
        request_id = safe_request_id(request.headers.get("x-request-id"), _request_id())
        head = request.method == "HEAD"
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        raw = raw.split(b"?", 1)[0]
        if prefix:
            if not (raw == prefix or raw.startswith(prefix + b"/")):
                return _error_response(InvalidURL("outside the path prefix"), request_id, head=head)
            raw = raw[len(prefix):]
        try:
            path = raw.decode("ascii")
        except UnicodeDecodeError:
            return _error_response(InvalidURL("non-ASCII bytes in path"), request_id, head=head)
        if path in ("/health", "/health/"):
            return _health(request_id, head=head, draining=origin.draining)
        if path in ("", "/"):
            return _response(200, _LANDING.encode(), {"Content-Type": "text/plain; charset=utf-8"},
                             request_id, head=head)
        started = time.monotonic()
        metrics.requests.inc()
        metrics.requests_in_progress.inc()
        try:
            if clients is None:
                response, reply, error = await _answer(path, request, request_id, head=head)
            else:
                async with clients:
                    response, reply, error = await _answer(path, request, request_id, head=head)
        finally:
            metrics.requests_in_progress.dec()
        elapsed = time.monotonic() - started
        metrics.request_duration.observe(elapsed)
        metrics.status(response.status_code).inc()
        if error is not None:
            metrics.errors.labels(type=error.kind).inc()
        elif reply is not None and response.status_code == 200:
            metrics.output_bytes.labels(format=reply.rendered.format.value).inc(len(reply.rendered.data))
        access_log.info("request", extra={
            "request_id": request_id, "method": request.method, "path": _redacted(path),
            "status": response.status_code, "duration_ms": round(elapsed * 1000, 2),
            "bytes": len(reply.rendered.data) if reply is not None and response.status_code == 200 else 0,
            "cache": reply.cache_status if reply is not None else None,
            "source_host": _host(reply.source_url) if reply is not None else None,
            "error": str(error) if error is not None else None,
        })
        if isinstance(response, _TimedResponse):
            response.metrics = metrics
        return response

    async def _answer(path: str, request: Request, request_id: str, *,
                      head: bool) -> tuple[Response, Reply | None, ImgOriginError | None]:
        info = path.startswith("/info/")
        signature, sep, rest = path[len("/info/") if info else 1:].partition("/")
        try:
            if not signature or not sep or not rest:
                raise InvalidURL("invalid path: expected /<signature>/<options>/<source>")
            image_request = ImageRequest(signature, "/" + rest, request.headers.get("accept", ""),
                                         deadline=time.monotonic() + settings.timeout,
                                         **_client_hints(request) if settings.enable_client_hints else {})
            async with asyncio.timeout(settings.timeout):
                if info:
                    facts = await origin.info(image_request)
                    body = json.dumps(facts, separators=(",", ":")).encode()
                    headers = {"Content-Type": "application/json",
                               "Cache-Control": cache_control(settings.ttl)}
                    return _response(200, body, headers, request_id, head=head), None, None
                reply = await origin.image(image_request)
        except TimeoutError:
            error: ImgOriginError = RequestTimeout(f"request took over {settings.timeout}s")
        except ImgOriginError as exc:
            error = exc
        except Exception:
            log.exception("unexpected error for request %s", request_id)
            error = ImgOriginError("unexpected error")
        else:
            return _image_response(reply, request, request_id, head=head), reply, None
        return _error_response(error, request_id, head=head), None, error

    def _image_response(reply: Reply, request: Request, request_id: str, *, head: bool) -> Response:
        rendered = reply.rendered
        options = reply.options
        fallback = reply.fallback_status is not None
        if fallback:
            ttl = settings.fallback_image_ttl
            caching = f"max-age={ttl}, public" if ttl > 0 else "no-store"
        else:
            caching = cache_control(
                settings.ttl, expires=options.expires, now=time.time(),
                immutable=settings.cache_control_immutable,
                stale_while_revalidate=settings.stale_while_revalidate,
                stale_if_error=settings.stale_if_error)
        headers = {
            "Content-Type": rendered.content_type,
            "Cache-Control": caching,
            "Content-Disposition": content_disposition(
                options.filename or filename_stem(reply.source_url), rendered.format.extension,
                attachment=options.return_attachment if options.return_attachment is not None
                else settings.return_attachment),
            "X-Cache": reply.cache_status,
            "Cache-Status": _CACHE_STATUS[reply.cache_status],
        }
        if fallback:
            headers["X-Fallback-Image"] = "1"  # not the requested image: the source could not be fetched
        else:
            if rendered.etag:
                headers["ETag"] = rendered.etag
            if rendered.last_modified:
                headers["Last-Modified"] = rendered.last_modified
        if reply.vary:
            headers["Vary"] = ", ".join(reply.vary)
        if settings.allow_origin:
            headers["Access-Control-Allow-Origin"] = settings.allow_origin
        revalidated = rendered.etag in _etags(request.headers.get("if-none-match", ""))
        if not fallback and rendered.etag and revalidated:
            headers.pop("Content-Type")
            return _response(304, b"", headers, request_id, head=True)
        status = (settings.fallback_image_http_code or reply.fallback_status or 200) if fallback else 200
        return _response(status, rendered.data, headers, request_id, head=head)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        error = ImgOriginError("method not allowed" if status == 405 else "not found", status_code=status)
        error.public_message = "Method not allowed" if status == 405 else "Not found"
        response = _error_response(error, _request_id(), head=False)
        if status == 405:
            response.headers["Allow"] = "GET, HEAD"
        return response

    app = Starlette(routes=[_Everything(endpoint)], lifespan=lifespan,
                    exception_handlers={HTTPException: http_error})
    app.state.origin = origin
    return app


class _Everything(BaseRoute):
    """Sends every HTTP request to one endpoint, whatever its path holds (even an encoded newline):
    the endpoint reads the raw path itself. Methods other than GET and HEAD get 405."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.app: ASGIApp = request_response(endpoint)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Every HTTP request matches."""
        return (Match.FULL, {}) if scope["type"] == "http" else (Match.NONE, {})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the request."""
        if scope["method"] not in ("GET", "HEAD"):
            raise HTTPException(status_code=405)
        await self.app(scope, receive, send)


_REQUEST_IDS = itertools.count(1)
_PROCESS_ID = secrets.token_hex(8)


def _request_id() -> str:
    """A new request id: this process's random prefix and a counter (unique without a uuid4 each)."""
    return f"{_PROCESS_ID}{next(_REQUEST_IDS):016x}"


def _health(request_id: str, *, head: bool, draining: bool) -> Response:
    headers = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"}
    if draining:
        return _response(503, b"imgorigin is draining", headers, request_id, head=head)
    ok = health_check()
    if not ok:
        log.error("health check failed: libvips did not answer")
    body = b"imgorigin is running" if ok else b"Error"
    return _response(200 if ok else 500, body, headers, request_id, head=head)


_DPR = re.compile(r"[0-9]{1,2}(\.[0-9]{1,6})?")
_WIDTH = re.compile(r"[0-9]{1,5}")


def _client_hints(request: Request) -> dict[str, Any]:
    """Valid DPR (0 < dpr <= 8) and Width (> 0) client hints; anything malformed is ignored."""
    hints: dict[str, Any] = {}
    dpr = (request.headers.get("sec-ch-dpr") or request.headers.get("dpr") or "").strip()
    if _DPR.fullmatch(dpr) and 0 < float(dpr) <= 8:
        hints["dpr_hint"] = float(dpr)
    width = (request.headers.get("sec-ch-width") or request.headers.get("width") or "").strip()
    if _WIDTH.fullmatch(width) and int(width) > 0:
        hints["width_hint"] = int(width)
    return hints


def _redacted(path: str) -> str:
    """The request path with the signature replaced, for logs."""
    _, sep, rest = path[1:].partition("/")
    return f"/-/{rest}" if sep else path


def _host(url: str) -> str | None:
    return urlsplit(url).hostname if "://" in url else None


async def _watch_loop_lag(metrics: Metrics, interval: float = 0.25) -> None:
    """Measure how late the event loop wakes up (a blocked loop shows here first), and sample libvips'
    memory counters, so that a supervisor scraping several processes sees fresh values."""
    worst = 0.0
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - before - interval)
        worst = max(worst, lag)
        metrics.loop_lag.set(lag)
        metrics.loop_lag_max.set(worst)
        metrics.sample_vips()


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
