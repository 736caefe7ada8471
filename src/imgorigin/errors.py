"""The exception tree: every error knows its HTTP status and the short public text a client sees.

::

    ImgOriginError                      500 "Internal error"
    ├── BadSignature                    403 "Forbidden"
    │   └── SignatureLooksLikeOption    403 "The signature appears to be a processing option. ..."
    ├── ForbiddenOption                 403 "Invalid URL"       (security option without permission)
    ├── InvalidURL                      404 "Invalid URL"       (path, option, argument, expired, preset)
    ├── InvalidSourceURL                404 "Invalid source URL" (allow-lists, address policy)
    ├── SourceError                     404 "Source is unreachable"
    │   ├── SourceNotFound              404 (or the source's own 4xx)
    │   ├── SourceUnavailable           502
    │   └── SourceTimeout               504
    ├── InvalidImage                    422 "Invalid source image"
    │   ├── UnknownImageType            422 "Failed to detect source image type"
    │   └── BrokenImage                 422 "Broken or unsupported image"
    ├── UnsupportedOutput               422 "Invalid URL"       (format the server cannot encode)
    ├── TooManyRequests                 429 "Too many requests"
    └── RequestTimeout                  503 "Timeout"

The ``str()`` of an error is the detailed, internal message (logged); ``public_message`` is what the
client gets, so nothing about the server's internals leaks into a response.
"""

from __future__ import annotations

__all__ = [
    "BadSignature",
    "BrokenImage",
    "ForbiddenOption",
    "ImgOriginError",
    "InvalidImage",
    "InvalidSourceURL",
    "InvalidURL",
    "RequestTimeout",
    "SignatureLooksLikeOption",
    "SourceError",
    "SourceNotFound",
    "SourceTimeout",
    "SourceUnavailable",
    "TooManyRequests",
    "UnknownImageType",
    "UnsupportedOutput",
]


class ImgOriginError(Exception):
    """Base of every error imgorigin raises on purpose; carries an HTTP status and a public text."""

    status_code: int = 500
    public_message: str = "Internal error"
    #: the ``errors_total{type}`` label (imgproxy's vocabulary)
    kind: str = "unexpected"

    def __init__(self, detail: str = "", *, status_code: int | None = None) -> None:
        super().__init__(detail or self.public_message)
        if status_code is not None:
            self.status_code = status_code


class BadSignature(ImgOriginError):
    """The signature is missing, malformed or does not match."""

    status_code = 403
    public_message = "Forbidden"
    kind = "security"


class SignatureLooksLikeOption(BadSignature):
    """Signing is off and the first segment holds an option: the signature segment was left out."""

    public_message = (
        "The signature appears to be a processing option. "
        "The signature section should always be present in the URL."
    )


class ForbiddenOption(ImgOriginError):
    """A security option was used while the server does not allow them in URLs."""

    status_code = 403
    public_message = "Invalid URL"
    kind = "security"


class InvalidURL(ImgOriginError):
    """The path, an option or one of its arguments is not valid."""

    status_code = 404
    public_message = "Invalid URL"
    kind = "path_parsing"


class InvalidSourceURL(ImgOriginError):
    """The source URL is not allowed (allow-list, scheme or address policy)."""

    status_code = 404
    public_message = "Invalid source URL"
    kind = "security"


class SourceError(ImgOriginError):
    """The source could not be fetched."""

    status_code = 404
    public_message = "Source is unreachable"
    kind = "download"


class SourceNotFound(SourceError):
    """The source does not exist (or may not be read: the two look the same)."""


class SourceUnavailable(SourceError):
    """The source answered with a server error or could not be reached."""

    status_code = 502


class SourceTimeout(SourceError):
    """The source did not answer within the download timeout."""

    status_code = 504
    kind = "timeout"


class InvalidImage(ImgOriginError):
    """The source is too large, too many pixels, or otherwise refused before decoding."""

    status_code = 422
    public_message = "Invalid source image"
    kind = "image_data_size"


class UnknownImageType(InvalidImage):
    """The source's bytes are not a format we decode."""

    public_message = "Failed to detect source image type"
    kind = "processing"


class BrokenImage(InvalidImage):
    """libvips failed to decode or process the image."""

    public_message = "Broken or unsupported image"
    kind = "processing"


class UnsupportedOutput(ImgOriginError):
    """The requested output format cannot be produced (no encoder, or not for this source)."""

    status_code = 422
    public_message = "Invalid URL"
    kind = "processing"


class TooManyRequests(ImgOriginError):
    """The processing queue is full."""

    status_code = 429
    public_message = "Too many requests"
    kind = "queue"


class RequestTimeout(ImgOriginError):
    """The whole request took longer than the configured timeout."""

    status_code = 503
    public_message = "Timeout"
    kind = "timeout"
