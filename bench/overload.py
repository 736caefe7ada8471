"""Overload figures: open-loop load at twice the measured capacity for 10 s against a real imgorigin
(IMGORIGIN_WORKERS=2, IMGORIGIN_REQUESTS_QUEUE_SIZE=4) and a local upstream that takes 0.2 s per image.

Run: .venv/bin/python bench/overload.py  (127.0.0.1 only; about 20 s)
"""
import asyncio, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import httpx
from aiohttp import web
from conftest import Upstream, base_env, sign, start_server, stop_server, geometry_png, free_port
import threading

def main() -> None:
    up = Upstream(port=free_port())
    data = (Path(__file__).resolve().parent.parent / "tests/images/grace-hopper-512x600.jpg").read_bytes()
    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)  # each image: 0.2 s download + render
        return web.Response(body=data, content_type="image/jpeg")
    loop = asyncio.new_event_loop(); app = web.Application(); app.router.add_get("/{x:.*}", handle)
    runner = web.AppRunner(app); ready = threading.Event()
    def run():
        asyncio.set_event_loop(loop); loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", up.port).start()); ready.set(); loop.run_forever()
    threading.Thread(target=run, daemon=True).start(); ready.wait()
    import tempfile; tmp = Path(tempfile.mkdtemp(prefix="imgorigin-overload-"))
    env = {**base_env(up, tmp), "IMGORIGIN_WORKERS": "2", "IMGORIGIN_REQUESTS_QUEUE_SIZE": "4"}
    env.pop("IMGORIGIN_CACHE_DIR"); env["IMGORIGIN_MEMORY_CACHE_SIZE"] = "0"
    server = start_server(env, tmp)
    rss = lambda: int([l for l in Path(f"/proc/{server.process.pid}/status").read_text().splitlines() if l.startswith("VmRSS")][0].split()[1])
    # capacity: measure one closed-loop second first
    async def measure() -> None:
        async with httpx.AsyncClient(base_url=server.base, timeout=30, limits=httpx.Limits(max_connections=200)) as c:
            n = 0; t0 = time.monotonic(); i = 0
            async def one(k):
                return await c.get(sign(f"/w:64/cb:cap{k}/plain/{up.url('a.jpg')}"))
            while time.monotonic() - t0 < 5:
                rs = await asyncio.gather(*(one(i + j) for j in range(2))); i += 2; n += 2
            capacity = n / (time.monotonic() - t0)
            rate = 2 * capacity
            print(f"capacity (closed loop, 2 in flight): {capacity:.1f} req/s; offering {rate:.1f} req/s for 10 s")
            rss0 = rss(); peak = rss0
            results = []; tasks = []
            async def timed(k):
                s = time.monotonic(); r = await one(f"o{k}"); results.append((r.status_code, time.monotonic() - s, r.headers.get("retry-after")))
            t0 = time.monotonic(); k = 0
            while time.monotonic() - t0 < 10:
                tasks.append(asyncio.create_task(timed(k))); k += 1
                peak = max(peak, rss())
                await asyncio.sleep(1 / rate)
            await asyncio.gather(*tasks)
            ok = sorted(d for s, d, _ in results if s == 200); shed = sorted(d for s, d, _ in results if s == 429) or [0.0]
            other = [s for s, _, _ in results if s not in (200, 429)]
            q = lambda xs, p: xs[min(len(xs) - 1, int(p * len(xs)))] * 1000
            print(f"sent {len(results)}: admitted {len(ok)} (all 200), shed {len(shed)} with 429 (Retry-After on all: {all(r == '1' for s, _, r in results if s == 429)}), other statuses {other}")
            print(f"admitted latency p50 {q(ok, .5):.0f} ms, p99 {q(ok, .99):.0f} ms, max {ok[-1]*1000:.0f} ms; shed latency p50 {q(shed, .5):.1f} ms, max {shed[-1]*1000:.1f} ms")
            print(f"server RSS {rss0/1024:.0f} MB before, peak {peak/1024:.0f} MB during")
    try:
        asyncio.run(measure())
    finally:
        stop_server(server)

main()
