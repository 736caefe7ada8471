"""docs/configuration.md is generated from the settings definitions and must not drift from them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from imgorigin.config import Settings, reference_markdown

DOC = Path(__file__).parent.parent / "docs" / "configuration.md"


def test_configuration_reference_is_up_to_date() -> None:
    assert DOC.read_text() == reference_markdown(), "run: imgorigin settings > docs/configuration.md"


def test_every_setting_is_documented_with_its_alias() -> None:
    text = DOC.read_text()
    for field in dataclasses.fields(Settings):
        spec = field.metadata
        assert f"`IMGORIGIN_{spec['env']}`" in text
        if spec["imgproxy"]:
            assert f"`IMGPROXY_{spec['env']}`" in text
        assert spec["doc"] in text
