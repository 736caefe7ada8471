"""Shared fixtures: test images, a real aiohttp upstream, real imgorigin servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from imgorigin.signing import sign_path

pytest_plugins = ["s3server"]  # the moto S3 server fixtures: s3_server, s3_env

TESTS = Path(__file__).parent
IMAGES = TESTS / "images"
KEY_HEX = "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881"
SALT_HEX = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sign(path: str, key: str = KEY_HEX, salt: str = SALT_HEX, size: int = 32) -> str:
    """``/<signature><path>`` for ``path`` (which starts with ``/``) signed with the test key."""
    return "/" + sign_path(bytes.fromhex(key), bytes.fromhex(salt), path, size) + path


def geometry_png(width: int = 200, height: int = 100) -> bytes:
    """A PNG with four coloured quadrants (red, green / blue, white), like imgproxy's geometry.png."""
    import pyvips

    half_w, half_h = width // 2, height // 2
    top = pyvips.Image.black(half_w, half_h).new_from_image([255, 0, 0]).join(
        pyvips.Image.black(width - half_w, half_h).new_from_image([0, 255, 0]), "horizontal")
    bottom = pyvips.Image.black(half_w, height - half_h).new_from_image([0, 0, 255]).join(
        pyvips.Image.black(width - half_w, height - half_h).new_from_image([255, 255, 255]), "horizontal")
    image = top.join(bottom, "vertical").cast("uchar").copy(interpretation="srgb")
    data = image.pngsave_buffer()
    assert isinstance(data, bytes)
    return data


@dataclass
class Upstream:
    """A real HTTP server on 127.0.0.1 serving files and scripted answers, counting every request."""

    port: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    #: path -> handler for special behaviours (status codes, slow bodies, redirects...)
    routes: dict[str, Callable[[web.Request], object]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def count(self, name: str) -> int:
        return self.hits.get("/" + name, 0)


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    """The local image upstream: every file of tests/images plus the generated geometry.png."""
    up = Upstream(port=free_port())
    for path in IMAGES.iterdir():
        if path.is_file() and path.suffix != ".md":
            up.files[path.name] = path.read_bytes()
    up.files["geometry.png"] = geometry_png()

    async def handle(request: web.Request) -> web.StreamResponse:
        up.hits[request.path] = up.hits.get(request.path, 0) + 1
        special = up.routes.get(request.path)
        if special is not None:
            result = special(request)
            if asyncio.iscoroutine(result):
                result = await result
            assert isinstance(result, web.StreamResponse)
            return result
        data = up.files.get(request.path.lstrip("/"))
        if data is None:
            return web.Response(status=404, text="missing")
        return web.Response(body=data, content_type="application/octet-stream",
                            headers={"ETag": f'"{len(data):x}"'})

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", up.port).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield up
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@dataclass
class Server:
    """A running ``imgorigin serve`` process."""

    base: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    log_path: Path
    #: one keep-alive client per server (a new client per request costs tens of milliseconds)
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base, timeout=30)

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return self.client.get(path, **kwargs)  # type: ignore[arg-type]

    def request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return self.client.request(method, path, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(env: dict[str, str], tmp: Path, *, args: tuple[str, ...] = (),
                 without_capabilities: bool = False) -> Server:
    """Start ``python -m imgorigin serve`` with ``env`` on a free port and wait until /health answers.

    ``without_capabilities`` runs it under ``setpriv`` with every capability dropped when the tests run
    as root: only then is a mode-000 file unreadable for the server (no CAP_DAC_OVERRIDE)."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith(("IMGORIGIN_", "IMGPROXY_"))}
    full.update({"IMGORIGIN_BIND": f"127.0.0.1:{port}", "PYTHONUNBUFFERED": "1"})
    full.update(env)
    log_path = tmp / f"server-{port}.log"
    command = [sys.executable, "-m", "imgorigin", "serve", *args]
    if without_capabilities and os.geteuid() == 0:
        command = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", *command]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=full, stdout=log, stderr=subprocess.STDOUT)
    prefix = full.get("IMGORIGIN_PATH_PREFIX", "")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}{prefix}/health", timeout=1).status_code == 200:
                return Server(base, process, full, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not become healthy:\n{log_path.read_text()}")


def terminate(process: subprocess.Popen[bytes], grace: float = 20) -> None:
    """SIGTERM, then SIGKILL if ``process`` has not exited after ``grace`` seconds."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def stop_server(server: Server) -> None:
    server.client.close()
    terminate(server.process)


def base_env(upstream: Upstream, tmp: Path) -> dict[str, str]:
    """Settings for a signed test server that may fetch from the local upstream only."""
    return {
        "IMGORIGIN_KEY": KEY_HEX,
        "IMGORIGIN_SALT": SALT_HEX,
        "IMGORIGIN_ALLOWED_SOURCE_NETWORKS": f"127.0.0.1:{upstream.port}",
        "IMGORIGIN_LOCAL_FILESYSTEM_ROOT": str(IMAGES),
        "IMGORIGIN_CACHE_DIR": str(tmp / "cache"),
    }


@pytest.fixture(scope="module")
def server_factory(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        Callable[..., Server]]:
    """Start servers with extra settings over ``base_env``; all are stopped at the end of the module."""
    started: list[Server] = []

    def make(extra: dict[str, str] | None = None, *, args: tuple[str, ...] = (),
             cache: bool = False) -> Server:
        tmp = tmp_path_factory.mktemp("server")
        env = base_env(upstream, tmp)
        if not cache:
            env.pop("IMGORIGIN_CACHE_DIR")
        env.update(extra or {})
        server = start_server(env, tmp, args=args)
        started.append(server)
        return server

    yield make
    for server in started:
        stop_server(server)


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., Server]) -> Server:
    """A signed server with default settings and no result cache (every request renders)."""
    return server_factory()


def image_info(data: bytes) -> tuple[str, int, int]:
    """(libvips loader name, width, height) of encoded image bytes."""
    import pyvips

    image = pyvips.Image.new_from_buffer(data, "")
    return str(image.get("vips-loader")), image.width, image.height


def slow_handler(data: bytes, delay: float) -> Callable[[web.Request], object]:
    """An upstream route answering ``data`` (as a JPEG) after ``delay`` seconds."""

    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.Response(body=data, content_type="image/jpeg")

    return handler


def sigterm_during(server: Server, paths: list[str]) -> tuple[list[int], int]:
    """Request ``paths`` at once, SIGTERM the server 0.5 s later, ask /health 0.3 s after that; the
    statuses of the requests and of that health check."""

    async def scenario() -> tuple[list[int], int]:
        async with httpx.AsyncClient(base_url=server.base, timeout=30,
                                     limits=httpx.Limits(max_connections=len(paths) + 1)) as client:
            flights = [asyncio.create_task(client.get(path)) for path in paths]
            await asyncio.sleep(0.5)
            os.kill(server.process.pid, signal.SIGTERM)
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(base_url=server.base, timeout=5) as fresh:
                health = await fresh.get("/health")
            responses = await asyncio.gather(*flights)
            return [r.status_code for r in responses], health.status_code

    return asyncio.run(scenario())


def metric_values(exposition: str) -> dict[str, float]:
    """Prometheus text exposition → {name{labels}: value}."""
    values: dict[str, float] = {}
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def assert_promtool_accepts(exposition: bytes) -> None:
    """``promtool check metrics`` finds nothing wrong in ``exposition``."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install Debian's 'prometheus' package (.ci/run does)"
    checked = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True,
                             timeout=30, check=False)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
