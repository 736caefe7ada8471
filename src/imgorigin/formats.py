"""Image formats: the names URLs use, their MIME types and what each can carry."""

from __future__ import annotations

import enum

__all__ = ["ImageFormat"]


class ImageFormat(enum.Enum):
    """An image format imgorigin can name in a URL, detect in a source, or encode."""

    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"
    AVIF = "avif"
    GIF = "gif"
    TIFF = "tiff"
    ICO = "ico"
    SVG = "svg"
    HEIC = "heic"
    BMP = "bmp"
    JXL = "jxl"

    @classmethod
    def from_name(cls, name: str) -> ImageFormat:
        """The format a URL extension or option names (``jpg`` is ``jpeg``); ValueError otherwise."""
        if name == "jpg":
            return cls.JPEG
        return cls(name)

    @property
    def mime_type(self) -> str:
        """The Content-Type of this format."""
        return _MIME[self]

    @property
    def extension(self) -> str:
        """The file extension used in Content-Disposition."""
        return "jpg" if self is ImageFormat.JPEG else self.value

    @property
    def supports_alpha(self) -> bool:
        """Whether the format can carry transparency."""
        return self is not ImageFormat.JPEG

    @property
    def supports_animation(self) -> bool:
        """Whether the format can carry several frames as an animation."""
        return self in (ImageFormat.GIF, ImageFormat.WEBP)

    @property
    def has_quality(self) -> bool:
        """Whether the encoder takes a quality setting."""
        return self in (ImageFormat.JPEG, ImageFormat.WEBP, ImageFormat.AVIF, ImageFormat.HEIC,
                        ImageFormat.JXL, ImageFormat.TIFF)


_MIME: dict[ImageFormat, str] = {
    ImageFormat.JPEG: "image/jpeg",
    ImageFormat.PNG: "image/png",
    ImageFormat.WEBP: "image/webp",
    ImageFormat.AVIF: "image/avif",
    ImageFormat.GIF: "image/gif",
    ImageFormat.TIFF: "image/tiff",
    ImageFormat.ICO: "image/x-icon",
    ImageFormat.SVG: "image/svg+xml",
    ImageFormat.HEIC: "image/heif",
    ImageFormat.BMP: "image/bmp",
    ImageFormat.JXL: "image/jxl",
}
