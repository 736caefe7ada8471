"""The HTTP edge: Starlette routes, lifespan, and errors turned into short text/plain responses.

This is the only module that speaks HTTP. Paths are read from ASGI ``raw_path`` (still percent-encoded,
query dropped), because signatures are computed over exactly what the client sent.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .config import Settings
from .errors import ImgOriginError, InvalidURL, RequestTimeout
from .headers import SECURITY_HEADERS, cache_control, content_disposition, filename_stem, safe_request_id
from .pipeline import health_check
from .service import ImageRequest, Origin, Reply
from .sources import Source

__all__ = ["create_app"]

log = logging.getLogger("imgorigin")

#: RFC 9211 Cache-Status for each outcome
_CACHE_STATUS = {
    "hit": "imgorigin; hit; detail=disk",
    "shared": "imgorigin; hit; detail=shared",
    "miss": "imgorigin; fwd=miss; stored",
    "coalesced": "imgorigin; fwd=miss; collapsed",
}
_LANDING = "imgorigin: an image origin. See /<signature>/<options>/plain/<source-url>.\n"


def _response(status: int, body: bytes, headers: Mapping[str, str], request_id: str, *,
              head: bool = False) -> Response:
    full = {**SECURITY_HEADERS, "X-Request-ID": request_id, **headers}
    response = Response(b"" if head else body, status_code=status, headers=full)
    if head:
        response.headers["Content-Length"] = str(len(body))
    return response


def _error_response(error: ImgOriginError, request_id: str, *, head: bool) -> Response:
    body = error.public_message.encode()
    headers = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}
    return _response(error.status_code, body, headers, request_id, head=head)


def create_app(settings: Settings, *, sources: dict[str, Source] | None = None) -> Starlette:
    """The ASGI application for ``settings`` (``sources`` replaces the built-in ones, for tests)."""
    origin = Origin(settings, sources=sources)
    prefix = settings.path_prefix.encode()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with origin:
            app.state.origin = origin
            yield

    async def endpoint(request: Request) -> Response:
        request_id = safe_request_id(request.headers.get("x-request-id"), uuid.uuid4().hex)
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
            return _health(request_id, head=head)
        if path in ("", "/"):
            return _response(200, _LANDING.encode(), {"Content-Type": "text/plain; charset=utf-8"},
                             request_id, head=head)
        signature, sep, rest = path[1:].partition("/")
        started = time.monotonic()
        try:
            if not signature or not sep or not rest:
                raise InvalidURL("invalid path: expected /<signature>/<options>/<source>")
            with anyio.fail_after(settings.timeout):
                reply = await origin.image(ImageRequest(signature, "/" + rest,
                                                        request.headers.get("accept", "")))
        except TimeoutError:
            error: ImgOriginError = RequestTimeout(f"request took over {settings.timeout}s")
        except ImgOriginError as exc:
            error = exc
        except Exception:
            log.exception("unexpected error for request %s", request_id)
            error = ImgOriginError("unexpected error")
        else:
            return _image_response(reply, request, request_id, head=head)
        log.info("request %s failed with %d after %.3fs: %s", request_id, error.status_code,
                 time.monotonic() - started, error)
        return _error_response(error, request_id, head=head)

    def _image_response(reply: Reply, request: Request, request_id: str, *, head: bool) -> Response:
        rendered = reply.rendered
        options = reply.options
        headers = {
            "Content-Type": rendered.content_type,
            "Cache-Control": cache_control(
                settings.ttl, expires=options.expires, now=time.time(),
                immutable=settings.cache_control_immutable,
                stale_while_revalidate=settings.stale_while_revalidate,
                stale_if_error=settings.stale_if_error),
            "Content-Disposition": content_disposition(
                options.filename or filename_stem(reply.source_url), rendered.format.extension,
                attachment=options.return_attachment if options.return_attachment is not None
                else settings.return_attachment),
            "X-Cache": reply.cache_status,
            "Cache-Status": _CACHE_STATUS[reply.cache_status],
        }
        if rendered.etag:
            headers["ETag"] = rendered.etag
        if rendered.last_modified:
            headers["Last-Modified"] = rendered.last_modified
        if reply.vary_accept:
            headers["Vary"] = "Accept"
        if settings.allow_origin:
            headers["Access-Control-Allow-Origin"] = settings.allow_origin
        if rendered.etag and rendered.etag in _etags(request.headers.get("if-none-match", "")):
            headers.pop("Content-Type")
            return _response(304, b"", headers, request_id, head=True)
        return _response(200, rendered.data, headers, request_id, head=head)

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        error = ImgOriginError("method not allowed" if status == 405 else "not found", status_code=status)
        error.public_message = "Method not allowed" if status == 405 else "Not found"
        response = _error_response(error, uuid.uuid4().hex, head=False)
        if status == 405:
            response.headers["Allow"] = "GET, HEAD"
        return response

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "HEAD"])],
                    lifespan=lifespan, exception_handlers={HTTPException: method_not_allowed})
    app.state.origin = origin
    return app


def _health(request_id: str, *, head: bool) -> Response:
    ok = health_check()
    body = b"imgorigin is running" if ok else b"Error"
    headers = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"}
    return _response(200 if ok else 500, body, headers, request_id, head=head)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
