"""Parsing of processing-option paths (imgproxy v4 rules), normalisation, and the canonical inverse."""

from __future__ import annotations

import base64
from dataclasses import fields, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgorigin.errors import ForbiddenOption, ImgOriginError, InvalidURL
from imgorigin.formats import ImageFormat
from imgorigin.options import (
    OPTION_NAMES,
    WATERMARK_POSITIONS,
    Crop,
    Extend,
    Gravity,
    GravityType,
    Options,
    Padding,
    ParsePolicy,
    ResizeType,
    Trim,
    Watermark,
    normalize_path,
    parse_path,
    to_path,
)

ALLOW_SECURITY = ParsePolicy(allow_security_options=True)
SECURITY = ("max_src_resolution", "max_src_file_size", "max_animation_frames",
            "max_animation_frame_resolution", "max_result_dimension")
SRC = "http://example.com/a.jpg"


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def parse_one(segment: str, policy: ParsePolicy | None = None) -> Options:
    options, source = parse_path(f"/{segment}/plain/{SRC}", policy)
    assert source == SRC
    return options


def all_names(long: str) -> list[str]:
    return [long, *OPTION_NAMES[long]]


# --- every option, under every name -------------------------------------------------------------------

#: long name -> (arguments, the Options fields they set)
VALID: dict[str, tuple[str, dict[str, Any]]] = {
    "resize": ("fill:300:200:1:1:so:5:6", {
        "resizing_type": ResizeType.FILL, "width": 300, "height": 200, "enlarge": True,
        "extend": Extend(True, Gravity(GravityType.SOUTH, 5.0, 6.0))}),
    "size": ("300:200:1", {"width": 300, "height": 200, "enlarge": True}),
    "resizing_type": ("fill-down", {"resizing_type": ResizeType.FILL_DOWN}),
    "width": ("300", {"width": 300}),
    "height": ("200", {"height": 200}),
    "min-width": ("10", {"min_width": 10}),
    "min-height": ("20", {"min_height": 20}),
    "zoom": ("1.5:2", {"zoom_x": 1.5, "zoom_y": 2.0}),
    "dpr": ("2", {"dpr": 2.0}),
    "enlarge": ("1", {"enlarge": True}),
    "extend": ("1:no:3:4", {"extend": Extend(True, Gravity(GravityType.NORTH, 3.0, 4.0))}),
    "extend_aspect_ratio": ("t:we", {"extend_aspect_ratio": Extend(True, Gravity(GravityType.WEST))}),
    "gravity": ("fp:0.25:0.75", {"gravity": Gravity(GravityType.FOCUS_POINT, 0.25, 0.75)}),
    "crop": ("100:0.5:sm", {"crop": Crop(100.0, 0.5, Gravity(GravityType.SMART))}),
    "padding": ("1:2:3:4", {"padding": Padding(1, 2, 3, 4)}),
    "auto_rotate": ("false", {"auto_rotate": False}),
    "rotate": ("-90", {"rotate": 270}),
    "flip": ("1:t", {"flip_horizontal": True, "flip_vertical": True}),
    "background": ("ff8000", {"background": (255, 128, 0)}),
    "blur": ("2.5", {"blur": 2.5}),
    "sharpen": ("0.7", {"sharpen": 0.7}),
    "strip_metadata": ("0", {"strip_metadata": False}),
    "keep_copyright": ("1", {"keep_copyright": True}),
    "strip_color_profile": ("True", {"strip_color_profile": True}),
    "quality": ("85", {"quality": 85}),
    "format_quality": ("webp:70:jpg:80",
                       {"format_quality": ((ImageFormat.JPEG, 80), (ImageFormat.WEBP, 70))}),
    "format": ("webp", {"format": ImageFormat.WEBP}),
    "cachebuster": ("v2", {"cachebuster": "v2"}),
    "expires": ("1700000000", {"expires": 1700000000}),
    "filename": (b64("report") + ":1", {"filename": "report"}),
    "return_attachment": ("1", {"return_attachment": True}),
    "max_src_resolution": ("0.5", {"max_src_resolution": 500_000}),
    "max_src_file_size": ("1024", {"max_src_file_size": 1024}),
    "max_animation_frames": ("10", {"max_animation_frames": 10}),
    "max_animation_frame_resolution": ("2", {"max_animation_frame_resolution": 2_000_000}),
    "max_result_dimension": ("4000", {"max_result_dimension": 4000}),
    "trim": ("12.5:ff00ff:1:0", {"trim": Trim(12.5, (255, 0, 255), True, False)}),
    "pixelate": ("8", {"pixelate": 8}),
    "watermark": ("0.5:re:10:20:0.3", {"watermark": Watermark(0.5, "re", 10.0, 20.0, 0.3)}),
    "max_bytes": ("20000", {"max_bytes": 20000}),
    "skip_processing": ("jpg:png", {"skip_processing": (ImageFormat.JPEG, ImageFormat.PNG)}),
    "raw": ("1", {"raw": True}),
}


def test_table_covers_every_option() -> None:
    assert set(VALID) | {"preset"} == set(OPTION_NAMES)


@pytest.mark.parametrize(("long", "name"), [(long, name) for long in VALID for name in all_names(long)])
def test_every_option_and_alias_parses(long: str, name: str) -> None:
    args, expected = VALID[long]
    policy = ALLOW_SECURITY if long in SECURITY else None
    assert parse_one(f"{name}:{args}", policy) == replace(Options(), **expected)


@pytest.mark.parametrize("name", ["preset", "pr"])
def test_preset_names(name: str) -> None:
    policy = ParsePolicy(presets={"thumb": ("w:10",), "big": ("h:20",)})
    assert parse_one(f"{name}:thumb:big", policy) == Options(width=10, height=20)


def test_aliases_are_the_imgproxy_ones() -> None:
    assert OPTION_NAMES["format"] == ("f", "ext")
    assert OPTION_NAMES["extend_aspect_ratio"] == ("extend_ar", "exar")
    assert OPTION_NAMES["min-width"] == ("mw",)
    assert OPTION_NAMES["dpr"] == ()


@pytest.mark.parametrize("name", ["Width", "W", "RS", "foo", "min_width", ""])
def test_unknown_option(name: str) -> None:
    with pytest.raises(InvalidURL) as info:
        parse_one(f"{name}:1")
    assert repr(name) in str(info.value)


# --- argument rules and error paths --------------------------------------------------------------------

ERRORS: list[tuple[str, str]] = [
    ("rs:bogus", "resizing_type"),
    ("rs:fit:1:2:3:4:5:6:7:8", "resize"),
    ("rs:fit:-1", "width"),
    ("s:1:2:3:4:5:6:7:8", "size"),
    ("s:x", "width"),
    ("s:1:x", "height"),
    ("rt:", "resizing_type"),
    ("rt:FIT", "resizing_type"),
    ("rt:fit:fill", "resizing_type"),
    ("w:", "width"),
    ("w:-1", "width"),
    ("w:abc", "width"),
    ("w:1.5", "width"),
    ("w:1:2", "width"),
    ("h:-5", "height"),
    ("mw:x", "min-width"),
    ("mh:1.5", "min-height"),
    ("z:0", "zoom"),
    ("z:", "zoom"),
    ("z:-1", "zoom"),
    ("z:1:0", "zoom"),
    ("z:1:2:3", "zoom"),
    ("dpr:0", "dpr"),
    ("dpr:", "dpr"),
    ("dpr:-2", "dpr"),
    ("el:1:2", "enlarge"),
    ("ex:1:sm", "extend"),
    ("ex:1:ce:1:2:3", "extend"),
    ("ex:1:xx", "extend"),
    ("ex:1:re", "extend"),
    ("ex:1:fp:0.5", "extend"),
    ("exar:1:sm", "extend_aspect_ratio"),
    ("extend_ar:1:no:1:2:3", "extend_aspect_ratio"),
    ("g:", "gravity"),
    ("g:xx", "gravity"),
    ("g:re", "gravity"),
    ("g:sm:1", "gravity"),
    ("g:fp:0.5", "gravity"),
    ("g:fp:1.5:0.5", "gravity"),
    ("g:fp:0.5:-0.1", "gravity"),
    ("g:fp::0.5", "gravity"),
    ("g:no:1:2:3", "gravity"),
    ("g:no:abc", "gravity"),
    ("c:-1", "crop"),
    ("c:abc", "crop"),
    ("c:1:1:xx", "crop"),
    ("c:1:1:ce:1:1:1", "crop"),
    ("pd:-1", "padding"),
    ("pd:1:2:3:4:5", "padding"),
    ("pd:a", "padding"),
    ("ar:1:2", "auto_rotate"),
    ("rot:45", "rotate"),
    ("rot:", "rotate"),
    ("rot:1.5", "rotate"),
    ("fl:1:1:1", "flip"),
    ("bg:1:2", "background"),
    ("bg:1:2:3:4", "background"),
    ("bg:256:0:0", "background"),
    ("bg:-1:0:0", "background"),
    ("bg:1::3", "background"),
    ("bg:gg0000", "background"),
    ("bg:#fff", "background"),
    ("bg:ffff", "background"),
    ("bg::", "background"),
    ("bl:-1", "blur"),
    ("bl:", "blur"),
    ("bl:1001", "blur"),
    ("bl:1:2", "blur"),
    ("sh:-1", "sharpen"),
    ("sh:", "sharpen"),
    ("sm:1:1", "strip_metadata"),
    ("kcr:1:1", "keep_copyright"),
    ("scp:1:1", "strip_color_profile"),
    ("att:1:1", "return_attachment"),
    ("q:101", "quality"),
    ("q:-1", "quality"),
    ("q:", "quality"),
    ("q:1.5", "quality"),
    ("fq:webp", "format_quality"),
    ("fq:", "format_quality"),
    ("fq:tif:50", "format_quality"),
    ("fq:webp:101", "format_quality"),
    ("fq:webp:x", "format_quality"),
    ("f:tif", "format"),
    ("f:JPG", "format"),
    ("f:pdf", "format"),
    ("f:best", "format"),
    ("f:webp:1", "format"),
    ("ext:heif", "format"),
    ("cb:a:b", "cachebuster"),
    ("exp:abc", "expires"),
    ("exp:", "expires"),
    ("exp:1.5", "expires"),
    ("fn:a:1:2", "filename"),
    ("fn:!!!:1", "filename"),
    ("fn:a+b:1", "filename"),
    # empty arguments that imgproxy v4 rejects (research §1.3/§1.5 quick table)
    ("ex:1:", "extend"),
    ("c:100:", "crop"),
    ("c:1:1:", "crop"),
    ("f:", "format"),
]


@pytest.mark.parametrize(("segment", "name"), ERRORS)
def test_invalid_arguments(segment: str, name: str) -> None:
    with pytest.raises(InvalidURL) as info:
        parse_one(segment, ALLOW_SECURITY)
    assert name in str(info.value)
    assert info.value.status_code == 404


@pytest.mark.parametrize(("segment", "name"), [
    ("msr:0", "max_src_resolution"),
    ("msr:-1", "max_src_resolution"),
    ("msr:abc", "max_src_resolution"),
    ("msr:1:2", "max_src_resolution"),
    ("maf:0", "max_animation_frames"),
    ("maf:", "max_animation_frames"),
    ("mafr:0", "max_animation_frame_resolution"),
    ("mrd:x", "max_result_dimension"),
    ("msfs:1.5", "max_src_file_size"),
])
def test_invalid_security_arguments(segment: str, name: str) -> None:
    with pytest.raises(InvalidURL) as info:
        parse_one(segment, ALLOW_SECURITY)
    assert name in str(info.value)


@pytest.mark.parametrize("raw", ["1e3", "1E3", "inf", "Inf", "nan", "NaN", "1_0", "١", "１", "0x10", "0b1",
                                 " 1", "1 ", "+-1", "infinity", "--1", "1.2.3", "٣.٥"])
@pytest.mark.parametrize("option", ["w", "rot", "q", "z", "dpr", "bl", "c", "exp", "pd"])
def test_strict_numbers(option: str, raw: str) -> None:
    with pytest.raises(InvalidURL):
        parse_one(f"{option}:{raw}")


@pytest.mark.parametrize(("segment", "expected"), [
    ("z:.5", {"zoom_x": 0.5, "zoom_y": 0.5}),
    ("z:5.", {"zoom_x": 5.0, "zoom_y": 5.0}),
    ("w:007", {"width": 7}),
    ("dpr:1.25", {"dpr": 1.25}),
    ("rot:450", {"rotate": 90}),
    ("rot:-0", {}),
    ("rot:0", {}),
    ("exp:-5", {"expires": -5}),
    ("exp:0", {}),
    ("q:100", {"quality": 100}),
    ("q:0", {}),
    ("bl:0", {}),
    ("bg:0255:0:00", {"background": (255, 0, 0)}),
    ("bg:fA0", {"background": (255, 170, 0)}),
    ("g:no:-10:0.5", {"gravity": Gravity(GravityType.NORTH, -10.0, 0.5)}),
    ("g:fp:0:1", {"gravity": Gravity(GravityType.FOCUS_POINT, 0.0, 1.0)}),
    ("g:sm", {"gravity": Gravity(GravityType.SMART)}),
    ("c:0.5", {"crop": Crop(0.5, 0.0)}),
    ("c:10:20:fp:0.5:0.5", {"crop": Crop(10.0, 20.0, Gravity(GravityType.FOCUS_POINT, 0.5, 0.5))}),
    ("ex:1:fp:0.1:0.2", {"extend": Extend(True, Gravity(GravityType.FOCUS_POINT, 0.1, 0.2))}),
    ("fq:jpeg:50:jpg:60", {"format_quality": ((ImageFormat.JPEG, 60),)}),
    ("f:jpg", {"format": ImageFormat.JPEG}),
    ("fn:my%20pic", {"filename": "my%20pic"}),
    ("fn:abc:notabool", {"filename": "abc"}),
    ("fn:" + b64("naïve \"x\"") + ":true", {"filename": "naïve \"x\""}),
    ("fn:cmVwb3J0=:1", {"filename": "report"}),
])
def test_argument_edge_values(segment: str, expected: dict[str, Any]) -> None:
    assert parse_one(segment) == replace(Options(), **expected)


@pytest.mark.parametrize("fmt", ["jpeg", "jpg", "png", "webp", "avif", "gif", "ico", "svg", "heic", "bmp",
                                 "tiff", "jxl"])
def test_every_format_name(fmt: str) -> None:
    expected = ImageFormat.from_name(fmt)
    assert parse_one(f"f:{fmt}").format is expected
    assert parse_path(f"/plain/{SRC}@{fmt}")[0].format is expected
    assert parse_path(f"/{b64(SRC)}.{fmt}")[0].format is expected


# --- empty arguments and lenient booleans ----------------------------------------------------------------

@pytest.mark.parametrize(("path", "expected"), [
    ("rt:fill/rs::300", {"resizing_type": ResizeType.FILL, "width": 300}),
    ("rs:fill", {"resizing_type": ResizeType.FILL}),
    ("w:100/s::200", {"width": 100, "height": 200}),
    ("w:100/h:50/el:1/s:::", {"width": 100, "height": 50, "enlarge": True}),
    ("bg:fff/bg:", {}),
    ("cb:x/cb:", {}),
    ("pd::5", {"padding": Padding(0, 5, 0, 5)}),
    ("pd:10", {"padding": Padding(10, 10, 10, 10)}),
    ("pd:10:20", {"padding": Padding(10, 20, 10, 20)}),
    ("pd:10:20:30", {"padding": Padding(10, 20, 30, 20)}),
    ("pd:0", {}),
    ("pd:1/pd:0:0:0:0", {}),
    ("fl::1", {"flip_vertical": True}),
    ("fl:1", {"flip_horizontal": True}),
    ("z:2", {"zoom_x": 2.0, "zoom_y": 2.0}),
    ("ex:1", {"extend": Extend(True)}),
    ("ex:", {}),
    ("f:png/f:webp", {"format": ImageFormat.WEBP}),
])
def test_empty_arguments_and_defaults(path: str, expected: dict[str, Any]) -> None:
    assert parse_path(f"/{path}/plain/{SRC}")[0] == replace(Options(), **expected)


def test_size_with_empty_extend_argument_ignores_the_rest() -> None:
    # v4: when size's 4th argument (extend) is empty, the extend gravity that follows is ignored entirely,
    # and a previously set extend is left untouched
    assert parse_one("s:100:100:1::sm") == Options(width=100, height=100, enlarge=True)
    assert parse_path(f"/ex:1:no/s:10:10:0:/plain/{SRC}")[0] == Options(
        width=10, height=10, extend=Extend(True, Gravity(GravityType.NORTH)))


@pytest.mark.parametrize("raw", ["1", "t", "T", "TRUE", "true", "True"])
@pytest.mark.parametrize("name", ["el", "ar", "sm", "kcr", "scp", "att"])
def test_true_spellings(name: str, raw: str) -> None:
    options = parse_one(f"{name}:{raw}")
    field_name = {"el": "enlarge", "ar": "auto_rotate", "sm": "strip_metadata", "kcr": "keep_copyright",
                  "scp": "strip_color_profile", "att": "return_attachment"}[name]
    assert getattr(options, field_name) is True


@pytest.mark.parametrize("raw", ["0", "f", "F", "FALSE", "false", "False", "", "yes", "on", "tRUE", "2", "y",
                                 "١"])
@pytest.mark.parametrize("name", ["el", "ar", "sm", "kcr", "scp", "att", "ex", "fl"])
def test_lenient_false(name: str, raw: str) -> None:
    # anything that is not one of the six true spellings counts as false, never an error
    options = parse_path(f"/el:1/ar:1/sm:1/kcr:1/scp:1/att:1/ex:1/fl:1/{name}:{raw}/plain/{SRC}")[0]
    values = {"el": options.enlarge, "ar": options.auto_rotate, "sm": options.strip_metadata,
              "kcr": options.keep_copyright, "scp": options.strip_color_profile,
              "att": options.return_attachment, "ex": options.extend.enabled, "fl": options.flip_horizontal}
    assert values[name] is False
    assert all(v is True for k, v in values.items() if k != name)


# --- later options override earlier ones -----------------------------------------------------------------

@pytest.mark.parametrize(("path", "expected"), [
    ("rs:fill:100/w:200", {"resizing_type": ResizeType.FILL, "width": 200}),
    ("w:200/rs:fill:100", {"resizing_type": ResizeType.FILL, "width": 100}),
    ("w:100/width:50", {"width": 50}),
    ("q:50/quality:60", {"quality": 60}),
    ("g:no/g:sm", {"gravity": Gravity(GravityType.SMART)}),
    ("rt:force/rt:fit", {}),
    ("bg:fff/bg:1:2:3", {"background": (1, 2, 3)}),
    ("fq:webp:50/fq:avif:40", {"format_quality": ((ImageFormat.AVIF, 40), (ImageFormat.WEBP, 50))}),
    ("fq:webp:50/fq:webp:60", {"format_quality": ((ImageFormat.WEBP, 60),)}),
    ("el:1/el:0", {}),
    ("sm:0/sm:1", {"strip_metadata": True}),
])
def test_later_overrides_earlier(path: str, expected: dict[str, Any]) -> None:
    assert parse_path(f"/{path}/plain/{SRC}")[0] == replace(Options(), **expected)


def test_extension_overrides_format_option() -> None:
    assert parse_path(f"/f:png/plain/{SRC}@webp")[0].format is ImageFormat.WEBP
    assert parse_path(f"/f:png/{b64(SRC)}.avif")[0].format is ImageFormat.AVIF
    assert parse_path(f"/f:png/plain/{SRC}@")[0].format is ImageFormat.PNG


# --- sources --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "source", "fmt"), [
    ("/plain/http://example.com/images/curiosity.jpg@png", "http://example.com/images/curiosity.jpg",
     ImageFormat.PNG),
    ("/plain/http:%2F%2Fimages.dev%2Florem%2Fipsum.jpg%3Fparam=value@png",
     "http://images.dev/lorem/ipsum.jpg?param=value", ImageFormat.PNG),
    ("/plain/http://x/a%2520b.jpg", "http://x/a%20b.jpg", None),
    ("/plain/http://x/a+b.jpg", "http://x/a+b.jpg", None),
    ("/plain/http://x/a%40b.jpg@jpg", "http://x/a@b.jpg", ImageFormat.JPEG),
    ("/plain/http://x/caf%C3%A9.jpg", "http://x/café.jpg", None),
    ("/plain/local:///a.png@", "local:///a.png", None),
    ("/w:1/plain/s3://bucket/key/with/slashes.png", "s3://bucket/key/with/slashes.png", None),
    ("/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png", "http://example.com/images/curiosity.jpg",
     ImageFormat.PNG),
    ("/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png",
     "http://example.com/images/curiosity.jpg", ImageFormat.PNG),
    (f"/{b64('http://x/?>>?')}", "http://x/?>>?", None),
    (f"/{base64.urlsafe_b64encode(b'http://x/?>>?').decode()}", "http://x/?>>?", None),
    (f"/{base64.urlsafe_b64encode(b'http://x/a.jpg').decode()}.webp", "http://x/a.jpg", ImageFormat.WEBP),
    (f"/{b64('http://x/a.jpg')}.jpg", "http://x/a.jpg", ImageFormat.JPEG),
])
def test_sources(path: str, source: str, fmt: ImageFormat | None) -> None:
    options, url = parse_path(path)
    assert url == source
    assert options.format is fmt


@pytest.mark.parametrize("path", [
    "/plain/http://x/a@b@png",
    "/plain/@png",
    "/plain/",
    "/plain",
    "/w:1/plain",
    "/w:1",
    "/w:1/",
    "/plain/http://x/a.jpg@tif",
    "/plain/http://x/a.jpg@JPG",
    "/plain/http://x/%zz.jpg",
    "/plain/http://x/%2",
    "/plain/http://x/%ff.jpg",
    "/plain/http://x/%C3.jpg",
    f"/{b64('http://x/a')}.png.webp",
    f"/{b64('http://x/a')}.tif",
    "/.png",
    "/!!!!",
    "/aHR0c",
    "/_w",
    "/aHR0cDovL3gvPz4+Pw",
    "/aHR0cD=ovL3g",
    "/aHR0 cDovL3g",
    "",
    "/",
    "//",
    "/w:1/plain/http://x/\n.jpg",
    "/plain/http://x/a\x00.jpg",
    "/plain/http://x/a\x7f.jpg",
    "/" + "w:1/" * 129 + "plain/http://x",
    "/plain/http://x/" + "a" * 8200,
])
def test_bad_sources_and_paths(path: str) -> None:
    with pytest.raises(InvalidURL):
        parse_path(path)


def test_standard_alphabet_base64_does_not_decode_to_the_url() -> None:
    url = "http://x/?>>?~~~???"
    standard = base64.b64encode(url.encode()).decode().rstrip("=")
    assert "+" in standard
    assert "/" in standard
    with pytest.raises(InvalidURL):
        parse_path("/" + standard)
    assert parse_path("/" + base64.urlsafe_b64encode(url.encode()).decode())[1] == url


def test_base64_split_anywhere() -> None:
    encoded = b64("http://example.com/some/long/path/image.png")
    for cut in range(1, len(encoded)):
        assert parse_path(f"/w:5/{encoded[:cut]}/{encoded[cut:]}.png") == (
            Options(width=5, format=ImageFormat.PNG), "http://example.com/some/long/path/image.png")


def test_multiple_formats_message() -> None:
    with pytest.raises(InvalidURL, match=r"(?i)multiple formats"):
        parse_path("/plain/http://x/a@b@png")
    with pytest.raises(InvalidURL, match=r"(?i)multiple formats"):
        parse_path(f"/{b64('http://x/a')}.png.webp")


def test_empty_url_message() -> None:
    with pytest.raises(InvalidURL, match=r"(?i)empty"):
        parse_path("/plain/@png")


# --- presets ---------------------------------------------------------------------------------------------

PRESETS = ParsePolicy(presets={
    "thumb": ("rs:fill:100:100", "q:70"),
    "sharp": ("sh:1",),
    "a": ("pr:b", "w:1"),
    "b": ("pr:a", "h:2"),
    "self": ("pr:self", "mw:3"),
    "sec": ("mrd:100",),
})


def test_presets_apply_in_order_in_place() -> None:
    assert parse_path(f"/pr:thumb:sharp/plain/{SRC}", PRESETS)[0] == Options(
        resizing_type=ResizeType.FILL, width=100, height=100, quality=70, sharpen=1.0)
    assert parse_path(f"/preset:thumb/w:50/plain/{SRC}", PRESETS)[0].width == 50
    assert parse_path(f"/w:50/preset:thumb/plain/{SRC}", PRESETS)[0].width == 100


def test_preset_recursion_is_skipped() -> None:
    assert parse_path(f"/pr:a/plain/{SRC}", PRESETS)[0] == Options(width=1, height=2)
    assert parse_path(f"/pr:self/plain/{SRC}", PRESETS)[0] == Options(min_width=3)
    # applying a preset twice in sequence is not recursion
    assert parse_path(f"/pr:sharp/sh:5/pr:sharp/plain/{SRC}", PRESETS)[0].sharpen == 1.0


@pytest.mark.parametrize("segment", ["pr:nope", "pr:", "preset:thumb:nope", "pr:Thumb"])
def test_unknown_preset(segment: str) -> None:
    with pytest.raises(InvalidURL, match="preset"):
        parse_path(f"/{segment}/plain/{SRC}", PRESETS)


def test_default_preset_applies_first_and_can_be_overridden() -> None:
    policy = ParsePolicy(presets={"default": ("q:50", "w:10")})
    assert parse_path(f"/plain/{SRC}", policy)[0] == Options(quality=50, width=10)
    assert parse_path(f"/w:20/plain/{SRC}", policy)[0] == Options(quality=50, width=20)
    assert parse_path(f"/{b64(SRC)}", policy)[0] == Options(quality=50, width=10)


def test_only_presets_mode() -> None:
    policy = replace(PRESETS, only_presets=True, presets={**PRESETS.presets, "default": ("bl:2",)})
    options, source = parse_path(f"/thumb:sharp/plain/{SRC}@png", policy)
    assert source == SRC
    assert options == Options(resizing_type=ResizeType.FILL, width=100, height=100, quality=70, sharpen=1.0,
                              blur=2.0, format=ImageFormat.PNG)
    assert parse_path(f"/thumb/{b64(SRC)}", policy)[0].width == 100
    with pytest.raises(InvalidURL, match="'w'"):
        parse_path(f"/w:100/plain/{SRC}", policy)
    with pytest.raises(InvalidURL):
        parse_path("/thumb", policy)
    with pytest.raises(InvalidURL):
        parse_path(f"/nope/plain/{SRC}", policy)


def test_only_presets_mode_has_no_deprecated_format_check() -> None:
    # v4: in presets-only mode the first segment is always the preset list (no basic-format check)
    policy = ParsePolicy(presets={"fill": ("rt:fill",)}, only_presets=True)
    assert parse_path(f"/fill/plain/{SRC}", policy)[0] == Options(resizing_type=ResizeType.FILL)


# --- base URL, security options, deprecated format -----------------------------------------------------

@pytest.mark.parametrize(("path", "source"), [
    ("/plain/a.jpg", "http://img.example/a.jpg"),
    ("/plain/http://img.example/a.jpg", "http://img.example/a.jpg"),
    (f"/{b64('b/c.png')}", "http://img.example/b/c.png"),
    ("/plain/http://other/a.jpg", "http://img.example/http://other/a.jpg"),
])
def test_base_url(path: str, source: str) -> None:
    assert parse_path(path, ParsePolicy(base_url="http://img.example/"))[1] == source


@pytest.mark.parametrize("name", [name for long in SECURITY for name in all_names(long)])
def test_security_options_forbidden_unless_allowed(name: str) -> None:
    with pytest.raises(ForbiddenOption) as info:
        parse_one(f"{name}:10")
    assert repr(name) in str(info.value)
    assert info.value.status_code == 403
    # forbidden before the arguments are looked at
    with pytest.raises(ForbiddenOption):
        parse_one(f"{name}:garbage")
    assert parse_one(f"{name}:10", ALLOW_SECURITY) != Options()


@pytest.mark.parametrize("kind", ["fit", "fill", "fill-down", "force", "auto"])
def test_deprecated_basic_format(kind: str) -> None:
    with pytest.raises(InvalidURL, match="deprecated"):
        parse_path(f"/{kind}/300/200/ce/0/{b64(SRC)}")


# --- normalize_path ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("/rs%3Afit%3A1%3A1/plain/http%3A%2F%2Fx%2Fa.jpg", "/rs:fit:1:1/plain/http%3A%2F%2Fx%2Fa.jpg"),
    ("/rs:fit:1:1/plain/https:/example.com/a.jpg", "/rs:fit:1:1/plain/https://example.com/a.jpg"),
    ("/rs:fit/plain/local:/a.png", "/rs:fit/plain/local:///a.png"),
    ("/rs:fit/plain/http:/x", "/rs:fit/plain/http://x"),
    ("/w:1/plain/https://example.com/a.jpg", "/w:1/plain/https://example.com/a.jpg"),
    ("/w:1/plain/local:///a.png", "/w:1/plain/local:///a.png"),
    ("/w:1/plain/https://example.com/a:/b", "/w:1/plain/https://example.com/a:/b"),
    ("/rs%3afit/plain/x", "/rs%3afit/plain/x"),
    ("/rs%3Afit/aHR0cDovL3g", "/rs:fit/aHR0cDovL3g"),
    ("/w%3A1/plain/http:/x@png", "/w:1/plain/http://x@png"),
])
def test_normalize_path(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected
    assert normalize_path(expected) == expected


def test_normalized_paths_parse_to_the_signed_meaning() -> None:
    assert parse_path(normalize_path("/rs%3Afill%3A10/plain/http:/x/a.jpg")) == (
        Options(resizing_type=ResizeType.FILL, width=10), "http://x/a.jpg")
    assert parse_path(normalize_path("/w%3A1/plain/local:/a.png"))[1] == "local:///a.png"


# --- the canonical inverse --------------------------------------------------------------------------------

ROUND_TRIP_PATHS = [
    "/plain/http://example.com/a.jpg",
    "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png",
    "/rs:fill-down:300:200:1:1:sowe:-3:0.25/plain/https://e.com/a%20b.jpg@webp",
    "/w:10/h:20/mw:5/mh:6/z:1.5:0.5/dpr:2/el:1/plain/http://x/y?q=1&r=2",
    "/ex:1:fp:0.5:0.5/exar:1:noea:1:2/g:fp:0.1:0.9/plain/local:///cat.png",
    "/c:0.5:100:sm/pd:1:2:3:4/ar:0/rot:-90/fl:1:0/bg:fff/plain/s3://b/k.png",
    "/c:10/pd:0:5/bg:1:2:3/bl:0.5/sh:3/sm:0/kcr:1/scp:0/plain/http://x/%25.png",
    "/q:90/fq:webp:70:jpg:80/f:avif/cb:abc/exp:1999999999/att:1/plain/http://x/a%40b",
    f"/fn:{b64('naïve/x:y')}:1/plain/http://x/caf%C3%A9",
    "/fn:plain-name/plain/http://x/a",
    "/g:we:-0.5:10/rot:180/plain/http://x/a.jpg@jpg",
    "/g:ce:0:0/rs:fit:0:0:0/ex:0/plain/http://x/a",
    "/msr:0.5/msfs:1000/maf:3/mafr:1.25/mrd:2000/plain/http://x/a",
]


@pytest.mark.parametrize("path", ROUND_TRIP_PATHS)
def test_round_trip_table(path: str) -> None:
    options, source = parse_path(path, ALLOW_SECURITY)
    canonical = to_path(options, source)
    assert parse_path(canonical, ALLOW_SECURITY) == (options, source)
    assert to_path(*parse_path(canonical, ALLOW_SECURITY)) == canonical


def test_to_path_of_defaults_is_bare_plain() -> None:
    assert to_path(Options(), SRC) == f"/plain/{SRC}"
    assert to_path(Options(format=ImageFormat.JPEG), "http://x/a@b?c%") == "/plain/http://x/a%40b%3Fc%25@jpeg"


def _decimal(low: int, high: int) -> st.SearchStrategy[str]:
    fraction = st.one_of(st.text("0123456789", max_size=10),
                         st.integers(1, 9).map(lambda d: "00000" + str(d)))
    return st.builds(lambda i, f: f"{i}.{f}" if f else str(i), st.integers(low, high), fraction)


def _positive_decimal() -> st.SearchStrategy[str]:
    return _decimal(0, 10**6).filter(lambda s: float(s) > 0)


_BOOL = st.sampled_from(["0", "1", "true", "false", "t", "f", "x", ""])
_GRAVITY_PLAIN = st.builds(lambda t, x, y: f"{t}:{x}:{y}",
                           st.sampled_from(["no", "so", "ea", "we", "noea", "nowe", "soea", "sowe", "ce"]),
                           _decimal(-1000, 1000), _decimal(-1000, 1000))
_GRAVITY_FP = st.builds(lambda x, y: f"fp:{x}:{y}", st.sampled_from(["0", "0.5", "1", "0.25", "0.0001"]),
                        st.sampled_from(["0", "0.75", "1.0", "0.3333333333"]))
_GRAVITY = st.one_of(_GRAVITY_PLAIN, _GRAVITY_FP, st.just("sm"))
_INT = st.integers(0, 10**9).map(str)
_FORMAT = st.sampled_from(["jpeg", "jpg", "png", "webp", "avif", "gif", "tiff", "heic", "jxl", "bmp", "ico"])
_TOKEN = st.text(st.characters(exclude_characters=":/", min_codepoint=0x21, max_codepoint=0x7e),
                 min_size=1, max_size=8)

_SEGMENT = st.one_of(
    st.builds(lambda t, w, h: f"rs:{t}:{w}:{h}",
              st.sampled_from(["fit", "fill", "fill-down", "force", "auto", ""]), _INT, _INT),
    st.builds(lambda w, h, e: f"s:{w}:{h}:{e}", _INT, _INT, _BOOL),
    st.builds("w:{}".format, _INT),
    st.builds("h:{}".format, _INT),
    st.builds("mw:{}".format, _INT),
    st.builds("mh:{}".format, _INT),
    st.builds("z:{}:{}".format, _positive_decimal(), _positive_decimal()),
    st.builds("dpr:{}".format, _positive_decimal()),
    st.builds("el:{}".format, _BOOL),
    st.builds("ex:{}:{}".format, _BOOL, st.one_of(_GRAVITY_PLAIN, _GRAVITY_FP)),
    st.builds("exar:{}:{}".format, _BOOL, st.one_of(_GRAVITY_PLAIN, _GRAVITY_FP)),
    st.builds("g:{}".format, _GRAVITY),
    st.builds("c:{}:{}:{}".format, _decimal(0, 5000), _decimal(0, 5000), _GRAVITY),
    st.builds("c:{}".format, _decimal(0, 5000)),
    st.builds("pd:{}:{}:{}:{}".format, _INT, _INT, _INT, _INT),
    st.builds("ar:{}".format, _BOOL),
    st.builds("rot:{}".format, st.integers(-10, 10).map(lambda n: str(n * 90))),
    st.builds("fl:{}:{}".format, _BOOL, _BOOL),
    st.builds("bg:{}:{}:{}".format, *(st.integers(0, 255).map(str) for _ in range(3))),
    st.builds("bg:{}".format, st.text("0123456789abcdefABCDEF", min_size=6, max_size=6)),
    st.builds("bl:{}".format, _decimal(0, 1000).filter(lambda s: float(s) <= 1000)),
    st.builds("sh:{}".format, _decimal(0, 1000).filter(lambda s: float(s) <= 1000)),
    st.builds("sm:{}".format, _BOOL),
    st.builds("kcr:{}".format, _BOOL),
    st.builds("scp:{}".format, _BOOL),
    st.builds("q:{}".format, st.integers(0, 100)),
    st.builds("fq:{}:{}".format, _FORMAT, st.integers(0, 100)),
    st.builds("f:{}".format, _FORMAT),
    st.builds("cb:{}".format, _TOKEN),
    st.builds("exp:{}".format, st.integers(-(10**12), 10**12)),
    st.builds("fn:{}".format, _TOKEN),
    st.builds(lambda name: f"fn:{b64(name)}:1", st.text(max_size=20)),
    st.builds("att:{}".format, _BOOL),
    st.builds("msr:{}".format, _positive_decimal()),
    st.builds("msfs:{}".format, _INT),
    st.builds("maf:{}".format, st.integers(1, 10**6)),
    st.builds("mafr:{}".format, _positive_decimal()),
    st.builds("mrd:{}".format, _INT),
)
_SOURCE = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segments=st.lists(_SEGMENT, max_size=8), source=_SOURCE, extension=st.one_of(st.none(), _FORMAT))
def test_round_trip_property(segments: list[str], source: str, extension: str | None) -> None:
    path = to_path(Options(), source)  # a correctly escaped plain source
    path = "/" + "/".join([*segments, path.lstrip("/")]) + (f"@{extension}" if extension else "")
    options, url = parse_path(path, ALLOW_SECURITY)
    assert url == source
    canonical = to_path(options, url)
    assert parse_path(canonical, ALLOW_SECURITY) == (options, url)


_RESIZE = st.sampled_from(list(ResizeType))
_GTYPE = st.sampled_from([t for t in GravityType if t not in (GravityType.SMART, GravityType.FOCUS_POINT)])
_OFFSET = st.integers(-100000, 100000).map(lambda n: n / 100)
_FRACTION = st.integers(0, 100).map(lambda n: n / 100)
_GRAV = st.one_of(st.builds(Gravity, _GTYPE, _OFFSET, _OFFSET), st.just(Gravity(GravityType.SMART)),
                  st.builds(Gravity, st.just(GravityType.FOCUS_POINT), _FRACTION, _FRACTION))
_NO_SMART = _GRAV.filter(lambda g: g.type is not GravityType.SMART)
_POS = st.integers(1, 10**6).map(lambda n: n / 100)
_OPTION_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "resizing_type": _RESIZE, "width": st.integers(0, 10**6), "height": st.integers(0, 10**6),
    "min_width": st.integers(0, 10**4), "min_height": st.integers(0, 10**4),
    "zoom_x": _POS, "zoom_y": _POS, "dpr": _POS,
    "enlarge": st.booleans(), "extend": st.builds(Extend, st.booleans(), _NO_SMART),
    "extend_aspect_ratio": st.builds(Extend, st.booleans(), _NO_SMART), "gravity": _GRAV,
    "crop": st.none() | st.builds(Crop, st.integers(0, 10**5).map(lambda n: n / 10),
                               st.integers(0, 10**5).map(lambda n: n / 10), st.none() | _GRAV),
    "padding": st.none() | st.builds(Padding, *(st.integers(0, 1000) for _ in range(4))).filter(
        lambda p: p != Padding()),
    "auto_rotate": st.none() | st.booleans(), "rotate": st.sampled_from([0, 90, 180, 270]),
    "flip_horizontal": st.booleans(), "flip_vertical": st.booleans(),
    "background": st.none() | st.tuples(*(st.integers(0, 255) for _ in range(3))),
    "blur": st.integers(0, 100000).map(lambda n: n / 100),
    "sharpen": st.integers(0, 100000).map(lambda n: n / 100),
    "strip_metadata": st.none() | st.booleans(), "keep_copyright": st.none() | st.booleans(),
    "strip_color_profile": st.none() | st.booleans(), "quality": st.integers(0, 100),
    "format_quality": st.dictionaries(st.sampled_from(list(ImageFormat)), st.integers(0, 100)).map(
        lambda d: tuple(sorted(d.items(), key=lambda kv: kv[0].value))),
    "format": st.none() | st.sampled_from(list(ImageFormat)),
    "cachebuster": st.just("") | _TOKEN, "expires": st.integers(-(10**12), 10**12),
    "filename": st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
    "return_attachment": st.none() | st.booleans(),
    "max_src_resolution": st.none() | st.integers(1, 10**9),
    "max_src_file_size": st.none() | st.integers(0, 10**9),
    "max_animation_frames": st.none() | st.integers(1, 10**6),
    "max_animation_frame_resolution": st.none() | st.integers(1, 10**9),
    "max_result_dimension": st.none() | st.integers(0, 10**6),
    "trim": st.none() | st.builds(Trim, st.integers(0, 100000).map(lambda n: n / 100),
                                  st.none() | st.tuples(*(st.integers(0, 255) for _ in range(3))),
                                  st.booleans(), st.booleans()),
    "pixelate": st.integers(0, 10000),
    "watermark": st.none() | st.builds(Watermark, st.integers(1, 100).map(lambda n: n / 100),
                                       st.sampled_from(WATERMARK_POSITIONS),
                                       st.integers(-1000, 1000).map(lambda n: n / 10),
                                       st.integers(-1000, 1000).map(lambda n: n / 10),
                                       st.integers(0, 1000).map(lambda n: n / 100)),
    "max_bytes": st.integers(0, 10**9),
    "skip_processing": st.lists(st.sampled_from(list(ImageFormat)), unique=True, max_size=4).map(tuple),
    "raw": st.booleans(),
}
_OPTIONS = st.builds(Options, **_OPTION_FIELDS)


@settings(max_examples=300, deadline=None)
@given(options=_OPTIONS, source=_SOURCE)
def test_round_trip_property_from_fields(options: Options, source: str) -> None:
    assert parse_path(to_path(options, source), ALLOW_SECURITY) == (options, source)


def test_options_strategy_covers_every_field() -> None:
    assert {f.name for f in fields(Options)} == set(_OPTION_FIELDS)


_FRAGMENTS = st.sampled_from([
    "/", ":", "plain", "plain/", "%", "%ff", "%C3", "%zz", "%3A", "@", ".", "=", "w", "rs", "pr", "g", "fp",
    "sm", "c", "bg", "fq", "fn", "msr", "aHR0", "cDovL3g", "fill", "1", "-1", "1.5", "nan", "\x00", "é", "+",
    "local:/", "http:/", "webp", "png", "default", "x",
])
_JOINED = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=3)), max_size=30).map("".join)
_PATHS = st.one_of(st.text(), _JOINED, _JOINED.map("plain/".__add__), _JOINED.map("w:1/plain/".__add__))
_POLICIES = st.sampled_from([
    ParsePolicy(),
    ALLOW_SECURITY,
    PRESETS,
    ParsePolicy(presets={"default": ("w:1",), "x": ("pr:x",)}, only_presets=True),
    ParsePolicy(base_url="http://b/"),
])


@settings(max_examples=1500, deadline=None)
@given(path=_PATHS, policy=_POLICIES)
def test_parse_path_raises_only_imgorigin_errors(path: str, policy: ParsePolicy) -> None:
    for candidate in (path, "/" + path, normalize_path("/" + path)):
        try:
            options, source = parse_path(candidate, policy)
        except (InvalidURL, ForbiddenOption):
            continue
        except ImgOriginError as exc:
            pytest.fail(f"unexpected {type(exc).__name__}: {exc}")
        assert isinstance(options, Options)
        assert source
