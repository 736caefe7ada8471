"""imgorigin behind a real Varnish (examples/cdn/varnish/default.vcl) and a real nginx
(examples/cdn/nginx/imgorigin.conf), all on 127.0.0.1.

Origin work is counted with the origin's own Prometheus counters (``renders_total``, ``requests_total``),
so "one render per format" and "collapsed into one origin request" are measured, not assumed. The
hit/miss figures are written to ``test-artifacts/cdn-figures.json``.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import Server, free_port, sign, terminate

ROOT = Path(__file__).resolve().parent.parent
VCL = ROOT / "examples" / "cdn" / "varnish" / "default.vcl"
NGINX_CONF = ROOT / "examples" / "cdn" / "nginx" / "imgorigin.conf"
ARTIFACTS = ROOT / "test-artifacts"

#: what real browsers send for <img> requests
BROWSERS = {
    "chrome": "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
    "chromium-156": "image/jxl,image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
    "firefox": "image/avif,image/webp,*/*",
    "safari-17": "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,"
                 "image/svg+xml,image/*;q=0.8,*/*;q=0.5",
    "edge-legacy": "image/webp,image/apng,image/*,*/*;q=0.8",
    "old": "image/png,image/*;q=0.8",
}
EXPECTED_TYPE = {"chrome": "image/avif", "chromium-156": "image/avif", "firefox": "image/avif",
                 "safari-17": "image/avif", "edge-legacy": "image/webp", "old": "image/jpeg"}

#: hit/miss figures collected by the tests of this module, written out at the end
FIGURES: dict[str, object] = {}


def find_tool(name: str) -> str:
    """The path of ``name`` on PATH or in /usr/sbin; a clear failure (never a skip) when it is missing."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail(f"{name} is not installed: `apt-get install -y {name}` (CI installs it in .ci/run)",
                    pytrace=False)
    return found


@dataclass
class Cdn:
    """A running caching proxy in front of one imgorigin server."""

    base: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    stats: Callable[[], dict[str, int]] = field(default=lambda: {})

    def get(self, path: str, accept: str | None = None, **headers: str) -> httpx.Response:
        sent = dict(headers)
        if accept is not None:
            sent["Accept"] = accept
        return httpx.get(self.base + path, headers=sent, timeout=30)

    def stop(self) -> None:
        terminate(self.process, grace=10)


def _wait_ready(cdn: Cdn, what: str) -> Cdn:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if cdn.process.poll() is not None:
            raise RuntimeError(f"{what} exited with {cdn.process.returncode}:\n{cdn.log_path.read_text()}")
        try:
            if httpx.get(cdn.base + "/health", timeout=1).status_code == 200:
                return cdn
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    cdn.stop()
    raise RuntimeError(f"{what} did not answer:\n{cdn.log_path.read_text()}")


#: the VCL's Accept normalisation (an if/elsif chain ending in `set req.http.Accept = "";`)
ACCEPT_BLOCK = re.compile(r'    if \(req\.http\.Accept ~ "image/avif" && .*?'
                          r'set req\.http\.Accept = "";\n    }\n', re.DOTALL)


def start_varnish(backend: str, workdir: Path, *, normalise_accept: bool = True) -> Cdn:
    """``varnishd -F`` on a free 127.0.0.1 port with the example VCL pointed at ``backend`` (host:port);
    ``normalise_accept=False`` removes the VCL's Accept normalisation (for comparison)."""
    varnishd = find_tool("varnishd")
    host, port = backend.removeprefix("http://").rsplit(":", 1)
    vcl = VCL.read_text()
    if not normalise_accept:
        vcl, count = ACCEPT_BLOCK.subn("", vcl)
        assert count == 1
    vcl = vcl.replace('.host = "127.0.0.1";', f'.host = "{host}";', 1)
    vcl = vcl.replace('.port = "8080";', f'.port = "{port}";', 1)
    assert f'.port = "{port}"' in vcl
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "default.vcl").write_text(vcl)
    listen = free_port()
    log_path = workdir / "varnishd.log"
    with log_path.open("wb") as log:
        # -j none: no privilege separation, so it runs as the invoking user in a private work dir
        process = subprocess.Popen(
            [varnishd, "-F", "-j", "none", "-a", f"127.0.0.1:{listen}", "-T", "none",
             "-f", str(workdir / "default.vcl"), "-s", "malloc,32m", "-n", str(workdir / "n"),
             "-P", str(workdir / "varnishd.pid"), "-p", "default_grace=0"],
            stdout=log, stderr=subprocess.STDOUT)
    varnishstat = shutil.which("varnishstat") or "/usr/bin/varnishstat"

    def stats() -> dict[str, int]:
        out = subprocess.run([varnishstat, "-n", str(workdir / "n"), "-1", "-j"], capture_output=True,
                             text=True, check=True, timeout=10).stdout
        counters = json.loads(out).get("counters", {})
        return {name.removeprefix("MAIN."): int(c["value"]) for name, c in counters.items()
                if name.startswith("MAIN.")}

    return _wait_ready(Cdn(f"http://127.0.0.1:{listen}", process, workdir, log_path, stats), "varnishd")


def start_nginx(backend: str, workdir: Path) -> Cdn:
    """nginx in the foreground on a free 127.0.0.1 port with the example site config."""
    nginx = find_tool("nginx")
    listen = free_port()
    host_port = backend.removeprefix("http://")
    site = NGINX_CONF.read_text()
    site = site.replace("/var/cache/nginx/imgorigin", str(workdir / "cache"))
    site = site.replace("server 127.0.0.1:8080;", f"server {host_port};")
    site = site.replace("listen 127.0.0.1:8081;", f"listen 127.0.0.1:{listen};")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "site.conf").write_text(site)
    temps = " ".join(f"{kind}_temp_path {workdir / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # started as root, nginx's workers would drop to `nobody`, who cannot enter pytest's private tmp dir
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    (workdir / "nginx.conf").write_text(
        f"{user}daemon off; master_process on; worker_processes 1; pid {workdir / 'nginx.pid'};\n"
        f"error_log {workdir / 'error.log'} warn;\nevents {{ worker_connections 256; }}\n"
        f"http {{ access_log off; {temps}\ninclude {workdir / 'site.conf'}; }}\n")
    log_path = workdir / "nginx.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([nginx, "-c", str(workdir / "nginx.conf"), "-p", str(workdir)],
                                   stdout=log, stderr=subprocess.STDOUT)
    return _wait_ready(Cdn(f"http://127.0.0.1:{listen}", process, workdir, log_path), "nginx")


@dataclass
class Stack:
    origin: Server
    metrics_url: str
    cdn: Cdn

    def counter(self, name: str) -> float:
        text = httpx.get(self.metrics_url, timeout=10).text
        match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
        assert match is not None, f"{name} not in the origin's metrics"
        return float(match.group(1))

    def origin_work(self) -> tuple[float, float]:
        """(renders_total, requests_total) of the origin right now."""
        return self.counter("renders_total"), self.counter("requests_total")


def origin_env(metrics_port: int, **extra: str) -> dict[str, str]:
    env = {"IMGORIGIN_AUTO_WEBP": "true", "IMGORIGIN_AUTO_AVIF": "true", "IMGORIGIN_WORKERS": "2",
           "IMGORIGIN_PROMETHEUS_BIND": f"127.0.0.1:{metrics_port}",
           "IMGORIGIN_STALE_WHILE_REVALIDATE": "60"}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def varnish(server_factory: Callable[..., Server],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    metrics_port = free_port()
    origin = server_factory(origin_env(metrics_port))
    cdn = start_varnish(origin.base, tmp_path_factory.mktemp("varnish"))
    yield Stack(origin, f"http://127.0.0.1:{metrics_port}/metrics", cdn)
    cdn.stop()


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    if FIGURES:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "cdn-figures.json").write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")


def image_path(quality: int, source: str = "grace-hopper-512x600.jpg") -> str:
    """A signed path no other test uses (the quality makes it unique), so every test starts cold."""
    return sign(f"/rs:fit:200:0/q:{quality}/plain/local:///{source}")


def test_miss_then_hit(varnish: Stack) -> None:
    path = image_path(61)
    renders, requests = varnish.origin_work()
    first = varnish.cdn.get(path, BROWSERS["chrome"])
    second = varnish.cdn.get(path, BROWSERS["chrome"])
    assert first.status_code == second.status_code == 200
    assert first.headers["X-Cache-Varnish"] == "MISS"
    assert second.headers["X-Cache-Varnish"] == "HIT"
    assert second.headers["X-Cache-Varnish-Hits"] == "1"
    assert len(first.headers["X-Varnish"].split()) == 1  # a miss names only this request
    assert len(second.headers["X-Varnish"].split()) == 2  # a hit also names the request that stored it
    assert int(second.headers["Age"]) >= 0
    assert first.headers["X-Cache"] == "miss"  # the origin's own header, stored with the object
    assert first.content == second.content
    assert second.headers["Vary"] == "Accept"
    assert second.headers["Cache-Control"].startswith("max-age=31536000, public")
    assert varnish.origin_work() == (renders + 1, requests + 1)


def test_one_render_per_normalised_format(varnish: Stack) -> None:
    path = image_path(62)
    renders, requests = varnish.origin_work()
    outcomes: dict[str, list[str]] = {}
    for _ in range(2):
        for browser, accept in BROWSERS.items():
            response = varnish.cdn.get(path, accept)
            assert response.status_code == 200, response.text
            assert response.headers["Content-Type"] == EXPECTED_TYPE[browser], browser
            assert response.headers["Vary"] == "Accept"
            outcomes.setdefault(browser, []).append(response.headers["X-Cache-Varnish"])
    after_renders, after_requests = varnish.origin_work()
    # three output formats (AVIF, WebP, JPEG) -> exactly three renders and three origin requests
    assert (after_renders - renders, after_requests - requests) == (3, 3), outcomes
    misses = sum(v.count("MISS") for v in outcomes.values())
    hits = sum(v.count("HIT") for v in outcomes.values())
    assert (misses, hits) == (3, 2 * len(BROWSERS) - 3), outcomes
    # the first browser of each format missed; everybody else, including other browsers, hit
    assert outcomes["chrome"] == ["MISS", "HIT"]
    assert outcomes["firefox"] == outcomes["safari-17"] == outcomes["chromium-156"] == ["HIT", "HIT"]
    assert outcomes["edge-legacy"] == outcomes["old"] == ["MISS", "HIT"]
    FIGURES["varnish_browsers"] = {"requests": 2 * len(BROWSERS), "hits": hits, "misses": misses,
                                   "origin_renders": after_renders - renders, "per_browser": outcomes}


def test_without_accept_normalisation_every_browser_renders(
        varnish: Stack, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The control for the test above: the same VCL without the Accept block keeps one copy per exact
    Accept string, so each browser costs the origin a request."""
    raw = start_varnish(varnish.origin.base, tmp_path_factory.mktemp("varnish-raw"), normalise_accept=False)
    try:
        path = image_path(69)
        renders, requests = varnish.origin_work()
        states = []
        for _ in range(2):
            for browser, accept in BROWSERS.items():
                response = raw.get(path, accept)
                assert response.headers["Content-Type"] == EXPECTED_TYPE[browser], browser
                states.append(response.headers["X-Cache-Varnish"])
        after_renders, after_requests = varnish.origin_work()
        # every browser reaches the origin (which may still answer some from its own result cache)
        assert after_requests - requests == len(BROWSERS)
        assert after_renders - renders >= 3
        assert states.count("MISS") == len(BROWSERS)
        FIGURES["varnish_browsers_without_normalisation"] = {
            "requests": len(states), "hits": states.count("HIT"), "misses": states.count("MISS"),
            "origin_requests": after_requests - requests, "origin_renders": after_renders - renders}
    finally:
        raw.stop()


def test_revalidation_with_if_none_match(varnish: Stack) -> None:
    path = image_path(63)
    first = varnish.cdn.get(path, BROWSERS["firefox"])
    etag = first.headers["ETag"]
    assert etag.startswith('"')
    renders, requests = varnish.origin_work()
    revalidated = varnish.cdn.get(path, BROWSERS["firefox"], **{"If-None-Match": etag})
    assert revalidated.status_code == 304
    assert revalidated.content == b""
    assert revalidated.headers["ETag"] == etag
    assert revalidated.headers["X-Cache-Varnish"] == "HIT"
    stale = varnish.cdn.get(path, BROWSERS["firefox"], **{"If-None-Match": '"something-else"'})
    assert stale.status_code == 200
    assert stale.content == first.content
    # ETags are per variant: the JPEG copy has another one, and Firefox's tag does not match it
    jpeg = varnish.cdn.get(path, BROWSERS["old"], **{"If-None-Match": etag})
    assert jpeg.status_code == 200
    assert jpeg.headers["Content-Type"] == "image/jpeg"
    assert jpeg.headers["ETag"] != etag
    assert varnish.origin_work() == (renders + 1, requests + 1)  # only the JPEG variant reached it


def test_errors_are_not_cached(varnish: Stack) -> None:
    missing = sign("/rs:fit:200:0/plain/local:///no-such-image.jpg")
    forged = "/" + "A" * 43 + "/rs:fit:200:0/plain/local:///grace-hopper-512x600.jpg"
    for path, status in ((missing, 404), (forged, 403)):
        _, requests = varnish.origin_work()
        answers = [varnish.cdn.get(path, BROWSERS["chrome"]) for _ in range(2)]
        assert [a.status_code for a in answers] == [status, status]
        assert all(a.headers["Cache-Control"] == "no-store" for a in answers)
        assert all(a.headers["X-Cache-Varnish"] == "MISS" for a in answers)
        _, after = varnish.origin_work()
        assert after - requests == 2, f"{status}: the second request did not reach the origin"


def test_concurrent_misses_collapse(varnish: Stack) -> None:
    path = image_path(64, "storm-exif6-480x320.jpg")
    renders, requests = varnish.origin_work()
    before = varnish.cdn.stats()

    def fetch(_: int) -> httpx.Response:
        return varnish.cdn.get(path, BROWSERS["chrome"])

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(fetch, range(20)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    after_renders, after_requests = varnish.origin_work()
    # one origin request, not 20 coalesced inside the origin: Varnish's waiting list held the others
    assert (after_renders - renders, after_requests - requests) == (1, 1)
    after = varnish.cdn.stats()
    states = [a.headers["X-Cache-Varnish"] for a in answers]
    assert states.count("MISS") == 1
    FIGURES["varnish_burst"] = {
        "concurrent_requests": 20, "origin_requests": after_requests - requests,
        "origin_renders": after_renders - renders,
        "misses": states.count("MISS"), "hits": states.count("HIT"),
        "varnish_busy_sleep": after.get("busy_sleep", 0) - before.get("busy_sleep", 0),
        "varnish_busy_wakeup": after.get("busy_wakeup", 0) - before.get("busy_wakeup", 0)}


def test_purge_and_methods(varnish: Stack) -> None:
    path = image_path(65)
    assert varnish.cdn.get(path, BROWSERS["chrome"]).headers["X-Cache-Varnish"] == "MISS"
    assert varnish.cdn.get(path, BROWSERS["chrome"]).headers["X-Cache-Varnish"] == "HIT"
    purged = httpx.request("PURGE", varnish.cdn.base + path, timeout=10)
    assert purged.status_code == 200
    assert varnish.cdn.get(path, BROWSERS["chrome"]).headers["X-Cache-Varnish"] == "MISS"
    _, requests = varnish.origin_work()
    posted = httpx.post(varnish.cdn.base + path, content=b"x", timeout=10)
    assert posted.status_code == 405
    assert posted.headers["Allow"] == "GET, HEAD"
    assert varnish.origin_work()[1] == requests  # refused at the edge
    # cookies and query strings neither split the cache nor reach the origin
    hit = varnish.cdn.get(path + "?utm_source=x", BROWSERS["chrome"], Cookie="session=1")
    assert hit.headers["X-Cache-Varnish"] == "HIT"


def test_grace_serves_stale_while_revalidating(server_factory: Callable[..., Server],
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    metrics_port = free_port()
    origin = server_factory(origin_env(metrics_port, IMGORIGIN_TTL="1"))
    cdn = start_varnish(origin.base, tmp_path_factory.mktemp("varnish-grace"))
    stack = Stack(origin, f"http://127.0.0.1:{metrics_port}/metrics", cdn)
    try:
        path = image_path(66)
        first = cdn.get(path, BROWSERS["chrome"])
        assert first.headers["Cache-Control"] == "max-age=1, public, stale-while-revalidate=60"
        time.sleep(2.2)  # past max-age, within stale-while-revalidate
        _, requests = stack.origin_work()
        started = time.monotonic()
        stale = cdn.get(path, BROWSERS["chrome"])
        assert time.monotonic() - started < 0.5
        assert stale.headers["X-Cache-Varnish"] == "HIT"
        assert int(stale.headers["Age"]) >= 2  # the expired copy, served at once
        deadline = time.monotonic() + 10
        while stack.origin_work()[1] == requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stack.origin_work()[1] == requests + 1  # one background refresh
        fresh = cdn.get(path, BROWSERS["chrome"])
        assert int(fresh.headers["Age"]) < 2
    finally:
        cdn.stop()


def test_nginx_normalises_accept_and_ignores_raw_vary(server_factory: Callable[..., Server],
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    """nginx keeps one variant per *exact* Accept string when it honours Vary; the example config keys on
    the normalised Accept and ignores Vary for caching, so it too renders once per format."""
    metrics_port = free_port()
    origin = server_factory(origin_env(metrics_port))
    cdn = start_nginx(origin.base, tmp_path_factory.mktemp("nginx"))
    stack = Stack(origin, f"http://127.0.0.1:{metrics_port}/metrics", cdn)
    try:
        path = image_path(67)
        renders, requests = stack.origin_work()
        states: dict[str, list[str]] = {}
        for _ in range(2):
            for browser, accept in BROWSERS.items():
                response = cdn.get(path, accept)
                assert response.status_code == 200
                assert response.headers["Content-Type"] == EXPECTED_TYPE[browser], browser
                assert response.headers["Vary"] == "Accept"  # still told to browsers
                states.setdefault(browser, []).append(response.headers["X-Cache-Nginx"])
        after_renders, after_requests = stack.origin_work()
        assert (after_renders - renders, after_requests - requests) == (3, 3), states
        missing = sign("/rs:fit:200:0/plain/local:///no-such-image.jpg")
        assert [cdn.get(missing).status_code for _ in range(2)] == [404, 404]
        assert stack.origin_work()[1] == after_requests + 2  # errors are not cached

        burst_path = image_path(68)
        renders, requests = stack.origin_work()
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda _: cdn.get(burst_path, BROWSERS["firefox"]), range(20)))
        assert {a.status_code for a in answers} == {200}
        after_renders, after_requests = stack.origin_work()
        assert (after_renders - renders, after_requests - requests) == (1, 1)
        FIGURES["nginx_browsers"] = {
            "requests": 2 * len(BROWSERS), "origin_renders": 3,
            "hits": sum(v.count("HIT") for v in states.values()),
            "misses": sum(v.count("MISS") for v in states.values()), "per_browser": states}
        FIGURES["nginx_burst"] = {"concurrent_requests": 20, "origin_requests": after_requests - requests,
                                  "origin_renders": after_renders - renders}
    finally:
        cdn.stop()
