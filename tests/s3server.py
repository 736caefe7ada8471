"""A real S3 for tests: moto in server mode on 127.0.0.1 (moto's in-process mock fails with aiobotocore).

Use the fixtures from any test module::

    pytest_plugins = ["s3server"]  # in tests/conftest.py: the fixtures below are then available

``s3_server`` (session scope) starts one moto server and yields an ``S3Server`` with its endpoint URL and
the credentials environment; ``s3_env`` (function scope) also puts that environment into ``os.environ``
for the test, so code that uses the standard AWS credential chain finds it. Buckets and objects persist
for the whole session: give each test its own bucket names (``S3Server.new_bucket``).

``S3Server.env`` is also what a server subprocess needs (merge it into the subprocess environment).
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

__all__ = ["S3Server", "free_port", "running_s3_server", "s3_env", "s3_server"]

#: the credentials environment: fixed fake keys, no profile files, no instance-metadata lookups
CREDENTIALS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
#: variables that could override the fake credentials if the developer's shell has them
UNSET_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
             "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE", "AWS_RETRY_MODE",
             "AWS_MAX_ATTEMPTS", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
             "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    """A running moto server: where it is and the environment that authenticates against it."""

    endpoint: str
    env: dict[str, str] = field(default_factory=lambda: dict(CREDENTIALS_ENV))
    region: str = "us-east-1"
    _session: Any = field(default=None, repr=False)

    @staticmethod
    def new_bucket(stem: str = "test") -> str:
        """A bucket name no other test uses."""
        return f"{stem}-{uuid.uuid4().hex[:12]}"

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        """An aiobotocore S3 client on this server with the test credentials (for seeding data)."""
        from aiobotocore.config import AioConfig
        from aiobotocore.session import AioSession

        if self._session is None:
            self._session = AioSession()
        async with self._session.create_client(
                "s3", region_name=self.region, endpoint_url=self.endpoint,
                aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
                config=AioConfig(s3={"addressing_style": "path"})) as client:
            yield client

    def create_bucket(self, bucket: str, *, versioned: bool = False) -> None:
        """Create ``bucket`` (optionally with versioning on)."""

        async def run() -> None:
            async with self.client() as client:
                await client.create_bucket(Bucket=bucket)
                if versioned:
                    await client.put_bucket_versioning(Bucket=bucket,
                                                       VersioningConfiguration={"Status": "Enabled"})

        asyncio.run(run())

    def put_object(self, bucket: str, key: str, data: bytes, content_type: str = "") -> dict[str, Any]:
        """Store ``data`` at ``bucket``/``key``; returns PutObject's answer (``ETag``, ``VersionId``...)."""

        async def run() -> dict[str, Any]:
            async with self.client() as client:
                extra = {"ContentType": content_type} if content_type else {}
                result: dict[str, Any] = await client.put_object(Bucket=bucket, Key=key, Body=data, **extra)
                return result

        return asyncio.run(run())


def running_s3_server() -> Iterator[S3Server]:
    """Start moto on 127.0.0.1 on a free port, yield it, stop it (a generator usable outside pytest)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        _wait_listening(port)
        yield S3Server(endpoint=f"http://127.0.0.1:{port}")
    finally:
        server.stop()


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server for the whole test session."""
    yield from running_s3_server()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """``s3_server`` with its credentials environment set in ``os.environ`` for this test."""
    for name in UNSET_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server
