"""Render examples/web/index.html with signed imgorigin URLs, the way a site's server would.

    IMGORIGIN_KEY=... IMGORIGIN_SALT=... python examples/web/page.py http://127.0.0.1:8080 > page.html
    python examples/web/page.py http://127.0.0.1:8080 --serve 8000      # or serve it on 127.0.0.1:8000

The images are ``local:///`` sources, so point it at a server whose IMGORIGIN_LOCAL_FILESYSTEM_ROOT holds
tests/images (``grace-hopper-512x600.jpg``).
Each image's placeholder (dominant colour and ThumbHash) comes from imgorigin's ``/info`` endpoint when the
page is rendered, and is painted by the page's inline script before the image loads.
"""

from __future__ import annotations

import argparse
import html
import http.server
import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

from imgorigin.urlbuilder import UrlBuilder

TEMPLATE = Path(__file__).with_name("index.html")

HERO = "local:///grace-hopper-512x600.jpg"
PICTURE = "local:///grace-hopper-512x600.jpg"
CROP = "local:///grace-hopper-512x600.jpg"
#: the hero's srcset widths and its displayed width (CSS `.hero { width: 20vw }`)
HERO_WIDTHS = (160, 320, 480)
HERO_SIZES = "20vw"
PICTURE_WIDTH = 120
CROP_SIZE = 150
FOCAL_POINT = ("fp", 0.3, 0.4)


def fetch_info(images: UrlBuilder, source: str) -> dict[str, Any]:
    """imgorigin's facts and placeholders for ``source`` (``/info/<signature>/<options>/<source>``)."""
    url = images.base_url + "/info" + images.path(source)
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (scheme checked above)
        info: dict[str, Any] = json.load(response)
    return info


def urls(images: UrlBuilder) -> dict[str, str]:
    """Every URL the page uses, by template name."""
    picture = {"resizing_type": "fit", "width": PICTURE_WIDTH, "height": 0}
    crop = {"resizing_type": "fill", "width": CROP_SIZE, "height": CROP_SIZE, "gravity": FOCAL_POINT}

    def density(source: str, options: dict[str, Any], extension: str | None = None) -> str:
        """``<1x url> 1x, <2x url> 2x``: the same box, twice the pixels (imgorigin's ``dpr`` option)."""
        return ", ".join(f"{images.url(source, dpr=d if d > 1 else None, extension=extension, **options)} "
                         f"{d}x" for d in (1, 2))

    return {
        "hero_src": images.url(HERO, width=HERO_WIDTHS[0]),
        "hero_srcset": images.srcset(HERO, widths=HERO_WIDTHS),
        "hero_sizes": HERO_SIZES,
        "picture_avif": density(PICTURE, picture, "avif"),
        "picture_webp": density(PICTURE, picture, "webp"),
        "picture_jpeg": density(PICTURE, picture, "jpg"),
        "picture_src": images.url(PICTURE, extension="jpg", **picture),
        "crop_src": images.url(CROP, **crop),
        "crop_srcset": density(CROP, crop),
    }


def render(base_url: str, *, key: str | None, salt: str | None,
           info: dict[str, dict[str, Any]] | None = None) -> str:
    """The page's HTML for an imgorigin at ``base_url``. ``info`` (source -> /info answer) is fetched
    from the server when not given."""
    images = UrlBuilder(base_url, key=key, salt=salt)
    info = info or {source: fetch_info(images, source) for source in (HERO, PICTURE, CROP)}
    hero, picture, crop = info[HERO], info[PICTURE], info[CROP]
    values: dict[str, str] = {
        **urls(images),
        "hero_width": str(HERO_WIDTHS[0]),
        "hero_height": str(round(HERO_WIDTHS[0] * hero["height"] / hero["width"])),
        "hero_ratio": f"{hero['width']} / {hero['height']}",
        "picture_ratio": f"{picture['width']} / {picture['height']}",
    }
    for name, facts in (("hero", hero), ("picture", picture), ("crop", crop)):
        values[f"{name}_color"] = facts["dominant_color"]
        values[f"{name}_thumbhash"] = facts["thumbhash"]
    page = TEMPLATE.read_text()
    for name, value in values.items():
        page = page.replace("{{ " + name + " }}", html.escape(value))
    if "{{ " in page:
        raise ValueError(f"unfilled template field near {page[page.index('{{ '):][:40]!r}")
    return page


def make_server(page: str, port: int = 0) -> http.server.ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1:``port`` (0: any free port) answering every GET with ``page``."""
    body = page.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: no access log on stderr
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)


def serve(page: str, port: int) -> None:
    """Serve ``page`` at ``/`` on 127.0.0.1:``port`` until interrupted."""
    with make_server(page, port) as server:
        print(f"http://127.0.0.1:{server.server_address[1]}/", file=sys.stderr)
        server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="imgorigin (or the CDN in front of it), e.g. http://127.0.0.1:8080")
    parser.add_argument("--key", default=os.environ.get("IMGORIGIN_KEY"), help="hex (default $IMGORIGIN_KEY)")
    parser.add_argument("--salt", default=os.environ.get("IMGORIGIN_SALT"),
                        help="hex (default $IMGORIGIN_SALT)")
    parser.add_argument("--serve", type=int, metavar="PORT", help="serve the page on 127.0.0.1:PORT")
    args = parser.parse_args(argv)
    page = render(args.base_url, key=args.key, salt=args.salt)
    if args.serve:
        serve(page, args.serve)
    else:
        sys.stdout.write(page)


if __name__ == "__main__":
    main()
