"""The ``imgorigin`` command: ``serve``, ``sign``, ``health`` and ``version``."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from . import __version__
from .config import ConfigError, Settings, parse_bind, reference_markdown
from .logs import configure as configure_logs
from .urlbuilder import UrlBuilder

__all__ = ["main"]

log = logging.getLogger("imgorigin")

#: what ``serve --dev`` (``make run``) uses for every variable the environment leaves unset
DEV_DEFAULTS = {
    "IMGORIGIN_BIND": "127.0.0.1:8080",
    "IMGORIGIN_LOCAL_FILESYSTEM_ROOT": "examples/images",
    "IMGORIGIN_CACHE_DIR": ".cache/imgorigin",
    "IMGORIGIN_AUTO_WEBP": "true",
    "IMGORIGIN_AUTO_AVIF": "true",
}


_IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "avif", "gif", "svg", "tif", "tiff"})


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="imgorigin", description="An imgproxy-compatible image origin.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve images (configured by IMGORIGIN_* variables)")
    serve.add_argument("--allow-unsigned", action="store_true", help="serve without a signing key")
    serve.add_argument("--dev", action="store_true",
                       help="development defaults: 127.0.0.1:8080, examples/images, a disk cache and "
                            "a fresh key, with sample URLs printed")
    sign = commands.add_parser("sign", help="print a signed URL (key and salt from IMGORIGIN_KEY/SALT)")
    sign.add_argument("source", help="source URL, e.g. local:///cat.jpg or https://host/cat.jpg")
    sign.add_argument("options", nargs="*", help="options as in URLs, e.g. rs:fill:300:200 g:sm q:80")
    sign.add_argument("--extension", "-e", help="output format, e.g. webp")
    sign.add_argument("--base-url", default="", help="prefix of the printed URL")
    sign.add_argument("--encode", action="store_true", help="write the source as base64url")
    health = commands.add_parser("health", help="probe /health of the local server; exit 0 or 1")
    health.add_argument("--url", help="health URL (default: from IMGORIGIN_BIND and _PATH_PREFIX)")
    commands.add_parser("version", help="print the version")
    commands.add_parser("settings", help="print the configuration reference (Markdown)")
    args = parser.parse_args(argv)

    if args.command == "version":
        print(__version__)
        return 0
    if args.command == "settings":
        print(reference_markdown(), end="")
        return 0
    try:
        if args.command == "serve":
            return _serve(args.allow_unsigned, args.dev)
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"imgorigin: {exc}", file=sys.stderr)
        return 2
    if args.command == "sign":
        return _sign(settings, args)
    return _health(settings, args.url)


def _builder(settings: Settings, base_url: str = "", *, encode: bool = False) -> UrlBuilder:
    key = settings.key[0] if settings.key else None
    salt = settings.salt[0] if settings.salt else None
    return UrlBuilder(base_url, key=key, salt=salt, signature_size=settings.signature_size, encode=encode)


def _sign(settings: Settings, args: argparse.Namespace) -> int:
    options: dict[str, list[str]] = {}
    for item in args.options:
        name, sep, rest = item.partition(":")
        if not sep:
            print(f"imgorigin: option {item!r} must look like name:arg[:arg...]", file=sys.stderr)
            return 2
        options[name] = rest.split(":")
    try:
        print(_builder(settings, args.base_url, encode=args.encode).url(
            args.source, extension=args.extension, **options))
    except TypeError as exc:
        print(f"imgorigin: {exc}", file=sys.stderr)
        return 2
    return 0


def _health(settings: Settings, url: str | None) -> int:
    if url is None:
        host, port = parse_bind(settings.bind)
        host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        url = f"http://{host}:{port}{settings.path_prefix}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (our own server)
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


def _serve(allow_unsigned: bool, dev: bool) -> int:
    defaults = dict(DEV_DEFAULTS) if dev else {}
    if dev:
        defaults["IMGORIGIN_KEY"] = secrets.token_hex(32)
        defaults["IMGORIGIN_SALT"] = secrets.token_hex(32)
    settings = Settings.from_env(defaults=defaults)
    configure_logs(settings.log_format, settings.log_level)
    if not settings.signing_enabled:
        if not (allow_unsigned or settings.allow_unsigned):
            print("imgorigin: no signing key: set IMGORIGIN_KEY and IMGORIGIN_SALT (hex), or allow "
                  "unsigned URLs with IMGORIGIN_ALLOW_UNSIGNED=true / --allow-unsigned", file=sys.stderr)
            return 2
        log.warning("SIGNING IS OFF: anyone can make this server fetch and process any allowed source")

    from .server import check_address, hypercorn_config, serve, supervise

    try:
        check_address(settings.bind)
    except OSError as exc:
        print(f"imgorigin: cannot listen on {settings.bind}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    config = hypercorn_config(settings)
    count = settings.process_count
    base = f"http://{config.bind[0].replace('0.0.0.0', '127.0.0.1')}{settings.path_prefix}"
    processes = f" ({count} processes)" if count > 1 else ""
    print(f"imgorigin {__version__} serving on {base}{processes}", flush=True)
    if dev:
        _print_dev(settings, base)
    if count > 1:
        status = supervise(settings, config, count)
    else:
        serve(settings, config)
        status = 0
    log.info("stopped")
    return status


def _print_dev(settings: Settings, base: str) -> None:
    print(f"dev key:  IMGORIGIN_KEY={settings.key[0].hex()}")
    print(f"dev salt: IMGORIGIN_SALT={settings.salt[0].hex()}")
    print("sample signed URLs:")
    builder = _builder(settings, base)
    root = settings.local_filesystem_root
    names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    for name in (n for n in names if n.rsplit(".", 1)[-1].lower() in _IMAGE_EXTENSIONS):
        source = f"local:///{name}"
        print(f"  {builder.url(source, resizing_type='fill', width=300, height=200, gravity='sm')}")
        print(f"  {builder.url(source, width=600, extension='webp')}")
