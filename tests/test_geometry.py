"""Resize arithmetic without pyvips: imgproxy's own size assertions, gravity placement, orientation."""

from __future__ import annotations

import pytest

from imgorigin.geometry import Plan, Size, exif_transform, gravity_to_stored, position, round_half_away
from imgorigin.options import Gravity, GravityType, Options, ParsePolicy, parse_path
from imgproxy_size_cases import CASES

POLICY = ParsePolicy(allow_security_options=True)
GEOMETRY_PNG = Size(200, 100)


def _plan(path: str, source: Size = GEOMETRY_PNG, **kw: int) -> Plan:
    options, _ = parse_path(f"/{path}/plain/memory://x", POLICY)
    return Plan.for_source(source, options, max_result_dimension=options.max_result_dimension or 0, **kw)


@pytest.mark.parametrize(("path", "expected"), CASES)
def test_imgproxy_size_assertions(path: str, expected: tuple[int, int]) -> None:
    size = _plan(path).result_size()
    assert (size.width, size.height) == expected


@pytest.mark.parametrize(("path", "source", "expected"), [
    ("rs:fit:300:200", Size(6028, 3391), (300, 169)),       # W1 of the benchmark
    ("w:800", Size(1920, 1200), (800, 500)),
    ("rs:fill:400:400", Size(1920, 1200), (400, 400)),
    ("rs:fit:1000:1000", Size(512, 600), (512, 600)),        # no enlarge: never upscaled
    ("rs:fit:1000:1000:1", Size(512, 600), (853, 1000)),     # enlarge: 600 -> 1000, 512*5/3 = 853.3
    ("rs:force:100:100", Size(512, 600), (100, 100)),
    ("rs:auto:100:50", Size(512, 600), (43, 50)),            # portrait source, landscape target: fit
    ("rs:auto:50:100", Size(512, 600), (50, 100)),           # same orientation: fill
    ("mw:300", Size(200, 100), (300, 150)),                  # min-width enlarges even without el
    ("w:100/mw:300", Size(512, 600), (100, 352)),            # ...and w crops it (imgproxy docs warn)
])
def test_hand_computed_sizes(path: str, source: Size, expected: tuple[int, int]) -> None:
    size = _plan(path, source).result_size()
    assert (size.width, size.height) == expected


def test_exif_orientation_swaps_the_displayed_frame() -> None:
    plan = _plan("w:160", Size(480, 320), orientation=6)
    assert plan.source == Size(320, 480)
    assert plan.quarter_turn
    assert (plan.result_size().width, plan.result_size().height) == (160, 240)


@pytest.mark.parametrize(("orientation", "angle", "flip"), [
    (1, 0, False), (2, 0, True), (3, 180, False), (4, 180, True),
    (5, 90, True), (6, 90, False), (7, 270, True), (8, 270, False), (0, 0, False), (9, 0, False),
])
def test_exif_transform(orientation: int, angle: int, flip: bool) -> None:
    assert exif_transform(orientation) == (angle, flip)


@pytest.mark.parametrize(("kind", "expected"), [
    (GravityType.CENTER, (76, 26)),       # imgproxy centres with round-half-to-even of (d+1)/2
    (GravityType.NORTH, (76, 0)),
    (GravityType.SOUTH, (76, 50)),
    (GravityType.EAST, (150, 26)),
    (GravityType.WEST, (0, 26)),
    (GravityType.NORTH_EAST, (150, 0)),
    (GravityType.NORTH_WEST, (0, 0)),
    (GravityType.SOUTH_EAST, (150, 50)),
    (GravityType.SOUTH_WEST, (0, 50)),
])
def test_position_by_gravity(kind: GravityType, expected: tuple[int, int]) -> None:
    assert position(Size(200, 100), Size(50, 50), Gravity(kind), 1.0) == expected


def test_position_offsets_pixels_fractions_and_clamping() -> None:
    outer, inner = Size(200, 100), Size(50, 50)
    assert position(outer, inner, Gravity(GravityType.NORTH_WEST, 10, 20), 1.0) == (10, 20)
    assert position(outer, inner, Gravity(GravityType.NORTH_WEST, 10, 20), 2.0) == (20, 40)  # dpr-scaled
    assert position(outer, inner, Gravity(GravityType.NORTH_WEST, 0.1, 0.2), 2.0) == (20, 20)  # fraction
    assert position(outer, inner, Gravity(GravityType.SOUTH_EAST, 10, 10), 1.0) == (140, 40)  # inward
    assert position(outer, inner, Gravity(GravityType.NORTH_WEST, 1000, -1000), 1.0) == (150, 0)
    assert position(outer, inner, Gravity(GravityType.FOCUS_POINT, 1.0, 1.0), 1.0) == (150, 50)
    assert position(outer, inner, Gravity(GravityType.FOCUS_POINT, 0.5, 0.5), 1.0) == (75, 25)


def test_gravity_maps_back_through_rotation_and_flip() -> None:
    north = Gravity(GravityType.NORTH)
    # displayed north of an image turned 90 degrees clockwise is the stored image's west edge
    assert gravity_to_stored(north, rotate=90, flip_x=False, flip_y=False, exif_angle=0,
                             exif_flip=False).type is GravityType.WEST
    assert gravity_to_stored(north, rotate=0, flip_x=False, flip_y=True, exif_angle=0,
                             exif_flip=False).type is GravityType.SOUTH
    fp = gravity_to_stored(Gravity(GravityType.FOCUS_POINT, 0.2, 0.3), rotate=180, flip_x=False, flip_y=False,
                           exif_angle=0, exif_flip=False)
    assert (fp.x, fp.y) == pytest.approx((0.8, 0.7))
    # four quarter turns bring every gravity back
    for kind in GravityType:
        g = Gravity(kind, 0.25, 0.5) if kind is GravityType.FOCUS_POINT else Gravity(kind, 3, 4)
        for _ in range(4):
            g = gravity_to_stored(g, rotate=90, flip_x=False, flip_y=False, exif_angle=0, exif_flip=False)
        expected = Gravity(kind, 0.25, 0.5) if kind is GravityType.FOCUS_POINT else Gravity(kind, 3, 4)
        assert g == expected or kind is GravityType.SMART


def test_preshrink_and_replanning_keep_the_result_size() -> None:
    plan = _plan("rs:fit:300:200", Size(6028, 3391))
    assert plan.preshrink() > 8
    smaller = plan.after_preshrink(Size(754, 424))  # what libvips' jpeg shrink=8 gives
    assert smaller.result_size() == plan.result_size() == Size(300, 169)


def test_round_half_away_from_zero() -> None:
    assert [round_half_away(v) for v in (0.5, 1.5, 2.5, -0.5, -2.5, 2.4)] == [1, 2, 3, -1, -3, 2]


def test_default_options_keep_the_source_size() -> None:
    assert Plan.for_source(Size(640, 480), Options()).result_size() == Size(640, 480)
