"""Settings.from_env: defaults, imgproxy aliases, and error messages that name variable and domain."""

from __future__ import annotations

import dataclasses
import os

import pytest

from imgorigin import config
from imgorigin.config import ConfigError, Settings, parse_bind
from imgorigin.formats import ImageFormat

KEY = "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881"
SALT = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5"


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert s.key == ()
    assert s.salt == ()
    assert not s.signing_enabled
    assert s.signature_size == 32
    assert s.bind == ":8080"
    assert s.path_prefix == ""
    assert s.workers == (os.cpu_count() or 1)
    assert s.timeout == 10.0
    assert s.ttl == 31536000
    assert s.quality == 80
    assert s.format_quality == ((ImageFormat.WEBP, 79), (ImageFormat.AVIF, 63), (ImageFormat.JXL, 77))
    assert s.preferred_formats == (ImageFormat.JPEG, ImageFormat.PNG, ImageFormat.GIF)
    assert s.strip_metadata
    assert s.keep_copyright
    assert s.strip_color_profile
    assert s.auto_rotate
    assert not (s.allow_unsigned)
    assert not (s.only_presets)
    assert not (s.allow_security_options)
    assert not (s.return_attachment)
    assert not (s.allow_loopback_source_addresses)
    assert not (s.allow_link_local_source_addresses)
    assert not (s.allow_private_source_addresses)
    assert s.max_src_resolution == 50.0
    assert s.max_src_file_size == 50 * 1024 * 1024
    assert s.max_redirects == 10
    assert s.download_timeout == 5.0


def test_from_env_reads_os_environ_when_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGORIGIN_TTL", "77")
    assert Settings.from_env().ttl == 77
    assert Settings.from_env({}).ttl == 31536000


def test_defaults_argument_is_overridden_by_environment() -> None:
    s = Settings.from_env({"IMGORIGIN_TTL": "5"}, defaults={"IMGORIGIN_TTL": "9", "IMGORIGIN_QUALITY": "50"})
    assert (s.ttl, s.quality) == (5, 50)


def test_values_and_imgproxy_aliases() -> None:
    s = Settings.from_env({
        "IMGPROXY_KEY": f"{KEY},736563726574", "IMGPROXY_SALT": f"{SALT},68656C6C6F",
        "IMGPROXY_SIGNATURE_SIZE": "8", "IMGPROXY_TRUSTED_SIGNATURES": "a, b,,",
        "IMGPROXY_BIND": "127.0.0.1:9000", "IMGPROXY_PATH_PREFIX": "/img", "IMGPROXY_TTL": "0",
        "IMGPROXY_PRESETS": "thumb=rs:fill:100:100/q:70, default=sh:1",
        "IMGPROXY_FORMAT_QUALITY": "webp=50,jpg=60", "IMGPROXY_PREFERRED_FORMATS": "webp, png",
        "IMGPROXY_ENFORCE_AVIF": "t", "IMGPROXY_TIMEOUT": "2.5", "IMGPROXY_ALLOWED_SOURCES": "http://a/,s3://b/",
    })
    assert s.key == (bytes.fromhex(KEY), b"secret")
    assert s.salt == (bytes.fromhex(SALT), b"hello")
    assert s.signing_enabled
    assert s.signature_size == 8
    assert s.trusted_signatures == ("a", "b")
    assert s.bind == "127.0.0.1:9000"
    assert s.path_prefix == "/img"
    assert s.ttl == 0
    assert s.presets == (("thumb", ("rs:fill:100:100", "q:70")), ("default", ("sh:1",)))
    assert s.format_quality == ((ImageFormat.WEBP, 50), (ImageFormat.JPEG, 60))
    assert s.preferred_formats == (ImageFormat.WEBP, ImageFormat.PNG)
    assert s.enforce_avif is True
    assert s.timeout == 2.5
    assert s.allowed_sources == ("http://a/", "s3://b/")


def test_imgorigin_wins_over_imgproxy() -> None:
    s = Settings.from_env({"IMGPROXY_TTL": "1", "IMGORIGIN_TTL": "2", "IMGPROXY_QUALITY": "3"})
    assert s.ttl == 2
    assert s.quality == 3
    # the IMGPROXY_ value is not even parsed when the IMGORIGIN_ one is present
    assert Settings.from_env({"IMGPROXY_TTL": "bad", "IMGORIGIN_TTL": "2"}).ttl == 2


@pytest.mark.parametrize("name", ["ALLOW_UNSIGNED", "CACHE_DIR", "CACHE_SIZE", "ALLOWED_SOURCE_NETWORKS"])
def test_imgorigin_only_settings_have_no_imgproxy_alias(name: str) -> None:
    value = {"ALLOW_UNSIGNED": "true", "CACHE_DIR": "/tmp/x", "CACHE_SIZE": "2000000",
             "ALLOWED_SOURCE_NETWORKS": "10.0.0.0/8"}[name]
    assert Settings.from_env({f"IMGPROXY_{name}": value}) == Settings()
    assert Settings.from_env({f"IMGORIGIN_{name}": value}) != Settings()


def test_allow_unsigned() -> None:
    assert Settings.from_env({"IMGORIGIN_ALLOW_UNSIGNED": "true"}).allow_unsigned is True
    assert Settings.from_env({"IMGPROXY_ALLOW_UNSIGNED": "true"}).allow_unsigned is False


@pytest.mark.parametrize("raw", ["1", "t", "T", "TRUE", "true", "True"])
def test_bool_true(raw: str) -> None:
    assert Settings.from_env({"IMGORIGIN_AUTO_WEBP": raw}).auto_webp is True


@pytest.mark.parametrize("raw", ["0", "f", "F", "FALSE", "false", "False"])
def test_bool_false(raw: str) -> None:
    assert Settings.from_env({"IMGORIGIN_STRIP_METADATA": raw}).strip_metadata is False


def problem(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    return str(info.value)


@pytest.mark.parametrize("raw", ["yes", "no", "on", "", "tRUE", "2", " true"])
def test_bool_strict(raw: str) -> None:
    message = problem({"IMGPROXY_AUTO_AVIF": raw})
    assert "IMGPROXY_AUTO_AVIF" in message
    assert "true/false" in message
    assert "1/0" in message


@pytest.mark.parametrize(("variable", "raw", "domain"), [
    ("IMGORIGIN_SIGNATURE_SIZE", "0", "from 1 to 32"),
    ("IMGORIGIN_SIGNATURE_SIZE", "33", "from 1 to 32"),
    ("IMGORIGIN_SIGNATURE_SIZE", "abc", "from 1 to 32"),
    ("IMGORIGIN_WORKERS", "0", "from 1 to 1024"),
    ("IMGORIGIN_WORKERS", "1025", "from 1 to 1024"),
    ("IMGORIGIN_TTL", "-1", ">= 0"),
    ("IMGORIGIN_TTL", "1.5", ">= 0"),
    ("IMGORIGIN_TTL", "1e3", ">= 0"),
    ("IMGORIGIN_TTL", "1_000", ">= 0"),
    ("IMGORIGIN_TTL", "١٢", ">= 0"),
    ("IMGORIGIN_TTL", "0x10", ">= 0"),
    ("IMGORIGIN_TTL", "", ">= 0"),
    ("IMGORIGIN_QUALITY", "0", "from 1 to 100"),
    ("IMGORIGIN_QUALITY", "101", "from 1 to 100"),
    ("IMGORIGIN_MAX_REDIRECTS", "51", "from 0 to 50"),
    ("IMGORIGIN_WEBP_EFFORT", "7", "from 0 to 6"),
    ("IMGORIGIN_AVIF_SPEED", "10", "from 0 to 9"),
    ("IMGORIGIN_CACHE_SIZE", "1000", ">= 1048576"),
    ("IMGORIGIN_MAX_SRC_FILE_SIZE", "-5", ">= 0"),
    ("IMGORIGIN_MAX_RESULT_DIMENSION", "x", ">= 0"),
    ("IMGORIGIN_TIMEOUT", "0", ">= 0.1"),
    ("IMGORIGIN_TIMEOUT", "nan", ">= 0.1"),
    ("IMGORIGIN_TIMEOUT", "inf", ">= 0.1"),
    ("IMGORIGIN_TIMEOUT", "1e3", ">= 0.1"),
    ("IMGORIGIN_TIMEOUT", "-1", ">= 0.1"),
    ("IMGORIGIN_DOWNLOAD_TIMEOUT", "0.05", ">= 0.1"),
    ("IMGORIGIN_MAX_SRC_RESOLUTION", "-0.5", ">= 0.0"),
    ("IMGORIGIN_MAX_SRC_RESOLUTION", "", ">= 0.0"),
])
def test_number_errors_name_variable_and_range(variable: str, raw: str, domain: str) -> None:
    message = problem({variable: raw})
    assert variable in message
    assert domain in message
    assert repr(raw) in message


def test_numbers_accept_surrounding_whitespace_and_bounds() -> None:
    s = Settings.from_env({"IMGORIGIN_SIGNATURE_SIZE": " 1 ", "IMGORIGIN_QUALITY": "100",
                           "IMGORIGIN_TIMEOUT": "0.1", "IMGORIGIN_MAX_SRC_RESOLUTION": "0"})
    assert (s.signature_size, s.quality, s.timeout, s.max_src_resolution) == (1, 100, 0.1, 0.0)


@pytest.mark.parametrize(("variable", "raw"), [
    ("IMGORIGIN_KEY", "zz"),
    ("IMGORIGIN_KEY", "abc"),
    ("IMGORIGIN_SALT", "00,xyz"),
    ("IMGPROXY_KEY", "0g"),
])
def test_hex_list_errors(variable: str, raw: str) -> None:
    message = problem({variable: raw, "IMGORIGIN_SALT" if "KEY" in variable else "IMGORIGIN_KEY": "00"})
    assert variable in message
    assert "hex" in message


@pytest.mark.parametrize(("variable", "raw", "bad"), [
    ("IMGORIGIN_PREFERRED_FORMATS", "jpeg,tif", "tif"),
    ("IMGORIGIN_PREFERRED_FORMATS", "JPEG", "JPEG"),
    ("IMGPROXY_PREFERRED_FORMATS", "best", "best"),
])
def test_format_list_errors(variable: str, raw: str, bad: str) -> None:
    message = problem({variable: raw})
    assert variable in message
    assert repr(bad) in message
    assert "jpeg,png,webp" in message


@pytest.mark.parametrize("raw", ["webp", "webp=101", "webp=-1", "webp=x", "webp=1.5", "tif=50", "=50",
                                 "webp=50,avif"])
def test_format_quality_errors(raw: str) -> None:
    message = problem({"IMGORIGIN_FORMAT_QUALITY": raw})
    assert "IMGORIGIN_FORMAT_QUALITY" in message


def test_format_quality_error_text() -> None:
    assert "format=quality" in problem({"IMGORIGIN_FORMAT_QUALITY": "webp=101"})
    assert "0-100" in problem({"IMGORIGIN_FORMAT_QUALITY": "webp"})


@pytest.mark.parametrize("raw", ["thumb", "=rs:fit", "thumb=", "thumb=blur", "thumb=rs:fit//w:1",
                                 "thumb=rs:fit/w"])
def test_presets_syntax_errors(raw: str) -> None:
    message = problem({"IMGORIGIN_PRESETS": raw})
    assert "IMGORIGIN_PRESETS" in message
    assert "name=option" in message or "name:arg" in message


def test_presets_duplicate_name() -> None:
    assert "IMGORIGIN_PRESETS" in problem({"IMGORIGIN_PRESETS": "a=w:1,a=h:2"})


@pytest.mark.parametrize("raw", ["images", "/images/", "/", "images/"])
def test_path_prefix_errors(raw: str) -> None:
    message = problem({"IMGPROXY_PATH_PREFIX": raw})
    assert "IMGPROXY_PATH_PREFIX" in message
    assert "/images" in message


@pytest.mark.parametrize(("raw", "parsed"), [
    (":8080", ("0.0.0.0", 8080)),
    ("127.0.0.1:9000", ("127.0.0.1", 9000)),
    ("[::1]:8080", ("::1", 8080)),
    ("localhost:1", ("localhost", 1)),
    (" 0.0.0.0:65535 ", ("0.0.0.0", 65535)),
])
def test_bind_ok(raw: str, parsed: tuple[str, int]) -> None:
    assert parse_bind(raw) == parsed
    assert Settings.from_env({"IMGORIGIN_BIND": raw}).bind == raw.strip()


@pytest.mark.parametrize("raw", ["8080", "host:0", "host:65536", "host:99999", "::1:8080", "[::1]", "host:",
                                 "a b:80", ""])
def test_bind_errors(raw: str) -> None:
    message = problem({"IMGORIGIN_BIND": raw})
    assert "IMGORIGIN_BIND" in message
    assert "host:port" in message
    with pytest.raises(ValueError, match="host:port"):
        parse_bind(raw)


def test_every_problem_is_reported_at_once() -> None:
    message = problem({"IMGORIGIN_TTL": "x", "IMGORIGIN_QUALITY": "0", "IMGPROXY_AUTO_WEBP": "yes"})
    for variable in ("IMGORIGIN_TTL", "IMGORIGIN_QUALITY", "IMGPROXY_AUTO_WEBP"):
        assert variable in message


@pytest.mark.parametrize(("keys", "salts"), [
    (KEY, ""), ("", SALT), (f"{KEY},{KEY}", SALT), (KEY, f"{SALT},00")])
def test_key_salt_count_mismatch(keys: str, salts: str) -> None:
    message = problem({"IMGORIGIN_KEY": keys, "IMGORIGIN_SALT": salts})
    assert "IMGORIGIN_KEY" in message
    assert "IMGORIGIN_SALT" in message


def test_replace_validates() -> None:
    with pytest.raises(ConfigError):
        Settings().replace(key=(b"k",))
    assert Settings().replace(ttl=5).ttl == 5


def test_describe_lists_every_field() -> None:
    rows = Settings.describe()
    fields = dataclasses.fields(Settings)
    assert len(rows) == len(fields)
    variables = {row["variable"] for row in rows}
    assert len(variables) == len(rows)
    for f, row in zip(fields, rows, strict=True):
        assert row["variable"] == "IMGORIGIN_" + f.metadata["env"]
        assert row["alias"] == ("IMGPROXY_" + f.metadata["env"] if f.metadata["imgproxy"] else "")
        assert row["doc"]
        assert row["section"]
        assert set(row) == {"section", "variable", "alias", "default", "doc"}
    by_name = {row["variable"]: row for row in rows}
    assert by_name["IMGORIGIN_ALLOW_UNSIGNED"]["alias"] == ""
    assert by_name["IMGORIGIN_TTL"]["alias"] == "IMGPROXY_TTL"
    assert by_name["IMGORIGIN_TTL"]["default"] == "31536000"
    assert by_name["IMGORIGIN_STRIP_METADATA"]["default"] == "true"
    assert by_name["IMGORIGIN_FORMAT_QUALITY"]["default"] == "webp=79,avif=63,jxl=77"
    assert by_name["IMGORIGIN_PREFERRED_FORMATS"]["default"] == "jpeg,png,gif"


def test_every_variable_is_read() -> None:
    # each variable, set to a non-default value, changes its setting
    values = {
        "KEY": "00", "SALT": "11", "SIGNATURE_SIZE": "9", "TRUSTED_SIGNATURES": "x", "ALLOW_UNSIGNED": "1",
        "BIND": ":1", "PATH_PREFIX": "/p", "WORKERS": "1023", "TIMEOUT": "3", "TTL": "4",
        "RETURN_ATTACHMENT": "1", "ALLOW_ORIGIN": "*", "PRESETS": "a=w:1", "ONLY_PRESETS": "1",
        "BASE_URL": "http://b/", "ALLOW_SECURITY_OPTIONS": "1", "ALLOWED_SOURCES": "http://a/",
        "LOCAL_FILESYSTEM_ROOT": "/srv", "DOWNLOAD_TIMEOUT": "2", "MAX_REDIRECTS": "3", "USER_AGENT": "ua",
        "ALLOW_LOOPBACK_SOURCE_ADDRESSES": "1", "ALLOW_LINK_LOCAL_SOURCE_ADDRESSES": "1",
        "ALLOW_PRIVATE_SOURCE_ADDRESSES": "1", "ALLOWED_SOURCE_NETWORKS": "10.0.0.0/8",
        "MAX_SRC_FILE_SIZE": "1", "MAX_SRC_RESOLUTION": "1", "MAX_RESULT_DIMENSION": "5", "QUALITY": "5",
        "FORMAT_QUALITY": "webp=5", "AUTO_WEBP": "1", "AUTO_AVIF": "1", "ENFORCE_WEBP": "1",
        "ENFORCE_AVIF": "1", "PREFERRED_FORMATS": "png", "STRIP_METADATA": "0", "KEEP_COPYRIGHT": "0",
        "STRIP_COLOR_PROFILE": "0", "AUTO_ROTATE": "0", "JPEG_PROGRESSIVE": "1", "PNG_INTERLACED": "1",
        "WEBP_EFFORT": "1", "AVIF_SPEED": "1", "CACHE_DIR": "/c", "CACHE_SIZE": "2000000",
    }
    assert set(values) <= {row["variable"].removeprefix("IMGORIGIN_") for row in Settings.describe()}
    base = Settings()
    for f in dataclasses.fields(Settings):
        name = f.metadata["env"]
        if name not in values:
            continue
        pair = {"KEY": {"IMGORIGIN_SALT": "11"}, "SALT": {"IMGORIGIN_KEY": "00"}}.get(name, {})
        s = Settings.from_env({f"IMGORIGIN_{name}": values[name], **pair})
        assert getattr(s, f.name) != getattr(base, f.name), name


@pytest.mark.parametrize(("workers", "queue", "clients", "count"),
                         [(2, 4, 2048, 2), (5, 1, 0, 2), (3, 0, 7, 3), (1, 2, 10, 4), (8, 9, 3, 1)])
def test_budgets_are_shared_out_among_processes(workers: int, queue: int, clients: int, count: int) -> None:
    settings = Settings(workers=workers, requests_queue_size=queue, max_clients=clients,
                        memory_cache_size=64 << 20, source_cache_size=10 << 20)
    shares = [settings.for_process(i, count) for i in range(count)]
    assert all(s.workers >= 1 for s in shares)
    assert sum(s.workers for s in shares) == max(workers, count)
    for name, total in (("requests_queue_size", queue), ("max_clients", clients)):
        values = [getattr(s, name) for s in shares]
        if total == 0:
            assert values == [0] * count  # no limit stays no limit
        else:
            assert all(v >= 1 for v in values), "a limit must never turn into 'no limit' (0)"
            assert sum(values) == max(total, count)
    assert sum(s.memory_cache_size for s in shares) <= 64 << 20
    assert sum(s.source_cache_size for s in shares) <= 10 << 20


def test_processes_zero_means_one_per_available_cpu() -> None:
    assert Settings.from_env({"IMGORIGIN_PROCESSES": "0"}).process_count == config.available_cpus()
    assert Settings.from_env({"IMGORIGIN_PROCESSES": "3"}).process_count == 3
    assert 1 <= config.available_cpus() <= (os.cpu_count() or 1)
    with pytest.raises(ConfigError, match="IMGORIGIN_PROCESSES"):
        Settings.from_env({"IMGORIGIN_PROCESSES": "65"})
