"""S3Storage against a real S3 API: moto in server mode on 127.0.0.1 (see s3server.py)."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from imgorigin.errors import InvalidImage, SourceNotFound, SourceTimeout, SourceUnavailable
from imgorigin.sources import Fetched
from imgorigin.sources.s3 import S3Config, S3Location, S3Storage, parse_s3_url
from s3server import S3Server, free_port

T = TypeVar("T")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def run_with(storage: S3Storage, work: Callable[[S3Storage], Awaitable[T]]) -> T:
    """Run ``work(storage)`` in a fresh event loop and always close the storage."""

    async def main() -> T:
        try:
            return await work(storage)
        finally:
            await storage.aclose()

    return asyncio.run(main())


def fetch(config: S3Config, url: str, max_bytes: int = 0) -> Fetched:
    return run_with(S3Storage(config), lambda s: s.fetch(url, max_bytes=max_bytes))


@pytest.fixture
def s3(s3_env: S3Server) -> S3Server:
    return s3_env


@pytest.fixture
def config(s3: S3Server) -> S3Config:
    return S3Config(endpoint=s3.endpoint, timeout=5)


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = s3.new_bucket("src")
    s3.create_bucket(name)
    return name


# -- fetching sources ---------------------------------------------------------------------------------


def test_fetch_returns_bytes_type_etag_and_date(s3: S3Server, config: S3Config, bucket: str) -> None:
    put = s3.put_object(bucket, "images/pic.png", PNG, content_type="image/png")
    before = time.time()
    got = fetch(config, f"s3://{bucket}/images/pic.png", max_bytes=10_000)
    assert got.data == PNG
    assert got.content_type == "image/png"
    assert got.etag == put["ETag"]
    assert got.etag.startswith('"')
    assert got.last_modified is not None
    assert got.last_modified.endswith(" GMT")
    parsed = email.utils.parsedate_to_datetime(got.last_modified)
    assert abs(parsed.timestamp() - before) < 60


def test_missing_key_is_not_found_404(config: S3Config, bucket: str) -> None:
    with pytest.raises(SourceNotFound) as info:
        fetch(config, f"s3://{bucket}/nope.png")
    assert info.value.status_code == 404


def test_missing_bucket_is_not_found(s3: S3Server, config: S3Config) -> None:
    with pytest.raises(SourceNotFound) as info:
        fetch(config, f"s3://{s3.new_bucket('gone')}/a.png")
    assert info.value.status_code == 404


def test_denied_and_unlisted_buckets_look_missing(s3: S3Server, config: S3Config, bucket: str) -> None:
    s3.put_object(bucket, "a.png", PNG)
    url = f"s3://{bucket}/a.png"
    assert fetch(config, url).data == PNG
    denied = S3Config(endpoint=s3.endpoint, denied_buckets=(bucket,))
    unlisted = S3Config(endpoint=s3.endpoint, allowed_buckets=("some-other-bucket",))
    both = S3Config(endpoint=s3.endpoint, allowed_buckets=(bucket,), denied_buckets=(bucket,))
    for refused in (denied, unlisted, both):
        with pytest.raises(SourceNotFound) as info:
            fetch(refused, url)
        assert type(info.value) is SourceNotFound
        assert info.value.status_code == 404
    assert fetch(S3Config(endpoint=s3.endpoint, allowed_buckets=(bucket,)), url).data == PNG


def test_version_id_in_the_query_selects_the_version(s3: S3Server, config: S3Config) -> None:
    name = s3.new_bucket("ver")
    s3.create_bucket(name, versioned=True)
    first = s3.put_object(name, "v.png", b"first version")
    second = s3.put_object(name, "v.png", b"second version!")
    v1, v2 = first["VersionId"], second["VersionId"]
    assert v1
    assert v2
    assert v1 != v2

    got1 = fetch(config, f"s3://{name}/v.png?{v1}")
    got2 = fetch(config, f"s3://{name}/v.png?{v2}")
    latest = fetch(config, f"s3://{name}/v.png")
    assert got1.data == b"first version"
    assert got2.data == b"second version!"
    assert latest.data == b"second version!"
    assert fetch(config, f"s3://{name}/v.png?versionId={v1}").data == b"first version"
    # the version is part of the entity tag: two versions never share one
    assert got1.etag is not None
    assert v1 in got1.etag
    assert got2.etag is not None
    assert v2 in got2.etag
    assert got1.etag != got2.etag
    with pytest.raises(SourceNotFound):
        fetch(config, f"s3://{name}/v.png?no-such-version")


def test_byte_cap(s3: S3Server, config: S3Config, bucket: str) -> None:
    s3.put_object(bucket, "big.png", PNG)
    url = f"s3://{bucket}/big.png"
    with pytest.raises(InvalidImage):
        fetch(config, url, max_bytes=len(PNG) - 1)
    assert fetch(config, url, max_bytes=len(PNG)).data == PNG
    assert fetch(config, url, max_bytes=0).data == PNG  # 0: no limit


def test_stream_over_the_cap_is_refused_while_reading() -> None:
    from imgorigin.sources.s3 import _read_capped

    class Body:
        """A body whose length was not declared: the cap must hold while streaming."""

        def __init__(self) -> None:
            self.chunks = [b"x" * 100] * 5

        async def read(self, amt: int) -> bytes:
            return self.chunks.pop() if self.chunks else b""

    with pytest.raises(InvalidImage):
        asyncio.run(_read_capped(Body(), 250))
    assert asyncio.run(_read_capped(Body(), 500)) == b"x" * 500


def test_keys_are_percent_decoded_once(s3: S3Server, config: S3Config, bucket: str) -> None:
    s3.put_object(bucket, "dir/a b%c+d é.png", b"spaces")
    s3.put_object(bucket, "dir/lit%20eral.png", b"literal")
    s3.put_object(bucket, "dir/q#hash.png", b"hash")
    assert fetch(config, f"s3://{bucket}/dir/a%20b%25c+d%20%C3%A9.png").data == b"spaces"
    assert fetch(config, f"s3://{bucket}/dir/a b%25c+d é.png").data == b"spaces"
    assert fetch(config, f"s3://{bucket}/dir/lit%2520eral.png").data == b"literal"
    assert fetch(config, f"s3://{bucket}/dir/q%23hash.png").data == b"hash"
    with pytest.raises(SourceNotFound):
        fetch(config, f"s3://{bucket}/dir/lit%20eral.png")  # decoded once → "lit eral.png", missing


@pytest.mark.parametrize("url", [
    "http://bucket/key", "s3://", "s3://bucket", "s3://bucket/", "s3:///key", "s3://bad!bucket/k",
    "s3://bu cket/key", "s3://bucket/%ff", "s3://bucket/a%00b",
])
def test_malformed_urls_are_not_found(url: str) -> None:
    with pytest.raises(SourceNotFound):
        parse_s3_url(url)


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://b-1/x/y%3Fz.png?abc") == S3Location("b-1", "x/y?z.png", "abc")
    assert parse_s3_url("S3://b-1/k?") == S3Location("b-1", "k", None)
    assert parse_s3_url("s3://b-1/k?versionId=v%2B1") == S3Location("b-1", "k", "v+1")


# -- the result store ---------------------------------------------------------------------------------


def test_results_round_trip_and_missing_is_none(s3: S3Server, config: S3Config) -> None:
    name = s3.new_bucket("results")
    s3.create_bucket(name)
    blob = bytes(range(256)) * 100

    async def work(store: S3Storage) -> tuple[bytes | None, bytes | None, bytes | None]:
        missing = await store.get("abc123")
        await store.put("abc123", blob)
        hit = await store.get("abc123")
        await store.put("abc123", b"replaced")
        return missing, hit, await store.get("abc123")

    store = S3Storage.for_results(config, f"s3://{name}/cache/v1/")
    assert store.bucket == name
    assert store.prefix == "cache/v1/"
    assert run_with(store, work) == (None, blob, b"replaced")
    # stored under the prefix, and readable as an ordinary object
    assert fetch(config, f"s3://{name}/cache/v1/abc123").data == b"replaced"
    no_prefix = S3Storage.for_results(config, f"s3://{name}")
    assert no_prefix.prefix == ""
    assert run_with(no_prefix, lambda s: s.get("abc123")) is None


def test_results_store_outages_raise(s3: S3Server, config: S3Config) -> None:
    # a missing bucket is a misconfiguration, not a miss
    absent = f"s3://{s3.new_bucket('absent')}/p"
    with pytest.raises(SourceUnavailable):
        run_with(S3Storage.for_results(config, absent), lambda s: s.get("k"))
    with pytest.raises(SourceUnavailable):
        run_with(S3Storage.for_results(config, absent), lambda s: s.put("k", b"x"))
    down = S3Config(endpoint=f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(SourceUnavailable):
        run_with(S3Storage.for_results(down, "s3://bucket/p"), lambda s: s.get("k"))
    with pytest.raises(SourceUnavailable):
        run_with(S3Storage.for_results(down, "s3://bucket/p"), lambda s: s.put("k", b"x"))


@pytest.mark.parametrize("base", ["http://bucket/p", "s3://", "s3://bad bucket/p", "s3://b-1/p?x"])
def test_results_base_must_be_an_s3_location(config: S3Config, base: str) -> None:
    with pytest.raises(ValueError, match="s3"):
        S3Storage.for_results(config, base)


def test_results_need_a_location(config: S3Config) -> None:
    with pytest.raises(RuntimeError):
        run_with(S3Storage(config), lambda s: s.get("k"))


# -- outages ------------------------------------------------------------------------------------------


def test_closed_port_is_unavailable(s3: S3Server) -> None:
    config = S3Config(endpoint=f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(SourceUnavailable) as info:
        fetch(config, "s3://bucket/a.png")
    assert info.value.status_code == 502


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(5)
    listener.close()
    for conn in held:
        conn.close()


def test_silent_server_times_out(s3: S3Server, silent_listener: int) -> None:
    config = S3Config(endpoint=f"http://127.0.0.1:{silent_listener}", timeout=1)
    started = time.monotonic()
    with pytest.raises(SourceTimeout) as info:
        fetch(config, "s3://bucket/a.png")
    elapsed = time.monotonic() - started
    assert info.value.status_code == 504
    assert 1 <= elapsed < 10, elapsed


def test_client_is_reopened_after_aclose(s3: S3Server, config: S3Config, bucket: str) -> None:
    s3.put_object(bucket, "r.png", b"again")

    async def work(storage: S3Storage) -> list[bytes]:
        out = [(await storage.fetch(f"s3://{bucket}/r.png", max_bytes=0)).data]
        await storage.aclose()
        await storage.aclose()  # idempotent
        out.append((await storage.fetch(f"s3://{bucket}/r.png", max_bytes=0)).data)
        return out

    assert run_with(S3Storage(config), work) == [b"again", b"again"]


def test_concurrent_fetches_share_one_client(s3: S3Server, config: S3Config, bucket: str) -> None:
    for i in range(8):
        s3.put_object(bucket, f"c{i}.png", bytes([i]) * 10)

    async def work(storage: S3Storage) -> list[bytes]:
        results = await asyncio.gather(*(storage.fetch(f"s3://{bucket}/c{i}.png", max_bytes=100)
                                         for i in range(8)))
        return [r.data for r in results]

    assert run_with(S3Storage(config), work) == [bytes([i]) * 10 for i in range(8)]
