"""S3Storage: ``s3://bucket/key[?version]`` sources, and a byte store for shared results, on aiobotocore.

One aiobotocore client per storage, opened on first use and closed by ``aclose``. Credentials come from
the standard AWS chain (``AWS_*`` environment, shared files, instance roles) that aiobotocore's session
reads; this module never reads the environment itself.

Source URLs follow imgproxy: ``s3://bucket/key`` with the object version in the query part,
``s3://bucket/key?<versionId>`` (``?versionId=<id>`` is accepted too). The key is percent-decoded exactly
once; ``#`` has no special meaning (it is part of the key). A bucket that the allow/deny lists refuse
looks exactly like one that does not exist, and so does an object we may not read.

The result store is a second use of the same class: ``S3Storage.for_results(config, "s3://bucket/prefix")``
gives ``get(key)`` / ``put(key, data)`` on ``bucket`` under ``prefix/``; the allow/deny lists, which are
about source URLs, do not apply to it. Objects are written whole with PutObject, which S3 makes atomic.

Every exception from botocore, aiohttp and asyncio is translated in one place, ``_mapped_errors``.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from ..errors import InvalidImage, SourceNotFound, SourceTimeout, SourceUnavailable
from . import Fetched

__all__ = ["S3Config", "S3Location", "S3Storage", "parse_s3_url"]

_CHUNK = 64 * 1024
#: the names botocore itself accepts (legacy buckets may hold upper case and ``_``)
_BUCKET = re.compile(r"[a-zA-Z0-9.\-_]{1,255}")
#: error codes that mean "no such object" (or "you may not see it", which must look the same)
_NOT_FOUND_CODES = frozenset({
    "NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound", "404",
    "AccessDenied", "AllAccessDisabled", "403",
    "InvalidArgument",  # a malformed version id in the URL: the client's mistake, not an outage
    "InvalidBucketName", "KeyTooLongError",
})
#: botocore's model loader (a cache of parsed service JSON, no credentials), shared by every session
_shared: dict[str, Any] = {}
#: for the result store: only these mean "not stored yet"; a missing bucket or a refusal is an outage
_MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})


@dataclass(frozen=True, slots=True)
class S3Config:
    """How to reach S3 (or an S3-compatible store) and which buckets source URLs may name."""

    #: endpoint URL, e.g. ``http://127.0.0.1:9000``; ``""`` means AWS itself
    endpoint: str = ""
    region: str = "us-east-1"
    #: path-style addressing (``endpoint/bucket/key``), as most S3-compatible stores need
    path_style: bool = True
    #: buckets source URLs may name; empty means all
    allowed_buckets: tuple[str, ...] = ()
    #: buckets source URLs may never name (wins over ``allowed_buckets``)
    denied_buckets: tuple[str, ...] = ()
    #: connect and read timeout, in seconds
    timeout: float = 10.0
    #: the most connections kept open to the endpoint
    max_pool: int = 64


@dataclass(frozen=True, slots=True)
class S3Location:
    """A parsed ``s3://`` URL: bucket, decoded key and optional version id."""

    bucket: str
    key: str
    version: str | None = None


def parse_s3_url(url: str) -> S3Location:
    """Split ``s3://bucket/key[?version]``; SourceNotFound for anything that is not such a URL."""
    if url[:5].lower() != "s3://":
        raise SourceNotFound(f"not an s3 URL: {url!r}")
    rest, _, query = url[5:].partition("?")
    bucket, slash, raw_key = rest.partition("/")
    if not slash or not raw_key or not _BUCKET.fullmatch(bucket):
        raise SourceNotFound(f"bad s3 URL {url!r}: expected s3://bucket/key")
    try:
        key = unquote(raw_key, errors="strict")  # decode exactly once
        version = unquote(query.removeprefix("versionId="), errors="strict")
    except UnicodeDecodeError:
        raise SourceNotFound(f"bad percent-encoding in {url!r}") from None
    if "\x00" in key or "\x00" in version:
        raise SourceNotFound(f"bad s3 URL {url!r}")
    return S3Location(bucket, key, version or None)


class S3Storage:
    """Reads ``s3://`` sources and, when given a base location, stores shared results.

    Build it with ``S3Storage(config)`` for sources only, or ``S3Storage.for_results(config, base)`` for a
    result store (which can fetch sources as well). Call ``aclose`` when done.
    """

    def __init__(self, config: S3Config, *, bucket: str = "", prefix: str = "") -> None:
        self.config = config
        #: the result store's bucket and key prefix (``""`` or ending in ``/``)
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def for_results(cls, config: S3Config, base: str) -> S3Storage:
        """A storage whose ``get``/``put`` work under ``base``, ``s3://bucket`` or ``s3://bucket/prefix``."""
        if base[:5].lower() != "s3://":
            raise ValueError(f"result store must be an s3:// URL, not {base!r}")
        bucket, _, prefix = base[5:].partition("/")
        if not _BUCKET.fullmatch(bucket) or "?" in base:
            raise ValueError(f"bad result store URL {base!r}: expected s3://bucket[/prefix]")
        return cls(config, bucket=bucket, prefix=prefix)

    async def _get_client(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                cfg = self.config
                botocore_config = AioConfig(
                    connect_timeout=cfg.timeout,
                    read_timeout=cfg.timeout,
                    retries={"max_attempts": 2},
                    s3={"addressing_style": "path" if cfg.path_style else "auto"},
                    max_pool_connections=cfg.max_pool,
                )
                stack = AsyncExitStack()
                try:
                    self._client = await stack.enter_async_context(_session().create_client(
                        "s3", region_name=cfg.region, endpoint_url=cfg.endpoint or None,
                        config=botocore_config))
                except BaseException:
                    await stack.aclose()
                    raise
                self._stack = stack
        return self._client

    def _check_bucket(self, bucket: str) -> None:
        denied = bucket in self.config.denied_buckets
        if denied or (self.config.allowed_buckets and bucket not in self.config.allowed_buckets):
            raise SourceNotFound(f"bucket {bucket!r} is not allowed")

    async def fetch(self, url: str, *, max_bytes: int) -> Fetched:
        """The object ``url`` names, at most ``max_bytes`` long (0: no limit)."""
        where = parse_s3_url(url)
        self._check_bucket(where.bucket)
        params: dict[str, str] = {"Bucket": where.bucket, "Key": where.key}
        if where.version:
            params["VersionId"] = where.version
        with _mapped_errors(url, "source"):
            client = await self._get_client()
            response = await client.get_object(**params)
            async with response["Body"] as body:
                length = response.get("ContentLength")
                if max_bytes and isinstance(length, int) and length > max_bytes:
                    raise InvalidImage(f"{url!r} declares {length} bytes, over the {max_bytes} byte limit")
                data = await _read_capped(body, max_bytes)
        return Fetched(data, content_type=response.get("ContentType"),
                       etag=_etag(response.get("ETag"), response.get("VersionId")),
                       last_modified=_http_date(response.get("LastModified")))

    def _result_key(self, key: str) -> str:
        if not self.bucket:
            raise RuntimeError("this S3Storage has no result location; build it with S3Storage.for_results")
        if not key:
            raise ValueError("empty result key")
        return self.prefix + key

    async def get(self, key: str) -> bytes | None:
        """Stored result ``key``, or None when there is none; SourceUnavailable/SourceTimeout on outages."""
        name = self._result_key(key)
        try:
            with _mapped_errors(f"s3://{self.bucket}/{name}", "results"):
                client = await self._get_client()
                response = await client.get_object(Bucket=self.bucket, Key=name)
                async with response["Body"] as body:
                    data: bytes = await _read_capped(body, 0)
                    return data
        except SourceNotFound:
            return None

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` whole as result ``key``; SourceUnavailable/SourceTimeout on failure."""
        name = self._result_key(key)
        with _mapped_errors(f"s3://{self.bucket}/{name}", "results"):
            client = await self._get_client()
            await client.put_object(Bucket=self.bucket, Key=name, Body=data,
                                    ContentType="application/octet-stream")

    async def aclose(self) -> None:
        """Close the client and its connections; a later call opens a new one."""
        async with self._lock:
            stack, self._stack, self._client = self._stack, None, None
            if stack is not None:
                await stack.aclose()


def _session() -> Any:
    """A new aiobotocore session (its own credential chain) reusing the already parsed service models."""
    session = get_session()
    loader = _shared.get("data_loader")
    if loader is None:
        _shared["data_loader"] = session.get_component("data_loader")
    else:
        session.register_component("data_loader", loader)
    return session


async def _read_capped(body: Any, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await body.read(_CHUNK):
        size += len(chunk)
        if max_bytes and size > max_bytes:
            raise InvalidImage(f"source body over the {max_bytes} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _etag(etag: object, version: object) -> str | None:
    """S3's ETag, with the version id folded in when there is one (a new version is a new entity)."""
    if not isinstance(etag, str) or not etag:
        return None
    if not isinstance(version, str) or not version or version == "null":
        return etag
    weak = etag.startswith("W/")
    inner = etag.removeprefix("W/").strip('"')
    return f'{"W/" if weak else ""}"{inner}.{version}"'


def _http_date(value: object) -> str | None:
    """An RFC 7231 date (``Sun, 06 Nov 1994 08:49:37 GMT``) from botocore's aware datetime."""
    if value is None or not hasattr(value, "timestamp"):
        return None
    return email.utils.formatdate(value.timestamp(), usegmt=True)


@contextmanager
def _mapped_errors(what: str, purpose: Literal["source", "results"]) -> Iterator[None]:
    """Translate botocore's, aiohttp's and asyncio's exceptions into imgorigin's source errors.

    For sources, a refusal looks like a missing object (404), so nothing leaks about what exists. For
    the result store only a missing key is "not found" (``get`` turns it into None); a missing bucket or
    a refusal is a misconfiguration the caller treats as an outage.
    """
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        not_found = _NOT_FOUND_CODES if purpose == "source" else _MISSING_CODES
        if code in not_found or (purpose == "source" and status in (403, 404)) or (
                purpose == "results" and status == 404 and code != "NoSuchBucket"):
            raise SourceNotFound(f"{what}: {code or status}", status_code=404) from exc
        raise SourceUnavailable(f"{what}: S3 answered {code or status}: {error.get('Message', '')}") from exc
    except (ReadTimeoutError, ConnectTimeoutError, TimeoutError) as exc:
        raise SourceTimeout(f"timed out fetching {what}") from exc
    except (EndpointConnectionError, ConnectionClosedError, aiohttp.ClientError) as exc:
        raise SourceUnavailable(f"cannot reach S3 for {what}: {exc}") from exc
    except BotoCoreError as exc:
        raise SourceUnavailable(f"S3 error for {what}: {exc}") from exc
