"""Hostile input against a real ``imgorigin serve`` process, category by category (security.md T1-T15, §4).

Every request goes over TCP to 127.0.0.1, byte for byte (``http.client``: no client-side normalisation).
Every case asserts its exact status and public text, then ``hold``: the server still answers /health
quickly, its RSS stays bounded, and the canary listeners on forbidden loopback addresses (127.0.0.1,
127.0.0.2, 127.0.0.3 and ::1 on a port no policy allows) recorded no connection at all.

Two servers: ``hs`` (the hostile-input server: cache on, small limits, a local root full of traps, run
with every capability dropped so that a mode-000 file is really unreadable even for root) and
``tight`` (defaults, no local root, TIMEOUT=2, one worker: the CPU-bomb tests, which run last).
Hostile files are generated at test time; nothing is written under tests/images.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import os
import re
import selectors
import socket
import socketserver
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import httpx
import pytest
import pyvips
from aiohttp import web

from conftest import (
    KEY_HEX,
    SALT_HEX,
    Server,
    Upstream,
    base_env,
    free_port,
    geometry_png,
    image_info,
    sign,
    stop_server,
)
from imgorigin.options import normalize_path

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
ERROR_TYPE = "text/plain; charset=utf-8"
PUBLIC_TEXTS = frozenset({
    "Forbidden", "Invalid URL", "Invalid source URL", "Source is unreachable", "Invalid source image",
    "Failed to detect source image type", "Broken or unsupported image", "Too many requests", "Timeout",
    "Method not allowed", "Not found",
    "The signature appears to be a processing option. The signature section should always be present "
    "in the URL.",
})
OTHER_KEY = "11" * 32
OTHER_SALT = "22" * 32
MAX_SRC = 1_000_000  # IMGORIGIN_MAX_SRC_FILE_SIZE of ``hs``
DOWNLOAD_TIMEOUT = 1.5  # of ``hs``
MAX_REDIRECTS = 5  # of ``hs``
RSS_LIMIT_MIB = 1024
EVIL = "evil.example"
PRESETS = "small=w:10, tiny=pr:small/h:5, wide=pr:tiny/pr:small/w:20, loop=pr:loop/w:12"
LOCAL = "local:///inside.png"  # 80x50 PNG in the local root of ``hs``


# --- helpers ------------------------------------------------------------------------------------------


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def digest(path: str, key: str = KEY_HEX, salt: str = SALT_HEX) -> bytes:
    return hmac.new(bytes.fromhex(key), bytes.fromhex(salt) + path.encode(), hashlib.sha256).digest()


def sig_of(path: str, key: str = KEY_HEX, salt: str = SALT_HEX) -> str:
    return sign(path, key, salt)[1:].split("/", 1)[0]


def signed(rest: str) -> str:
    """``/<signature><rest>``, the signature computed over what the server verifies (normalised path)."""
    return "/" + sig_of(normalize_path(rest)) + rest


@dataclass
class Resp:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    elapsed: float

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


def fetch(server: Server, path: str, method: str = "GET", headers: dict[str, str] | None = None,
          timeout: float = 30) -> Resp:
    """Send ``path`` exactly as given (httpx would drop ``..`` segments and re-escape characters)."""
    host, port = server.base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    started = time.monotonic()
    try:
        extra = headers or {}
        conn.putrequest(method, path, skip_accept_encoding=True,
                        skip_host="host" in {k.lower() for k in extra})
        for name, value in extra.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        return Resp(response.status, response.getheaders(), body, time.monotonic() - started)
    finally:
        conn.close()


def raw_exchange(server: Server, request: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes (non-ASCII targets, bad header bytes) and read until the server closes."""
    host, port = server.base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def assert_error(response: Resp, status: int, text: str | frozenset[str]) -> None:
    """A public error: exact status and text, text/plain, no-store, security headers, nothing else."""
    assert response.status == status, (response.status, response.text)
    if isinstance(text, str):
        assert response.text == text, response.text
    else:
        assert response.text in text, response.text
    assert response.header("content-type") == ERROR_TYPE
    assert response.header("cache-control") == "no-store"
    assert response.header("content-length") == str(len(response.body))
    assert response.header("x-content-type-options") == "nosniff"
    assert response.all("content-security-policy") == [CSP]
    assert response.header("content-disposition") is None
    assert response.header("x-cache") is None
    assert response.header("etag") is None
    assert_no_leak(response)


def assert_no_leak(response: Resp) -> None:
    """No version-revealing Server header, no stack trace, path, address or libvips text anywhere."""
    server_header = response.header("server")
    assert server_header is None or not re.search(r"[0-9]", server_header), server_header
    assert response.header("x-powered-by") is None
    if response.status >= 400 or response.header("content-type", ) == ERROR_TYPE:
        body = response.text
        for needle in ("Traceback", "File \"", "/tmp", "/work", "/etc", "vips", "Errno", "127.0.0",
                       "Exception", "Error:", "root:", "aiohttp", "python"):
            assert needle not in body, (needle, body)
        assert response.status == 200 or body in PUBLIC_TEXTS or body.startswith("imgorigin"), body


def assert_png(response: Resp, width: int | None = None, height: int | None = None) -> tuple[str, int, int]:
    assert response.status == 200, (response.status, response.text)
    info = image_info(response.body)
    if width is not None:
        assert info[1:] == (width, height), info
    assert response.header("x-content-type-options") == "nosniff"
    assert response.all("content-security-policy") == [CSP]
    return info


def rss_mib(server: Server) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) / 1024


# --- canaries on forbidden addresses -------------------------------------------------------------------


class Canary:
    """Listeners on 127.0.0.1, 127.0.0.2, 127.0.0.3 and ::1, all on one port no policy allows.

    Every accepted connection is recorded; no test may ever cause one.
    """

    def __init__(self) -> None:
        self.connections: list[tuple[str, bytes]] = []
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self.port, self._sockets = self._bind()
        for sock in self._sockets:
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _bind() -> tuple[int, list[socket.socket]]:
        for _ in range(50):
            port = free_port()
            sockets: list[socket.socket] = []
            try:
                for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "127.0.0.2"),
                                        (socket.AF_INET, "127.0.0.3"), (socket.AF_INET6, "::1")):
                    sock = socket.socket(family, socket.SOCK_STREAM)
                    sockets.append(sock)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((address, port))
                    sock.listen(16)
                return port, sockets
            except OSError:
                for sock in sockets:
                    sock.close()
        raise RuntimeError("no common free port for the canaries")

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.05):
                listener = key.fileobj
                assert isinstance(listener, socket.socket)
                try:
                    conn, peer = listener.accept()
                except BlockingIOError:
                    continue
                conn.settimeout(0.2)
                try:
                    head = conn.recv(200)
                except OSError:
                    head = b""
                self.connections.append((f"{listener.getsockname()[0]} from {peer[0]}", head))
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self._sockets:
            sock.close()


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    listeners = Canary()
    yield listeners
    listeners.close()


def hold(server: Server, canary: Canary, *, settle: float = 0.0) -> None:
    """The universal invariants: alive, fast /health, bounded RSS, no forbidden connection."""
    if settle:
        time.sleep(settle)
    assert server.process.poll() is None, server.log()[-3000:]
    started = time.monotonic()
    health = httpx.get(server.base + "/health", timeout=5)
    assert (health.status_code, health.text) == (200, "imgorigin is running")
    assert time.monotonic() - started < 2
    assert rss_mib(server) < RSS_LIMIT_MIB
    assert canary.connections == []


# --- a raw upstream for replies aiohttp will not produce (lying Content-Length, dribbling bodies) ------


@dataclass
class RawUpstream:
    """A TCP server on 127.0.0.1 answering each path with a scripted byte sequence, then closing."""

    port: int = 0
    scripts: dict[str, Callable[[socket.socket], None]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    heads: list[bytes] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def raw_upstream() -> Iterator[RawUpstream]:
    state = RawUpstream()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            sock.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                head += chunk
            state.heads.append(head)
            target = head.split(b" ", 2)[1].decode("latin-1")
            state.hits[target] = state.hits.get(target, 0) + 1
            script = state.scripts.get(target)
            try:
                if script is None:
                    sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                else:
                    script(sock)
            except OSError:
                pass

    class Threaded(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Threaded(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


def reply(head: str, body: bytes = b"", *, then: Callable[[socket.socket], None] | None = None,
          ) -> Callable[[socket.socket], None]:
    def script(sock: socket.socket) -> None:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        if then is not None:
            then(sock)

    return script


# --- hostile files ------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int, extra: bytes = b"") -> bytes:
    """A valid-looking 1-bit PNG header declaring ``width`` x ``height`` with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra
            + _chunk(b"IDAT", zlib.compress(b"\0" * 1000, 9)) + _chunk(b"IEND", b""))


def small_jpeg(width: int = 64, height: int = 48) -> bytes:
    data = pyvips.Image.black(width, height).new_from_image([200, 30, 30]).copy(
        interpretation="srgb").jpegsave_buffer(Q=80)
    assert isinstance(data, bytes)
    return data


def jpeg_bomb(width: int, height: int) -> bytes:
    """A small JPEG whose SOF declares ``width`` x ``height``."""
    data = bytearray(small_jpeg(16, 16))
    i = 2
    while True:
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5:i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length


def jpeg_with_segments(segments: list[bytes], width: int = 64, height: int = 48) -> bytes:
    """A JPEG with extra APPn segments (each ``marker byte + payload``) right after SOI."""
    data = small_jpeg(width, height)
    extra = b"".join(b"\xff" + seg[:1] + struct.pack(">H", len(seg) + 1) + seg[1:] for seg in segments)
    return data[:2] + extra + data[2:]


def gif_bomb(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    head = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    return head + b"," + struct.pack("<HHHHB", 0, 0, *frame, 0) + b"\x02\x02\x44\x01\x00;"


def webp_bomb(width: int, height: int) -> bytes:
    """A lossless WebP whose VP8X canvas and VP8L header both declare ``width`` x ``height``."""
    data = bytearray(pyvips.Image.black(16, 16).webpsave_buffer(lossless=True))
    x = data.index(b"VP8X") + 8
    data[x + 4:x + 7] = (width - 1).to_bytes(3, "little")
    data[x + 7:x + 10] = (height - 1).to_bytes(3, "little")
    i = data.index(b"VP8L") + 8
    old = struct.unpack("<I", data[i + 1:i + 5])[0]
    data[i + 1:i + 5] = struct.pack("<I", (old & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14))
    return bytes(data)


def tiff_bomb(width: int, height: int) -> bytes:
    """A 138-byte stripped TIFF declaring ``width`` x ``height``."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, 8), (277, 3, 1), (278, 4, height), (279, 4, 16)]
    out = b"II*\x00" + struct.pack("<I", 24) + b"\0" * 16 + struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, 1) + packed
    return out + struct.pack("<I", 0)


def encoded(fmt: str, width: int = 64, height: int = 48) -> bytes:
    image = pyvips.Image.black(width, height).new_from_image([10, 200, 90]).copy(interpretation="srgb")
    data = image.write_to_buffer(f".{fmt}")
    assert isinstance(data, bytes)
    return data


def svg(body: str, head: str = "", size: str = 'width="64" height="48"') -> bytes:
    return (f'<?xml version="1.0"?>{head}<svg xmlns="http://www.w3.org/2000/svg" '
            f'xmlns:xlink="http://www.w3.org/1999/xlink" {size}>'
            f'<rect width="64" height="48" fill="red"/>{body}</svg>').encode()


# --- the servers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local:/// root of ``hs``, full of traps; ``../secret.png`` lies outside it."""
    base = tmp_path_factory.mktemp("hostile-local")
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    png = geometry_png(80, 50)
    (root / "inside.png").write_bytes(png)
    (root / "sub" / "deep.png").write_bytes(png)
    (base / "secret.png").write_bytes(png)
    os.mkfifo(root / "fifo.png")
    (root / "zero.png").symlink_to("/dev/zero")
    (root / "urandom.png").symlink_to("/dev/urandom")
    (root / "passwd.png").symlink_to("/etc/passwd")
    (root / "environ.png").symlink_to("/proc/self/environ")
    (root / "loop1.png").symlink_to(root / "loop2.png")
    (root / "loop2.png").symlink_to(root / "loop1.png")
    (root / "self.png").symlink_to("self.png")
    (root / "dangling.png").symlink_to(root / "nothing-here.png")
    (root / "dir.png").mkdir()
    (root / "unreadable.png").write_bytes(png)
    (root / "unreadable.png").chmod(0)
    (root / "locked").mkdir()
    (root / "locked" / "x.png").write_bytes(png)
    (root / "locked").chmod(0)
    with socket.socket(socket.AF_UNIX) as unix:
        unix.bind(str(root / "sock.png"))
    assert stat.S_ISSOCK((root / "sock.png").lstat().st_mode)
    return root


def _start_without_capabilities(env: dict[str, str], tmp: Path) -> Server:
    """``start_server``, but under ``setpriv`` with every capability dropped: the test user is root,
    and only without CAP_DAC_OVERRIDE is a mode-000 file unreadable for the server."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith(("IMGORIGIN_", "IMGPROXY_"))}
    full.update({"IMGORIGIN_BIND": f"127.0.0.1:{port}", "PYTHONUNBUFFERED": "1", **env})
    log_path = tmp / f"server-{port}.log"
    command = [sys.executable, "-m", "imgorigin", "serve"]
    if os.geteuid() == 0:
        command = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", *command]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=full, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return Server(base, process, full, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not become healthy:\n{log_path.read_text()}")


@pytest.fixture(scope="module")
def hs(upstream: Upstream, raw_upstream: RawUpstream, local_root: Path,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The hostile-input server: signed, disk cache on, small limits, the trap-filled local root."""
    tmp = tmp_path_factory.mktemp("hostile-server")
    env = base_env(upstream, tmp)
    env.update({
        "IMGORIGIN_ALLOWED_SOURCE_NETWORKS": f"127.0.0.1:{upstream.port},127.0.0.1:{raw_upstream.port}",
        "IMGORIGIN_LOCAL_FILESYSTEM_ROOT": str(local_root),
        "IMGORIGIN_MAX_SRC_FILE_SIZE": str(MAX_SRC),
        "IMGORIGIN_DOWNLOAD_TIMEOUT": str(DOWNLOAD_TIMEOUT),
        "IMGORIGIN_MAX_REDIRECTS": str(MAX_REDIRECTS),
        "IMGORIGIN_TIMEOUT": "8",
        "IMGORIGIN_WORKERS": "2",
        "IMGORIGIN_PRESETS": PRESETS,
    })
    server = _start_without_capabilities(env, tmp)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def tight(server_factory: Callable[..., Server]) -> Server:
    """Default limits but TIMEOUT=2, one worker and no local root (local:// is off)."""
    return server_factory({"IMGORIGIN_TIMEOUT": "2", "IMGORIGIN_WORKERS": "1",
                           "IMGORIGIN_LOCAL_FILESYSTEM_ROOT": ""})


@pytest.fixture(scope="module")
def geometry(upstream: Upstream) -> bytes:
    return upstream.files["geometry.png"]


def serve(upstream: Upstream, name: str, body: bytes, content_type: str = "image/jpeg",
          headers: dict[str, str] | None = None, status: int = 200) -> str:
    """Register ``/hostile/<name>`` on the upstream; return its URL."""
    upstream.routes["/hostile/" + name] = lambda request: web.Response(
        body=body, status=status, headers={"Content-Type": content_type, **(headers or {})})
    return upstream.url("hostile/" + name)


def redirect(upstream: Upstream, name: str, location: str, status: int = 302) -> str:
    upstream.routes["/hostile/" + name] = lambda request: web.Response(status=status,
                                                                       headers={"Location": location})
    return upstream.url("hostile/" + name)


# === T1: tampered signatures ===========================================================================


def _flip(signature: str, bit: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(signature + "="))
    raw[bit // 8] ^= 1 << (bit % 8)
    return b64(bytes(raw))


def _noncanonical(signature: str, low_bits: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    assert last & 3 == 0  # 32 bytes: the last character carries two unused bits
    return signature[:-1] + alphabet[last | low_bits]


def _with_alphabet_chars(rest_template: str) -> tuple[str, str]:
    """A (rest, signature) pair whose signature holds both ``-`` and ``_``."""
    for n in range(10_000):
        rest = rest_template.format(n=n)
        signature = sig_of(rest)
        if "-" in signature and "_" in signature:
            return rest, signature
    raise AssertionError("no signature with both - and _")


SIGNATURE_TAMPERS: dict[str, Callable[[str, str], str]] = {
    # (valid signature, rest) -> the path sent
    "flip-bit-0": lambda s, r: f"/{_flip(s, 0)}{r}",
    "flip-bit-7": lambda s, r: f"/{_flip(s, 7)}{r}",
    "flip-bit-131": lambda s, r: f"/{_flip(s, 131)}{r}",
    "flip-bit-255": lambda s, r: f"/{_flip(s, 255)}{r}",
    "other-key": lambda s, r: f"/{sig_of(r, key=OTHER_KEY)}{r}",
    "other-salt": lambda s, r: f"/{sig_of(r, salt=OTHER_SALT)}{r}",
    "key-and-salt-swapped": lambda s, r: f"/{sig_of(r, key=SALT_HEX, salt=KEY_HEX)}{r}",
    "truncated-by-one": lambda s, r: f"/{s[:-1]}{r}",
    "truncated-half": lambda s, r: f"/{s[:22]}{r}",
    "truncated-to-8-bytes": lambda s, r: f"/{s[:11]}{r}",
    "one-char": lambda s, r: f"/{s[:1]}{r}",
    "padded": lambda s, r: f"/{s}={r}",
    "padded-twice": lambda s, r: f"/{s}=={r}",
    "padded-escaped": lambda s, r: f"/{s}%3D{r}",
    "extra-char": lambda s, r: f"/{s}A{r}",
    "noncanonical-1": lambda s, r: f"/{_noncanonical(s, 1)}{r}",
    "noncanonical-2": lambda s, r: f"/{_noncanonical(s, 2)}{r}",
    "noncanonical-3": lambda s, r: f"/{_noncanonical(s, 3)}{r}",
    "swapcase": lambda s, r: f"/{s.swapcase()}{r}",
    "trailing-space": lambda s, r: f"/{s}%20{r}",
    "leading-space": lambda s, r: f"/%20{s}{r}",
    "trailing-nul": lambda s, r: f"/{s}%00{r}",
    "trailing-newline": lambda s, r: f"/{s}%0A{r}",
    "colon-inside": lambda s, r: f"/{s[:20]}:{s[21:]}{r}",
    "hex-digest": lambda s, r: f"/{base64.urlsafe_b64decode(s + '=').hex()}{r}",
    "std-base64-padded": lambda s, r: f"/{base64.b64encode(base64.urlsafe_b64decode(s + '=')).decode()}{r}",
    "overlong-10kb": lambda s, r: f"/{s}{'A' * 10_000}{r}",
    "only-10kb": lambda s, r: f"/{'A' * 10_240}{r}",
    # thumbor e3ae3e25: the signature repeated inside the path must not be stripped
    "thumbor-repeated-inside": lambda s, r: f"/{s}/x/{s}{r}",
    "repeated-segment": lambda s, r: f"/{s}/{s}{r}",
    "repeated-segment-escaped": lambda s, r: f"/{s}/{s}%3D{r}",
    "signed-prefix-extended": lambda s, r: f"/{s}{r}x",
    "signed-prefix-with-format": lambda s, r: f"/{s}{r}@webp",
    "signed-prefix-extra-option": lambda s, r: f"/{s}/q:5{r}",
    "unsafe-sentinel": lambda s, r: f"/unsafe{r}",
    "insecure-sentinel": lambda s, r: f"/insecure{r}",
    "double-encoded": lambda s, r: f"/{quote(quote(s, safe=''), safe='')}%2D{r}",
}


@pytest.mark.parametrize("case", sorted(SIGNATURE_TAMPERS))
def test_tampered_signature_is_refused_before_any_fetch_or_cache_read(
        hs: Server, upstream: Upstream, canary: Canary, geometry: bytes, case: str) -> None:
    name = f"t1/{case}.png"
    source = serve(upstream, name, geometry, "image/png")
    rest = f"/w:30/plain/{source}"
    good = sig_of(rest)
    # a cached good answer must not be served for a bad signature either
    first = fetch(hs, f"/{good}{rest}")
    assert_png(first, 30, 15)
    assert upstream.count("hostile/" + name) == 1
    response = fetch(hs, SIGNATURE_TAMPERS[case](good, rest))
    assert_error(response, 403, "Forbidden")
    head = fetch(hs, SIGNATURE_TAMPERS[case](good, rest), method="HEAD")
    assert (head.status, head.body, head.header("content-length")) == (403, b"", "9")
    assert upstream.count("hostile/" + name) == 1
    hold(hs, canary)


def test_bad_signature_on_uncached_source_never_fetches(hs: Server, upstream: Upstream, canary: Canary,
                                                        geometry: bytes) -> None:
    source = serve(upstream, "t1/never.png", geometry, "image/png")
    rest = f"/w:30/plain/{source}"
    good = sig_of(rest)
    for path in (f"/{_flip(good, 3)}{rest}", f"/{good[:-1]}{rest}", f"/{good}/{good}{rest}",
                 f"/{good}={rest}", f"/x{rest}", f"/{sig_of(rest, key=OTHER_KEY)}{rest}"):
        assert_error(fetch(hs, path), 403, "Forbidden")
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        response = fetch(hs, f"/{_flip(good, 3)}{rest}", method=method)
        assert (response.status, response.text) == (405, "Method not allowed")
    assert upstream.count("hostile/t1/never.png") == 0
    assert_png(fetch(hs, f"/{good}{rest}"), 30, 15)
    assert upstream.count("hostile/t1/never.png") == 1
    hold(hs, canary)


def test_signature_alphabet_confusion(hs: Server, upstream: Upstream, canary: Canary, geometry: bytes) -> None:
    source = serve(upstream, "t1/alphabet.png", geometry, "image/png")
    rest, good = _with_alphabet_chars(f"/cb:{{n}}/w:30/plain/{source}")
    standard = good.replace("-", "+").replace("_", "/")
    for bad in (good.replace("-", "+"), good.replace("-", "%2B"), good.replace("-", "%2D"),
                good.replace("_", "%2F"), good.replace("_", "%5F"), standard, quote(standard, safe="")):
        assert_error(fetch(hs, f"/{bad}{rest}"), 403, "Forbidden")
    assert upstream.count("hostile/t1/alphabet.png") == 0
    assert_png(fetch(hs, f"/{good}{rest}"), 30, 15)
    hold(hs, canary)


def test_empty_and_missing_signature_segment(hs: Server, upstream: Upstream, canary: Canary,
                                             geometry: bytes) -> None:
    source = serve(upstream, "t1/empty.png", geometry, "image/png")
    assert_error(fetch(hs, f"//w:30/plain/{source}"), 404, "Invalid URL")
    assert_error(fetch(hs, f"/w:30/plain/{source}"), 403, "Forbidden")
    assert_error(fetch(hs, f"/plain/{source}"), 403, "Forbidden")
    assert_error(fetch(hs, f"/{sig_of('/plain/' + source)}"), 404, "Invalid URL")
    assert upstream.count("hostile/t1/empty.png") == 0
    hold(hs, canary)


# === T2/T3: SSRF ===========================================================================================

# hosts that all mean a loopback (or unspecified) address; the canaries listen on every one of them
SSRF_HOSTS = [
    "127.0.0.1", "127.0.0.2", "127.0.0.3", "2130706433", "0177.0.0.1", "0177.0.0.02", "0x7f.0.0.1", "0x7f.1",
    "0x7f000001", "0x7F.0x0.0x0.0x2", "017700000001", "127.1", "127.0.1", "127.000.000.003", "0", "0.0.0.0",
    "127.0.0.1.", "127.0.0.2%2E", "[::]", "[::1]", "[0:0:0:0:0:0:0:1]", "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]", "[::ffff:127.0.0.2]", "[::FFFF:7F00:3]", "[64:ff9b::7f00:1]", "[64:ff9b::127.0.0.2]",
    "[64:ff9b:1::7f00:1]", "[2002:7f00:1::]", "[2002:7f00:2::1]", "[::127.0.0.1]", "[::7f00:2]",
    "[::1%25lo]", "[::1%2525lo]", "[::ffff:127.0.0.1%25eth0]", "[fe80::1%25lo]",
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]", "[::5efe:7f00:1]",
    "localhost", "LOCALHOST", "localhost.", "LocalHost", "%6c%6f%63%61%6c%68%6f%73%74",
    "%E2%91%A0%E2%91%A1%E2%91%A6.0.0.1",  # ①②⑦.0.0.1: IDNA folds it to 127.0.0.1
    "127%E3%80%820%E3%80%820%E3%80%822",  # 127。0。0。2 (ideographic full stops)
    "%EF%BC%91%EF%BC%92%EF%BC%97.0.0.1",  # full-width digits
    "127.0.0.1%09", "%20127.0.0.1", "127.0.0.1%00.example.com",
]


#: hosts no resolver here knows: "unreachable", and still nothing connected
UNRESOLVABLE = frozenset({"localhost.", "%20127.0.0.1"})


@pytest.mark.parametrize("host", SSRF_HOSTS)
def test_loopback_host_encodings_are_refused(hs: Server, canary: Canary, host: str) -> None:
    url = f"http://{host}:{canary.port}/ssrf.png"
    expected = "Source is unreachable" if host in UNRESOLVABLE else "Invalid source URL"
    for path in (f"/w:10/plain/{url}", f"/w:10/{b64(unquote(url))}"):
        response = fetch(hs, signed(path))
        assert_error(response, 404, expected)
    hold(hs, canary, settle=0.05)


@pytest.mark.parametrize("host", ["169.254.169.254", "[fd00:ec2::254]", "10.0.0.1", "172.16.0.1",
                                  "192.168.0.1", "100.64.0.1", "224.0.0.1", "[ff02::1]", "[fc00::1]",
                                  "[fe80::1]", "[::ffff:169.254.169.254]", "[64:ff9b::a9fe:a9fe]",
                                  "2852039166", "0xa9fea9fe", "metadata.google.internal"])
def test_private_and_metadata_hosts_are_refused(hs: Server, canary: Canary, host: str) -> None:
    # nothing listens there: "Invalid source URL" (policy) rather than "Source is unreachable"
    # (a connection was tried) shows the address was refused before connecting
    response = fetch(hs, signed(f"/w:10/plain/http://{host}/latest/meta-data/"))
    if host == "metadata.google.internal":  # no DNS here: unresolvable names are unreachable
        assert_error(response, 404, "Source is unreachable")
    else:
        assert_error(response, 404, "Invalid source URL")
    assert response.elapsed < DOWNLOAD_TIMEOUT + 1
    hold(hs, canary)


REFUSED, UPSTREAM_404 = "Invalid source URL", "Source is unreachable"
#: URL (``@`` is the format separator in plain URLs, so it is sent as %40 there) -> expected text
USERINFO_URLS = {
    "http://allowed@127.0.0.2:{c}/x.png": REFUSED,
    "http://127.0.0.1:{u}@127.0.0.2:{c}/x.png": REFUSED,
    "http://user:pass@example.com@127.0.0.2:{c}/x.png": REFUSED,
    "http://127.0.0.1:{u}%2540127.0.0.2:{c}/x.png": REFUSED,
    "http://127.0.0.2:{c}%5C@127.0.0.1:{u}/hostile/none.png": UPSTREAM_404,
    "http://127.0.0.2:{c}%23@127.0.0.1:{u}/hostile/none.png": REFUSED,
    "http://127.0.0.2:{c}%3F@127.0.0.1:{u}/hostile/none.png": REFUSED,
    "http://127.0.0.1:{u}%20@127.0.0.2:{c}/x.png": REFUSED,
    "http://[::1]:{c}@127.0.0.1:{u}/hostile/none.png": UPSTREAM_404,
    "http://127.0.0.1:{u}:{c}/x.png": REFUSED,
    "http://127.0.0.1:{c}:{u}/x.png": REFUSED,
    "http://127.0.0.2:{c}/%2e%2e/x.png": REFUSED,
    "http://127.0.0.1:99999/x.png": REFUSED,
    "http://127.0.0.1:-1/x.png": REFUSED,
    "http://127.0.0.1:0x50/x.png": REFUSED,
    "http://[::1/x.png": REFUSED,
    "http://::1]:{c}/x.png": REFUSED,
    "http://[127.0.0.1]:{c}/x.png": REFUSED,
}


@pytest.mark.parametrize("template", sorted(USERINFO_URLS))
def test_userinfo_and_delimiter_tricks(hs: Server, upstream: Upstream, canary: Canary, template: str) -> None:
    url = template.format(c=canary.port, u=upstream.port)
    for path in (f"/w:10/plain/{url.replace('@', '%40')}", f"/w:10/{b64(unquote(url))}"):
        response = fetch(hs, signed(path))
        assert_error(response, 404, USERINFO_URLS[template])
    hold(hs, canary, settle=0.05)


REDIRECT_TARGETS = {
    "v4-other": "http://127.0.0.2:{c}/x.png",
    "v4-loopback-other-port": "http://127.0.0.1:{c}/x.png",
    "v6": "http://[::1]:{c}/x.png",
    "v6-mapped": "http://[::ffff:127.0.0.3]:{c}/x.png",
    "nat64": "http://[64:ff9b::7f00:2]:{c}/x.png",
    "decimal": "http://2130706434:{c}/x.png",
    "hex-short": "http://0x7f.2:{c}/x.png",
    "localhost": "http://localhost:{c}/x.png",
    "scheme-relative": "//127.0.0.3:{c}/x.png",
    "userinfo": "http://127.0.0.1:{u}@127.0.0.2:{c}/x.png",
    "upper-scheme": "HTTP://127.0.0.2:{c}/x.png",
    "https": "https://127.0.0.2:{c}/x.png",
    "unspecified": "http://0.0.0.0:{c}/x.png",
    "file": "file:///etc/passwd",
    "file-upper": "FILE:///etc/passwd",
    "file-host": "file://localhost/etc/passwd",
    "local": "local:///inside.png",
    "local-traversal": "local:///../secret.png",
    "gopher": "gopher://127.0.0.2:{c}/_GET%20/",
    "ftp": "ftp://127.0.0.2:{c}/x.png",
    "dict": "dict://127.0.0.2:{c}/info",
    "data": "data:image/png;base64,iVBORw0KGgo=",
    "jar": "jar:http://127.0.0.2:{c}/x.zip!/x.png",
    "metadata": "http://169.254.169.254/latest/meta-data/",
}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("target", sorted(REDIRECT_TARGETS))
def test_redirect_to_forbidden_target(hs: Server, upstream: Upstream, canary: Canary, target: str,
                                      status: int) -> None:
    location = REDIRECT_TARGETS[target].format(c=canary.port, u=upstream.port)
    name = f"t2/redir-{target}-{status}"
    url = redirect(upstream, name, location, status)
    # a second hop makes the forbidden target the *last* of an otherwise allowed chain
    first = redirect(upstream, name + "-first", url, 301)
    response = fetch(hs, signed(f"/w:10/plain/{first}"))
    assert_error(response, 404, "Invalid source URL")
    assert upstream.count("hostile/" + name) == 1
    hold(hs, canary, settle=0.05)


def test_redirect_loops_and_long_chains(hs: Server, upstream: Upstream, canary: Canary, geometry: bytes,
                                        tight: Server) -> None:
    redirect(upstream, "t2/self", "./self")
    redirect(upstream, "t2/ping", "pong")
    redirect(upstream, "t2/pong", "/hostile/t2/ping")
    for hop in range(20):
        redirect(upstream, f"t2/chain-{hop}", f"/hostile/t2/chain-{hop + 1}", 301 + hop % 2)
    serve(upstream, "t2/chain-20", geometry, "image/png")
    redirect(upstream, "t2/no-location", "")
    upstream.routes["/hostile/t2/no-location"] = lambda request: web.Response(status=302)

    response = fetch(hs, signed(f"/w:10/plain/{upstream.url('hostile/t2/self')}"))
    assert_error(response, 404, "Source is unreachable")
    assert upstream.count("hostile/t2/self") == MAX_REDIRECTS + 1
    response = fetch(hs, signed(f"/w:10/plain/{upstream.url('hostile/t2/ping')}"))
    assert_error(response, 404, "Source is unreachable")
    assert upstream.count("hostile/t2/ping") + upstream.count("hostile/t2/pong") == MAX_REDIRECTS + 1
    response = fetch(hs, signed(f"/w:10/plain/{upstream.url('hostile/t2/chain-0')}"))
    assert_error(response, 404, "Source is unreachable")
    assert upstream.count("hostile/t2/chain-5") == 1 and upstream.count("hostile/t2/chain-6") == 0
    response = fetch(hs, signed(f"/w:10/plain/{upstream.url('hostile/t2/no-location')}"))
    assert response.status in (404, 502), response.text
    assert_error(response, response.status, "Source is unreachable")
    # the default limit (10) on a server with default settings: 20 hops are too many, 10 are not
    response = fetch(tight, signed(f"/w:10/plain/{upstream.url('hostile/t2/chain-0')}"))
    assert_error(response, 404, "Source is unreachable")
    assert upstream.count("hostile/t2/chain-10") == 1 and upstream.count("hostile/t2/chain-11") == 0
    assert_png(fetch(tight, signed(f"/w:10/plain/{upstream.url('hostile/t2/chain-10')}")), 10, 5)
    hold(hs, canary)
    hold(tight, canary)


NON_HTTP_SOURCES = [
    "file:///etc/passwd", "FILE:///etc/passwd", "file://localhost/etc/passwd", "file:/etc/passwd",
    "file:%2F%2F%2Fetc%2Fpasswd", "ftp://127.0.0.2:{c}/x.png", "gopher://127.0.0.2:{c}/_GET%20/",
    "dict://127.0.0.2:{c}/info", "ldap://127.0.0.2:{c}/", "tftp://127.0.0.2:{c}/x",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
    "jar:http://127.0.0.2:{c}/x.zip!/x.png", "netdoc:///etc/passwd", "php://filter/resource=/etc/passwd",
    "expect://id", "javascript:alert(1)", "s3://bucket/key.png", "memory://x.png", "mailto:a%40b",
    "urn:x", "x-unknown://127.0.0.2:{c}/", "about:blank", "blob:http://127.0.0.2:{c}/x",
]


@pytest.mark.parametrize("source", NON_HTTP_SOURCES)
def test_non_http_schemes_are_refused(hs: Server, canary: Canary, source: str) -> None:
    source = source.format(c=canary.port)
    for path in (f"/w:10/plain/{source}", f"/w:10/{b64(unquote(source))}"):
        response = fetch(hs, signed(path))
        assert_error(response, 404, "Source is unreachable")
    hold(hs, canary, settle=0.05)


@pytest.mark.parametrize("source", ["HTTP://127.0.0.2:{c}/x.png", "hTTpS://127.0.0.2:{c}/x.png",
                                    "Http://[::1]:{c}/x.png", "http:/127.0.0.2:{c}/x.png",
                                    "http:127.0.0.2:{c}/x.png", "http:///127.0.0.2:{c}/x.png",
                                    "http://127.0.0.2:{c}/x.png%0D%0AX-Injected:%201",
                                    "http://127.0.0.2:{c}%0D%0A/x.png", "http://127.0.0.2%0A:{c}/x.png",
                                    "%20http://127.0.0.2:{c}/x.png", "http://%20127.0.0.2:{c}/x.png",
                                    "%09http://127.0.0.2:{c}/x.png", "http://127.0.0.2:{c}%09/x.png"])
def test_scheme_case_and_whitespace_variants(hs: Server, canary: Canary, source: str) -> None:
    source = source.format(c=canary.port)
    response = fetch(hs, signed(f"/w:10/plain/{source}"))
    assert_error(response, 404, frozenset({"Invalid source URL", "Source is unreachable"}))
    hold(hs, canary, settle=0.05)


def test_local_scheme_is_off_without_a_root(tight: Server, canary: Canary) -> None:
    for source in ("local:///inside.png", "local:///etc/passwd", "local:////etc/passwd", "LOCAL:///x.png",
                   "local:/etc/passwd", "local://localhost/etc/passwd"):
        assert_error(fetch(tight, signed(f"/w:10/plain/{source}")), 404, "Source is unreachable")
        assert_error(fetch(tight, signed(f"/w:10/{b64(source)}")), 404, "Source is unreachable")
    hold(tight, canary)


def test_crlf_in_source_url_never_reaches_the_upstream_as_a_header(
        hs: Server, raw_upstream: RawUpstream, canary: Canary) -> None:
    before = len(raw_upstream.heads)
    for suffix in ("x.png%0D%0AX-Injected:%201", "x.png%0AX-Injected:%201", "x.png%0DX-Injected:%201",
                   "x.png%20HTTP/1.1%0D%0AX-Injected:%201%0D%0A%0D%0A", "x%00.png", "x.png%E2%80%A8X"):
        url = raw_upstream.url("/t2/" + suffix)
        for path in (f"/w:10/plain/{url}", f"/w:10/{b64(unquote(url))}"):
            response = fetch(hs, signed(path))
            assert_error(response, 404, frozenset({"Invalid source URL", "Source is unreachable"}))
    for head in raw_upstream.heads[before:]:
        lines = head.split(b"\r\n")
        assert not any(line.lower().startswith(b"x-injected") for line in lines), head
        assert b"\n" not in lines[0] and b"\r" not in lines[0]
    hold(hs, canary)
