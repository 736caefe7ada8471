"""Settings: read once from the environment, validated eagerly, frozen, and passed explicitly.

Every setting is a field of :class:`Settings` whose metadata names its variable, its parser and its
meaning. ``IMGORIGIN_<NAME>`` is read first; settings that imgproxy also has accept ``IMGPROXY_<NAME>``
as an alias, so an imgproxy deployment switches without renaming. This module is the only reader of
``os.environ``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .formats import ImageFormat

__all__ = ["PREFIXES", "ConfigError", "Settings", "available_cpus", "parse_bind", "reference_markdown"]

PREFIXES = ("IMGORIGIN_", "IMGPROXY_")

T = TypeVar("T")
Parser = Callable[[str], Any]


class ConfigError(ValueError):
    """One or more settings are invalid; the message names each variable and what it accepts."""


# --- value parsers: each raises ValueError saying what is accepted ---------------------------------

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _bool(raw: str) -> bool:
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError("expected a boolean: true/false, 1/0, t/f")


def _int_in(low: int, high: int | None = None) -> Parser:
    def parse(raw: str) -> int:
        if not re.fullmatch(r"-?[0-9]+", raw.strip()):
            raise ValueError(f"expected an integer{_range_text(low, high)}")
        value = int(raw.strip())
        if value < low or (high is not None and value > high):
            raise ValueError(f"expected an integer{_range_text(low, high)}")
        return value

    return parse


def _float_in(low: float, high: float | None = None) -> Parser:
    def parse(raw: str) -> float:
        text = raw.strip()
        if not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text):
            raise ValueError(f"expected a decimal number{_range_text(low, high)}")
        value = float(text)
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            raise ValueError(f"expected a decimal number{_range_text(low, high)}")
        return value

    return parse


def _range_text(low: float, high: float | None) -> str:
    return f" >= {low}" if high is None else f" from {low} to {high}"


def _str(raw: str) -> str:
    return raw


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _hex_list(raw: str) -> tuple[bytes, ...]:
    out = []
    for item in _list(raw):
        try:
            out.append(bytes.fromhex(item))
        except ValueError:
            raise ValueError("expected hex-encoded bytes (comma-separated for several)") from None
        if not out[-1]:
            raise ValueError("expected non-empty hex-encoded bytes")
    return tuple(out)


def _formats(raw: str) -> tuple[ImageFormat, ...]:
    out = []
    for item in _list(raw):
        try:
            out.append(ImageFormat.from_name(item))
        except ValueError:
            raise ValueError(f"unknown format {item!r}; expected names like jpeg,png,webp") from None
    return tuple(out)


def _format_quality(raw: str) -> tuple[tuple[ImageFormat, int], ...]:
    out = []
    for item in _list(raw):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not re.fullmatch(r"[0-9]{1,3}", value.strip()) or int(value) > 100:
            raise ValueError("expected format=quality pairs like webp=79,avif=63 (quality 0-100)")
        out.append((_formats(name)[0], int(value)))
    return tuple(out)


def _presets(raw: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out = []
    for item in _list(raw):
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ValueError(f"preset {item!r}: expected name=option/option")
        segments = tuple(value.split("/"))
        if any(":" not in segment for segment in segments):
            raise ValueError(f"preset {item!r}: every part must be an option with arguments (name:arg)")
        out.append((name, segments))
    return tuple(out)


def _path_prefix(raw: str) -> str:
    if raw and (not raw.startswith("/") or raw.endswith("/")):
        raise ValueError("expected a path starting with '/' and not ending with '/', e.g. /images")
    return raw


def parse_bind(raw: str) -> tuple[str, int]:
    """Split ``host:port`` (``:8080`` = every address, ``[::1]:8080`` for IPv6) into host and port."""
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]*):([0-9]{1,5})", raw.strip())
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ValueError("expected host:port, e.g. 127.0.0.1:8080, :8080 or [::1]:8080")
    host = match.group(1).strip("[]") or "0.0.0.0"
    return host, int(match.group(2))


def _bind(raw: str) -> str:
    parse_bind(raw)
    return raw.strip()


def _result_storage(raw: str) -> str:
    raw = raw.strip()
    if raw and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.\-]{1,62}(/[^?#]*)?|local:///[^?#]+", raw):
        raise ValueError("expected s3://bucket[/prefix] or local:///absolute/path")
    return raw.rstrip("/")


def _optional_bind(raw: str) -> str:
    return _bind(raw) if raw.strip() else ""


def _metric_namespace(raw: str) -> str:
    if raw and not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", raw):
        raise ValueError("expected a metric name prefix: letters, digits and _")
    return raw


def _choice(*choices: str) -> Parser:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _networks(raw: str) -> tuple[str, ...]:
    # validated by security.parse_allowed_networks at start-up, which owns the syntax
    return _list(raw)


# --- the settings table ----------------------------------------------------------------------------


def _env(name: str, parse: Parser, doc: str, *, imgproxy: bool = True, section: str = "server") -> Any:
    return {"env": name, "parse": parse, "doc": doc, "imgproxy": imgproxy, "section": section}


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota when one is set."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def _setting(default: Any, name: str, parse: Parser, doc: str, **kw: Any) -> Any:
    return field(default=default, metadata=_env(name, parse, doc, **kw))


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every server setting, with imgproxy's defaults unless a safer default is documented."""

    # signing
    key: tuple[bytes, ...] = _setting((), "KEY", _hex_list, "Hex-encoded HMAC key(s); comma-separated "
                                      "for rotation, paired with SALT.", section="signing")
    salt: tuple[bytes, ...] = _setting((), "SALT", _hex_list, "Hex-encoded salt(s), one per key.",
                                       section="signing")
    signature_size: int = _setting(32, "SIGNATURE_SIZE", _int_in(1, 32),
                                   "Bytes of the HMAC digest kept in the signature.", section="signing")
    trusted_signatures: tuple[str, ...] = _setting((), "TRUSTED_SIGNATURES", _list,
                                                   "Signatures accepted as they are.", section="signing")
    allow_unsigned: bool = _setting(False, "ALLOW_UNSIGNED", _bool, "Serve without a key (any signature "
                                    "segment accepted). Required to start without KEY/SALT.",
                                    imgproxy=False, section="signing")

    # server
    bind: str = _setting(":8080", "BIND", _bind, "Address the server listens on (host:port).")
    path_prefix: str = _setting("", "PATH_PREFIX", _path_prefix, "Prefix of every route, e.g. /images.")
    workers: int = _setting(os.cpu_count() or 1, "WORKERS", _int_in(1, 1024),
                            "Images processed at once (default: the number of CPUs).")
    processes: int = _setting(1, "PROCESSES", _int_in(0, 64), "Server processes sharing the listener "
                              "(0 = one per CPU available). WORKERS, REQUESTS_QUEUE_SIZE, MAX_CLIENTS and "
                              "the memory caches are totals, shared out among them.", imgproxy=False)
    event_loop: str = _setting("uvloop", "EVENT_LOOP", _choice("uvloop", "asyncio"), "uvloop (less CPU "
                               "per request, measured by make bench) or asyncio's own loop.", imgproxy=False)
    timeout: float = _setting(10.0, "TIMEOUT", _float_in(0.1), "Seconds a request may take in all.")
    ttl: int = _setting(31536000, "TTL", _int_in(0), "max-age of Cache-Control on images, in seconds.")
    return_attachment: bool = _setting(False, "RETURN_ATTACHMENT", _bool,
                                       "Content-Disposition: attachment instead of inline.")
    allow_origin: str = _setting("", "ALLOW_ORIGIN", _str, "Value of Access-Control-Allow-Origin, if any.")
    requests_queue_size: int = _setting(0, "REQUESTS_QUEUE_SIZE", _int_in(0), "Requests that may wait "
                                        "for a worker; beyond that 429 (0 = no limit).")
    max_clients: int = _setting(2048, "MAX_CLIENTS", _int_in(0), "Requests handled at once; more wait "
                                "(0 = no limit).")
    graceful_stop_timeout: float = _setting(20.0, "GRACEFUL_STOP_TIMEOUT", _float_in(0.0),
                                            "Seconds in-flight requests get to finish after SIGTERM.")
    shutdown_delay: float = _setting(0.0, "SHUTDOWN_DELAY", _float_in(0.0), "Seconds /health answers 503 "
                                     "after SIGTERM before the listener closes.", imgproxy=False)
    prometheus_bind: str = _setting("", "PROMETHEUS_BIND", _optional_bind, "Address of the metrics "
                                    "listener, e.g. :8081 (empty = off).", section="operations")
    prometheus_namespace: str = _setting("", "PROMETHEUS_NAMESPACE", _metric_namespace,
                                         "Prefix of every metric name.", section="operations")
    log_format: str = _setting("auto", "LOG_FORMAT", _choice("auto", "json", "pretty", "structured"),
                               "auto (pretty on a terminal, JSON otherwise), json or pretty.",
                               section="operations")
    log_level: str = _setting("info", "LOG_LEVEL", _choice("debug", "info", "warn", "warning", "error"),
                              "Lowest level logged.", section="operations")

    # URL and options
    presets: tuple[tuple[str, tuple[str, ...]], ...] = _setting(
        (), "PRESETS", _presets, "Named option sets: name=opt:arg/opt:arg,name2=...", section="url")
    only_presets: bool = _setting(False, "ONLY_PRESETS", _bool,
                                  "The first segment is always a list of presets.", section="url")
    base_url: str = _setting("", "BASE_URL", _str, "Prefix added to every source URL.", section="url")
    allow_security_options: bool = _setting(False, "ALLOW_SECURITY_OPTIONS", _bool,
                                            "Allow max_src_resolution and friends in URLs.", section="url")

    # sources
    allowed_sources: tuple[str, ...] = _setting((), "ALLOWED_SOURCES", _list, "Source URL prefixes "
                                                "allowed (* matches within a segment); empty = all.",
                                                section="sources")
    local_filesystem_root: str = _setting("", "LOCAL_FILESYSTEM_ROOT", _str,
                                          "Directory served by local:/// URLs; empty = local off.",
                                          section="sources")
    download_timeout: float = _setting(5.0, "DOWNLOAD_TIMEOUT", _float_in(0.1),
                                       "Seconds to fetch a source.", section="sources")
    max_redirects: int = _setting(10, "MAX_REDIRECTS", _int_in(0, 50), "Redirects followed per fetch.",
                                  section="sources")
    stream_sources: bool = _setting(True, "STREAM_SOURCES", _bool, "Decode JPEG and PNG http(s) sources "
                                    "while they download (less latency from slow upstreams, about 4 ms more "
                                    "CPU per MB); off = decode after the whole download.", imgproxy=False,
                                    section="sources")
    user_agent: str = _setting("", "USER_AGENT", _str, "User-Agent sent to sources "
                               "(default imgorigin/<version>).", section="sources")
    allow_loopback_source_addresses: bool = _setting(
        False, "ALLOW_LOOPBACK_SOURCE_ADDRESSES", _bool, "Fetch from 127.0.0.0/8, ::1, 0.0.0.0.",
        section="sources")
    allow_link_local_source_addresses: bool = _setting(
        False, "ALLOW_LINK_LOCAL_SOURCE_ADDRESSES", _bool, "Fetch from 169.254.0.0/16, fe80::/10.",
        section="sources")
    allow_private_source_addresses: bool = _setting(
        False, "ALLOW_PRIVATE_SOURCE_ADDRESSES", _bool, "Fetch from RFC 1918, CGNAT and fc00::/7 "
        "addresses (imgproxy allows them by default; we do not).", section="sources")
    allowed_source_networks: tuple[str, ...] = _setting(
        (), "ALLOWED_SOURCE_NETWORKS", _networks, "Addresses or CIDRs, each with an optional port, "
        "reachable in spite of the address policy (e.g. 10.1.2.0/24,127.0.0.1:9000,[::1]:9000).",
        imgproxy=False, section="sources")
    max_src_file_size: int = _setting(50 * 1024 * 1024, "MAX_SRC_FILE_SIZE", _int_in(0),
                                      "Largest source in bytes (0 = no limit; default 50 MiB).",
                                      section="sources")

    use_s3: bool = _setting(False, "USE_S3", _bool, "Enable s3://bucket/key sources.", section="sources")
    s3_endpoint: str = _setting("", "S3_ENDPOINT", _str, "S3 endpoint URL (empty = AWS).", section="sources")
    s3_region: str = _setting("us-east-1", "S3_REGION", _str, "S3 region.", section="sources")
    s3_endpoint_use_path_style: bool = _setting(True, "S3_ENDPOINT_USE_PATH_STYLE", _bool,
                                                "Path-style S3 addressing.", section="sources")
    s3_allowed_buckets: tuple[str, ...] = _setting((), "S3_ALLOWED_BUCKETS", _list,
                                                   "Buckets s3:// may read (empty = all).", section="sources")
    s3_denied_buckets: tuple[str, ...] = _setting((), "S3_DENIED_BUCKETS", _list,
                                                  "Buckets s3:// may never read.", section="sources")

    # processing
    max_src_resolution: float = _setting(50.0, "MAX_SRC_RESOLUTION", _float_in(0.0),
                                         "Largest source in megapixels.", section="processing")
    max_animation_frames: int = _setting(100, "MAX_ANIMATION_FRAMES", _int_in(1, 10000), "Most frames of "
                                         "an animation kept (more: the first frame only; imgproxy: 1).",
                                         section="processing")
    max_animation_frame_resolution: float = _setting(0.0, "MAX_ANIMATION_FRAME_RESOLUTION", _float_in(0.0),
                                                     "Largest frame in megapixels (0 = frames are counted "
                                                     "together against MAX_SRC_RESOLUTION).",
                                                     section="processing")
    max_result_dimension: int = _setting(0, "MAX_RESULT_DIMENSION", _int_in(0),
                                         "Largest result side in pixels (0 = no limit).",
                                         section="processing")
    quality: int = _setting(80, "QUALITY", _int_in(1, 100), "Default encoder quality.",
                            section="processing")
    format_quality: tuple[tuple[ImageFormat, int], ...] = _setting(
        ((ImageFormat.WEBP, 79), (ImageFormat.AVIF, 63), (ImageFormat.JXL, 77)), "FORMAT_QUALITY",
        _format_quality, "Default quality per format: webp=79,avif=63.", section="processing")
    auto_webp: bool = _setting(False, "AUTO_WEBP", _bool, "Answer WebP to clients that accept it.",
                               section="processing")
    auto_avif: bool = _setting(False, "AUTO_AVIF", _bool, "Answer AVIF to clients that accept it.",
                               section="processing")
    enforce_webp: bool = _setting(False, "ENFORCE_WEBP", _bool, "Also replace an explicit format with "
                                  "WebP for clients that accept it.", section="processing")
    enforce_avif: bool = _setting(False, "ENFORCE_AVIF", _bool, "Also replace an explicit format with "
                                  "AVIF for clients that accept it.", section="processing")
    preferred_formats: tuple[ImageFormat, ...] = _setting(
        (ImageFormat.JPEG, ImageFormat.PNG, ImageFormat.GIF), "PREFERRED_FORMATS", _formats,
        "Output formats chosen from when none is asked for.", section="processing")
    strip_metadata: bool = _setting(True, "STRIP_METADATA", _bool, "Remove EXIF/XMP/IPTC.",
                                    section="processing")
    keep_copyright: bool = _setting(True, "KEEP_COPYRIGHT", _bool, "Keep copyright when stripping.",
                                    section="processing")
    strip_color_profile: bool = _setting(True, "STRIP_COLOR_PROFILE", _bool,
                                         "Convert to sRGB and drop the ICC profile.", section="processing")
    auto_rotate: bool = _setting(True, "AUTO_ROTATE", _bool, "Apply the EXIF orientation.",
                                 section="processing")
    jpeg_progressive: bool = _setting(False, "JPEG_PROGRESSIVE", _bool, "Progressive JPEG.",
                                      section="processing")
    png_interlaced: bool = _setting(False, "PNG_INTERLACED", _bool, "Interlaced PNG.",
                                    section="processing")
    png_quantize: bool = _setting(False, "PNG_QUANTIZE", _bool, "Palette (quantised) PNG output.",
                                  section="processing")
    png_quantization_colors: int = _setting(256, "PNG_QUANTIZATION_COLORS", _int_in(2, 256),
                                            "Most colours of a quantised PNG (up to 2, 4, 16 or 256).",
                                            section="processing")
    webp_effort: int = _setting(4, "WEBP_EFFORT", _int_in(0, 6), "WebP encoder effort (0 fastest).",
                                section="processing")
    avif_speed: int = _setting(8, "AVIF_SPEED", _int_in(0, 9), "AVIF encoder speed (9 fastest; "
                               "libvips effort = 9 - speed).", section="processing")

    watermark_data: str = _setting("", "WATERMARK_DATA", _str, "Watermark image, base64-encoded.",
                                   section="processing")
    watermark_path: str = _setting("", "WATERMARK_PATH", _str, "Watermark image file.", section="processing")
    watermark_url: str = _setting("", "WATERMARK_URL", _str, "Watermark image URL (fetched at start).",
                                  section="processing")
    watermark_opacity: float = _setting(1.0, "WATERMARK_OPACITY", _float_in(0.0, 1.0),
                                        "Opacity multiplied into every watermark.", section="processing")
    fallback_image_data: str = _setting("", "FALLBACK_IMAGE_DATA", _str, "Image served (processed with "
                                        "the request's options) when a source cannot be fetched, base64.",
                                        section="processing")
    fallback_image_path: str = _setting("", "FALLBACK_IMAGE_PATH", _str, "Fallback image file.",
                                        section="processing")
    fallback_image_url: str = _setting("", "FALLBACK_IMAGE_URL", _str, "Fallback image URL (fetched at "
                                       "start).", section="processing")
    fallback_image_http_code: int = _setting(200, "FALLBACK_IMAGE_HTTP_CODE", _int_in(0, 599),
                                             "Status of fallback responses (0 = the error's status).",
                                             section="processing")
    fallback_image_ttl: int = _setting(0, "FALLBACK_IMAGE_TTL", _int_in(0), "max-age of fallback "
                                       "responses (0 = no-store: a CDN must not keep them).",
                                       section="processing")
    enable_client_hints: bool = _setting(False, "ENABLE_CLIENT_HINTS", _bool, "Use Sec-CH-DPR/DPR and "
                                         "Sec-CH-Width/Width as defaults for dpr and width.",
                                         section="processing")
    unsigned_widths: tuple[str, ...] = _setting((), "UNSIGNED_WIDTHS", _list, "With signing on, serve "
                                                "'unsafe'/'insecure' URLs whose width is one of these (and "
                                                "whose other options are in the UNSIGNED_* lists).",
                                                imgproxy=False, section="url")
    unsigned_qualities: tuple[str, ...] = _setting((), "UNSIGNED_QUALITIES", _list, "Qualities unsigned "
                                                   "URLs may ask for (empty = the default only).",
                                                   imgproxy=False, section="url")
    unsigned_formats: tuple[str, ...] = _setting((), "UNSIGNED_FORMATS", _list, "Formats unsigned URLs "
                                                 "may ask for (empty = negotiated only).", imgproxy=False,
                                                 section="url")

    # cache
    cache_dir: str = _setting("", "CACHE_DIR", _str, "Directory of the disk result cache; empty = off.",
                              imgproxy=False, section="cache")
    cache_size: int = _setting(1024**3, "CACHE_SIZE", _int_in(1024 * 1024),
                               "Disk cache size limit in bytes (default 1 GiB).", imgproxy=False,
                               section="cache")

    memory_cache_size: int = _setting(64 * 1024 * 1024, "MEMORY_CACHE_SIZE", _int_in(0), "Bytes of the "
                                      "hottest results kept in memory in front of the disk cache (0 = off).",
                                      imgproxy=False, section="cache")
    result_storage: str = _setting("", "RESULT_STORAGE", _result_storage, "Shared result tier for all "
                                   "replicas: s3://bucket/prefix or local:///path (empty = off).",
                                   imgproxy=False, section="cache")
    source_cache_size: int = _setting(0, "SOURCE_CACHE_SIZE", _int_in(0), "Bytes of recently fetched "
                                      "sources kept in memory (0 = off).", imgproxy=False, section="cache")
    cache_control_immutable: bool = _setting(False, "CACHE_CONTROL_IMMUTABLE", _bool,
                                             "Add 'immutable' to Cache-Control.", imgproxy=False,
                                             section="cache")
    stale_while_revalidate: int = _setting(0, "STALE_WHILE_REVALIDATE", _int_in(0), "Seconds of "
                                           "stale-while-revalidate in Cache-Control (0 = none).",
                                           imgproxy=False, section="cache")
    stale_if_error: int = _setting(0, "STALE_IF_ERROR", _int_in(0), "Seconds of stale-if-error in "
                                   "Cache-Control (0 = none).", imgproxy=False, section="cache")

    @property
    def signing_enabled(self) -> bool:
        """Whether URLs must carry a valid signature."""
        return bool(self.key)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 defaults: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``) over ``defaults`` (variables too);
        raise ConfigError naming each bad value."""
        env = {**(defaults or {}), **(os.environ if environ is None else environ)}
        values: dict[str, Any] = {}
        problems: list[str] = []
        for f in dataclasses.fields(cls):
            spec = f.metadata
            for prefix in PREFIXES if spec["imgproxy"] else PREFIXES[:1]:
                variable = prefix + spec["env"]
                if variable in env:
                    try:
                        values[f.name] = spec["parse"](env[variable])
                    except ValueError as exc:
                        problems.append(f"{variable}={env[variable]!r}: {exc}")
                    break
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check rules that involve several settings; raise ConfigError."""
        if len(self.key) != len(self.salt):
            raise ConfigError(
                f"IMGORIGIN_KEY and IMGORIGIN_SALT must list the same number of values "
                f"(got {len(self.key)} keys and {len(self.salt)} salts)")
        names = [name for name, _ in self.presets]
        if len(names) != len(set(names)):
            raise ConfigError("IMGORIGIN_PRESETS: a preset name is defined twice")

    @property
    def process_count(self) -> int:
        """How many server processes to run (PROCESSES, with 0 resolved to the CPUs available)."""
        return self.processes or available_cpus()

    def for_process(self, index: int, count: int) -> Settings:
        """Process ``index``'s share (of ``count``) of the server-wide budgets: workers, queue, clients
        and memory caches. Every process gets at least one worker; a limit stays a limit (never 0)."""

        def share(total: int) -> int:
            if total <= 0:
                return total
            return max(1, total // count + (1 if index < total % count else 0))

        return self.replace(workers=share(self.workers), requests_queue_size=share(self.requests_queue_size),
                            max_clients=share(self.max_clients),
                            memory_cache_size=self.memory_cache_size // count,
                            source_cache_size=self.source_cache_size // count)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed, validated."""
        settings = dataclasses.replace(self, **changes)
        settings.validate()
        return settings

    @staticmethod
    def describe() -> list[dict[str, str]]:
        """One row per setting (variable, imgproxy alias, default, meaning): the configuration reference."""
        rows = []
        for f in dataclasses.fields(Settings):
            spec = f.metadata
            rows.append({
                "section": spec["section"],
                "variable": PREFIXES[0] + spec["env"],
                "alias": PREFIXES[1] + spec["env"] if spec["imgproxy"] else "",
                "default": _show(f.default),
                "doc": spec["doc"],
            })
        return rows


_SECTIONS = {
    "signing": "Signing", "server": "Server", "url": "URL and options", "sources": "Sources",
    "processing": "Processing", "cache": "Caching", "operations": "Operations",
}


def reference_markdown() -> str:
    """``docs/configuration.md``: every variable, its imgproxy alias, default and meaning."""
    lines = ["# Configuration", "",
             "Generated by `imgorigin settings` from the settings definitions (`src/imgorigin/config.py`);",
             "`tests/test_config_reference.py` fails when this page and the code drift apart.", "",
             "Every setting is an environment variable. Where imgproxy has the same setting, its",
             "`IMGPROXY_` name is accepted too; the `IMGORIGIN_` name wins when both are set.", ""]
    rows = Settings.describe()
    for section, title in _SECTIONS.items():
        lines += [f"## {title}", "", "| variable | imgproxy alias | default | meaning |", "|---|---|---|---|"]
        for row in (r for r in rows if r["section"] == section):
            default = row["default"].replace("|", "\\|") or "(empty)"
            if row["variable"] == "IMGORIGIN_WORKERS":
                default = "number of CPUs"
            alias = f"`{row['alias']}`" if row["alias"] else ""
            lines.append(f"| `{row['variable']}` | {alias} | `{default}` | {row['doc']} |")
        lines.append("")
    return "\n".join(lines)


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(_show(v) if not isinstance(v, tuple) else f"{_show(v[0])}={_show(v[1])}"
                        for v in value)
    if isinstance(value, ImageFormat):
        return value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
