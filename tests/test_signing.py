"""Signing (imgproxy §2.2 vectors), strict verification, the stdlib-only UrlBuilder and the CLI."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import imgorigin
from imgorigin.errors import BadSignature
from imgorigin.formats import ImageFormat
from imgorigin.options import Options, ParsePolicy, ResizeType, parse_path
from imgorigin.signing import Verifier, encoded_length, sign_path
from imgorigin.urlbuilder import UrlBuilder

DOC_KEY, DOC_SALT = "736563726574", "68656C6C6F"
TEST_KEY, TEST_SALT = "746573742d6b6579", "746573742d73616c74"
TEST_KEY2, TEST_SALT2 = "746573742d6b657932", "746573742d73616c7432"
EX_KEY = "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881"
EX_SALT = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5"
DOC_PATH = "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png"
EX_PATH = "/rs:fit:300:300/plain/http://img.example.com/pretty/image.jpg"

VECTORS = [
    (DOC_KEY, DOC_SALT, 32, DOC_PATH, "oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8"),
    (TEST_KEY, TEST_SALT, 32, "/asd", "oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a20"),
    (TEST_KEY, TEST_SALT, 8, "/asd", "oWaL7QoW5Ts"),
    (TEST_KEY2, TEST_SALT2, 32, "/asd", "jYz1UZ7j1BCdSzH3pZhaYf0iuz0vusoOTdqJsUT6WXI"),
    (TEST_KEY, TEST_SALT, 32, "/rs:fill:4:4/plain/local:///test1.png",
     "My9d3xq_PYpVHsPrCyww0Kh1w5KZeZhIlWhsa4az1TI"),
    (EX_KEY, EX_SALT, 32, EX_PATH, "m3k5QADfcKPDj-SDI2AIogZbC3FlAXszuwhtWXYqavc"),
    (EX_KEY, EX_SALT, 8, EX_PATH, "m3k5QADfcKM"),
]
ROOT = Path(__file__).resolve().parent.parent


def verifier(key: str, salt: str, size: int = 32, trusted: tuple[str, ...] = ()) -> Verifier:
    return Verifier([bytes.fromhex(key)], [bytes.fromhex(salt)], size=size, trusted=trusted)


@pytest.mark.parametrize(("key", "salt", "size", "path", "signature"), VECTORS)
def test_sign_path_vectors(key: str, salt: str, size: int, path: str, signature: str) -> None:
    assert sign_path(bytes.fromhex(key), bytes.fromhex(salt), path, size) == signature
    assert len(signature) == encoded_length(size)


@pytest.mark.parametrize(("key", "salt", "size", "path", "signature"), VECTORS)
def test_verifier_vectors(key: str, salt: str, size: int, path: str, signature: str) -> None:
    check = verifier(key, salt, size)
    assert check.enabled
    check.verify(signature, path)
    with pytest.raises(BadSignature):
        check.verify(signature, path + "x")
    with pytest.raises(BadSignature):
        verifier(key, "00", size).verify(signature, path)


def test_encoded_length() -> None:
    assert encoded_length(32) == 43
    assert encoded_length(8) == 11
    assert encoded_length(1) == 2
    assert [encoded_length(n) for n in range(1, 33)] == [
        len(base64.urlsafe_b64encode(bytes(n)).rstrip(b"=")) for n in range(1, 33)]


def test_size_mismatch_fails_both_ways() -> None:
    with pytest.raises(BadSignature):
        verifier(TEST_KEY, TEST_SALT, 8).verify("oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a20", "/asd")
    with pytest.raises(BadSignature):
        verifier(TEST_KEY, TEST_SALT, 32).verify("oWaL7QoW5Ts", "/asd")


def test_multi_pair_rotation() -> None:
    both = Verifier([bytes.fromhex(TEST_KEY), bytes.fromhex(TEST_KEY2)],
                    [bytes.fromhex(TEST_SALT), bytes.fromhex(TEST_SALT2)])
    both.verify("oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a20", "/asd")
    both.verify("jYz1UZ7j1BCdSzH3pZhaYf0iuz0vusoOTdqJsUT6WXI", "/asd")
    # pairs do not mix: key 1 with salt 2 is not a valid pair
    crossed = sign_path(bytes.fromhex(TEST_KEY), bytes.fromhex(TEST_SALT2), "/asd")
    with pytest.raises(BadSignature):
        both.verify(crossed, "/asd")
    with pytest.raises(ValueError, match="pair"):
        Verifier([b"a", b"b"], [b"c"])


def test_trusted_signatures() -> None:
    check = verifier(TEST_KEY, TEST_SALT, trusted=("unsafe", "my-cdn-token"))
    check.verify("unsafe", "/anything")
    check.verify("my-cdn-token", "/other")
    with pytest.raises(BadSignature):
        check.verify("insecure", "/anything")


BAD_SIGNATURES = [
    "",
    "oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a20=",
    "oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a2",
    "oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a20a",
    "oWaL7QoW5TsgbuiS9+5+DI8S3Ibbo1gdB2SteJh3a20",
    "oWaL7QoW5TsgbuiS9/5/DI8S3Ibbo1gdB2SteJh3a20",
    "oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a21",  # same bytes, unused low bits set
    "oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a23",
    "oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a2 ",
    "oWaL7QoW5TsgbuiS9-5-DI8S3Ibbo1gdB2SteJh3a2\n",
    "insecure",
    "unsafe",
]


@pytest.mark.parametrize("signature", BAD_SIGNATURES)
def test_strict_signature_encoding(signature: str) -> None:
    with pytest.raises(BadSignature) as info:
        verifier(TEST_KEY, TEST_SALT).verify(signature, "/asd")
    assert info.value.status_code == 403


def test_non_canonical_short_signature() -> None:
    # 8 bytes -> 11 chars with 2 unused low bits; "oWaL7QoW5Ts" ends in 's' (..00), 't' is the same bytes
    assert base64.urlsafe_b64decode("oWaL7QoW5Tt=") == base64.urlsafe_b64decode("oWaL7QoW5Ts=")
    with pytest.raises(BadSignature):
        verifier(TEST_KEY, TEST_SALT, 8).verify("oWaL7QoW5Tt", "/asd")


@pytest.mark.parametrize("signature", ["", "insecure", "unsafe", "_", "x" * 100, "rs:fit:1:1", "a=b+c/d"])
def test_disabled_verifier_accepts_anything(signature: str) -> None:
    check = Verifier([], [])
    assert not check.enabled
    check.verify(signature, "/whatever")


# --- UrlBuilder ----------------------------------------------------------------------------------------

SOURCE = "https://bucket.example/cat.jpg"


def unsigned(path: str) -> tuple[str, str]:
    signature, _, rest = path.lstrip("/").partition("/")
    return signature, "/" + rest


def test_builder_docstring_example() -> None:
    b = UrlBuilder("https://img.example", key=DOC_KEY, salt=DOC_SALT)
    url = b.url(SOURCE, resizing_type="fill", width=300, height=200, gravity="sm", extension="webp")
    tail = "/rs:fill:300:200/g:sm/plain/https://bucket.example/cat.jpg@webp"
    assert url == "https://img.example/" + sign_path(b"secret", b"hello", tail) + tail
    verifier(DOC_KEY, DOC_SALT).verify(*unsigned(url.removeprefix("https://img.example")))


def test_builder_reproduces_doc_vector() -> None:
    b = UrlBuilder(key=DOC_KEY, salt=DOC_SALT, encode=True)
    path = b.path("http://example.com/images/curiosity.jpg", resizing_type="fill", width=300, height=400,
                  enlarge=False, gravity="sm", extension="png")
    signature, rest = unsigned(path)
    assert rest == "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1wbGUuY29tL2ltYWdlcy9jdXJpb3NpdHkuanBn.png"
    assert signature == sign_path(b"secret", b"hello", rest)
    assert parse_path(rest)[1] == "http://example.com/images/curiosity.jpg"


@pytest.mark.parametrize(("options", "segments"), [
    ({"width": 300}, ["w:300"]),
    ({"w": 300}, ["w:300"]),
    ({"min_width": 10}, ["mw:10"]),
    ({"mw": 10, "mh": 5}, ["mw:10", "mh:5"]),
    ({"quality": 80, "q": 90}, ["q:80", "q:90"]),
    ({"enlarge": True}, ["el:1"]),
    ({"auto_rotate": False}, ["ar:0"]),
    ({"extend": [True, "no", 5, 0.5]}, ["ex:1:no:5:0.5"]),
    ({"padding": (10, 20)}, ["pd:10:20"]),
    ({"dpr": 2.0}, ["dpr:2"]),
    ({"zoom": 1.5}, ["z:1.5"]),
    ({"format": "webp"}, ["f:webp"]),
    ({"ext": "png"}, ["f:png"]),
    ({"extend_aspect_ratio": 1}, ["extend_ar:1"]),
    ({"extend_ar": 1}, ["extend_ar:1"]),
    ({"background": "fff", "blur": None}, ["bg:fff"]),
    ({"width": None, "height": 5}, ["h:5"]),
    ({"max_result_dimension": 100}, ["mrd:100"]),
    ({"resizing_type": "fill", "width": 300}, ["rs:fill:300"]),
    ({"resizing_type": "fit", "height": 200}, ["rs:fit::200"]),
    ({"resizing_type": "force", "width": 1, "height": 2, "enlarge": True}, ["rs:force:1:2:1"]),
    ({"resizing_type": "fill", "enlarge": False}, ["rs:fill:::0"]),
    ({"height": 2, "enlarge": True}, ["h:2", "el:1"]),
    ({"rt": "fill", "w": 3}, ["rt:fill", "w:3"]),
])
def test_builder_options(options: dict[str, object], segments: list[str]) -> None:
    path = UrlBuilder().path("http://x/a.jpg", **options)  # type: ignore[arg-type]
    assert path == "/insecure/" + "/".join([*segments, "plain/http://x/a.jpg"])
    parse_path(unsigned(path)[1], ParsePolicy(allow_security_options=True))


def test_builder_extension_plain_and_encoded() -> None:
    plain = UrlBuilder().path("http://x/a b?c@d%e.jpg", extension="webp")
    assert plain == "/insecure/plain/http://x/a%20b%3Fc%40d%25e.jpg@webp"
    assert parse_path(unsigned(plain)[1])[1] == "http://x/a b?c@d%e.jpg"
    encoded = UrlBuilder(encode=True).path("http://x/a.jpg", extension="png", width=5)
    b64 = base64.urlsafe_b64encode(b"http://x/a.jpg").decode().rstrip("=")
    assert encoded == "/insecure/w:5/" + b64 + ".png"
    assert parse_path(unsigned(encoded)[1]) == (Options(width=5, format=ImageFormat.PNG), "http://x/a.jpg")


def test_builder_presets() -> None:
    b = UrlBuilder(presets=["base"])
    assert b.path("http://x", preset="thumb") == "/insecure/pr:base:thumb/plain/http://x"
    assert b.path("http://x", preset=["a", "b"], width=1) == "/insecure/pr:base:a:b/w:1/plain/http://x"
    assert UrlBuilder().path("http://x", preset="thumb") == "/insecure/pr:thumb/plain/http://x"
    assert UrlBuilder().path("http://x") == "/insecure/plain/http://x"


def test_builder_srcset() -> None:
    b = UrlBuilder("https://img.example/", key=EX_KEY, salt=EX_SALT)
    srcset = b.srcset("http://x/a.jpg", [100, 200], width=999, resizing_type="fit", extension="webp")
    entries = srcset.split(", ")
    assert len(entries) == 2
    for entry, width in zip(entries, [100, 200], strict=True):
        url, descriptor = entry.split(" ")
        assert descriptor == f"{width}w"
        assert url == b.url("http://x/a.jpg", resizing_type="fit", width=width, extension="webp")
        assert url.startswith("https://img.example/")
        signature, rest = unsigned(url.removeprefix("https://img.example"))
        verifier(EX_KEY, EX_SALT).verify(signature, rest)
        assert parse_path(rest)[0].width == width


def test_builder_signature_size_and_bytes_keys() -> None:
    b = UrlBuilder(key=bytes.fromhex(EX_KEY), salt=bytes.fromhex(EX_SALT), signature_size=8)
    path = b.path("http://img.example.com/pretty/image.jpg", resizing_type="fit", width=300, height=300)
    assert path == "/m3k5QADfcKM" + EX_PATH
    verifier(EX_KEY, EX_SALT, 8).verify(*unsigned(path))
    assert UrlBuilder(key=EX_KEY, salt=EX_SALT).path(
        "http://img.example.com/pretty/image.jpg", resizing_type="fit", width=300, height=300) == (
        "/m3k5QADfcKPDj-SDI2AIogZbC3FlAXszuwhtWXYqavc" + EX_PATH)


@pytest.mark.parametrize("kwargs", [{"signature_size": 0}, {"signature_size": 33}, {"key": "00"},
                                    {"salt": "00"}])
def test_builder_bad_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        UrlBuilder(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["bogus", "pr", "preset_name", "Width", "trimmed"])
def test_builder_unknown_option(name: str) -> None:
    with pytest.raises(TypeError, match=name):
        UrlBuilder().path("http://x", **{name: 1})


def test_urlbuilder_is_stdlib_only() -> None:
    blocked = ["pyvips", "aiohttp", "starlette", "hypercorn", "diskcache", "itsdangerous",
               "prometheus_client", "anyio", "aiobotocore"]
    code = textwrap.dedent(f"""
        import sys
        for m in {blocked!r}:
            sys.modules[m] = None
        from imgorigin.urlbuilder import UrlBuilder
        b = UrlBuilder("https://img.example", key={EX_KEY!r}, salt={EX_SALT!r})
        print(b.url("http://x/a.jpg", resizing_type="fill", width=300, gravity="sm", extension="webp"))
        for m in {blocked!r}:
            assert sys.modules[m] is None, m
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    expected = UrlBuilder("https://img.example", key=EX_KEY, salt=EX_SALT).url(
        "http://x/a.jpg", resizing_type="fill", width=300, gravity="sm", extension="webp")
    assert result.stdout.strip() == expected


# --- CLI -----------------------------------------------------------------------------------------------

def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGORIGIN_", "IMGPROXY_"))}
    env.update(extra)
    return env


def test_cli_sign_produces_a_verifiable_url() -> None:
    env = clean_env(IMGORIGIN_KEY=EX_KEY, IMGORIGIN_SALT=EX_SALT)
    result = subprocess.run([sys.executable, "-m", "imgorigin", "sign", "http://x/a.jpg", "rs:fill:300:200",
                             "g:sm", "-e", "webp", "--base-url", "https://img.example"],
                            capture_output=True, text=True, timeout=60, env=env, check=False)
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith("https://img.example/")
    signature, rest = unsigned(url.removeprefix("https://img.example"))
    assert rest == "/rs:fill:300:200/g:sm/plain/http://x/a.jpg@webp"
    verifier(EX_KEY, EX_SALT).verify(signature, rest)
    options, source = parse_path(rest)
    assert (options.resizing_type, options.width, options.height, source) == (
        ResizeType.FILL, 300, 200, "http://x/a.jpg")


def test_cli_sign_with_imgproxy_aliases_and_size() -> None:
    env = clean_env(IMGPROXY_KEY=EX_KEY, IMGPROXY_SALT=EX_SALT, IMGPROXY_SIGNATURE_SIZE="8")
    result = subprocess.run([sys.executable, "-m", "imgorigin", "sign",
                             "http://img.example.com/pretty/image.jpg", "rs:fit:300:300"],
                            capture_output=True, text=True, timeout=60, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "/m3k5QADfcKM" + EX_PATH


def test_cli_version() -> None:
    result = subprocess.run([sys.executable, "-m", "imgorigin", "version"], capture_output=True, text=True,
                            timeout=60, env=clean_env(), check=False)
    assert result.returncode == 0
    assert result.stdout.strip() == imgorigin.__version__


def test_cli_serve_without_key_exits_2() -> None:
    script = Path(sys.executable).parent / "imgorigin"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "imgorigin"]
    result = subprocess.run([*command, "serve"], capture_output=True, text=True, timeout=30,
                            env=clean_env(IMGORIGIN_BIND="127.0.0.1:1"), check=False)
    assert result.returncode == 2
    assert "IMGORIGIN_KEY" in result.stderr
