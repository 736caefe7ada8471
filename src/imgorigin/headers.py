"""Response header values built safely: Content-Disposition (RFC 6266/8187) and Cache-Control.

Everything returned here is printable ASCII with no CR/LF, so no option can inject a header or make
the HTTP layer fail on encoding.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit

__all__ = ["SECURITY_HEADERS", "cache_control", "content_disposition", "filename_stem", "safe_request_id"]

SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox",
}

_TOKEN_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]")
#: longest file name put in Content-Disposition, in UTF-8 bytes (a proxy's header buffer is 4-8 KB)
MAX_FILENAME_BYTES = 255


def filename_stem(source_url: str) -> str:
    """The last path element of the source URL without its extension ("image" when there is none)."""
    path = urlsplit(source_url).path if "://" in source_url else source_url
    name = unquote(path.rsplit("/", 1)[-1])
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return stem or "image"


def content_disposition(stem: str, extension: str, *, attachment: bool) -> str:
    """``inline``/``attachment`` with an ASCII ``filename`` fallback and a UTF-8 ``filename*``."""
    kind = "attachment" if attachment else "inline"
    stem = stem.encode()[:MAX_FILENAME_BYTES].decode("utf-8", "ignore")  # cut on a character boundary
    name = f"{stem}.{extension}"
    if not _TOKEN_UNSAFE.search(name):
        return f'{kind}; filename="{name}"'
    # anything beyond [A-Za-z0-9._ -] travels only in filename*; the plain fallback says nothing a
    # naive parser could take for a parameter
    encoded = quote(name, safe="!#$&+-.^_`|~")
    return f"{kind}; filename=\"image.{extension}\"; filename*=UTF-8''{encoded}"


def cache_control(ttl: int, *, expires: int = 0, now: float = 0.0, immutable: bool = False,
                  stale_while_revalidate: int = 0, stale_if_error: int = 0) -> str:
    """``max-age=N, public`` from the TTL, shortened by an ``expires`` timestamp; ``no-cache`` at 0."""
    max_age = ttl
    if expires > 0:
        max_age = min(max_age, max(0, int(expires - now)))
    if max_age <= 0:
        return "no-cache"
    parts = [f"max-age={max_age}", "public"]
    if immutable and not expires:
        parts.append("immutable")
    if stale_while_revalidate:
        parts.append(f"stale-while-revalidate={stale_while_revalidate}")
    if stale_if_error:
        parts.append(f"stale-if-error={stale_if_error}")
    return ", ".join(parts)


_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def safe_request_id(incoming: str | None, fallback: str) -> str:
    """The client's X-Request-ID when it is a short safe token, otherwise ``fallback``."""
    return incoming if incoming and _REQUEST_ID.fullmatch(incoming) else fallback
