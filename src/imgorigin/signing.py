"""URL signing, imgproxy-compatible: base64url (no padding) of HMAC-SHA256(key, salt + path).

``sign_path`` is standard-library only, so applications can sign URLs without installing the server's
dependencies (``imgorigin.urlbuilder`` builds on it). ``Verifier`` is the server side: it computes
digests with itsdangerous and checks a signature strictly and in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence

from .errors import BadSignature

__all__ = ["Verifier", "encoded_length", "sign_path"]


def sign_path(key: bytes, salt: bytes, path: str, size: int = 32) -> str:
    """The signature of ``path`` (everything after the signature segment, leading ``/`` included)."""
    digest = hmac.new(key, salt + path.encode(), hashlib.sha256).digest()[:size]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def encoded_length(size: int) -> int:
    """Characters of an unpadded base64url encoding of ``size`` bytes."""
    return (size * 4 + 2) // 3


_B64URL = re.compile(r"[A-Za-z0-9_-]+")


class Verifier:
    """Checks signatures against every configured (key, salt) pair and the trusted list."""

    def __init__(self, keys: Sequence[bytes], salts: Sequence[bytes], *, size: int = 32,
                 trusted: Sequence[str] = ()) -> None:
        from itsdangerous import Signer  # the server's digest; the client side stays stdlib-only

        if len(keys) != len(salts):
            raise ValueError("keys and salts must pair up")
        self._pairs = [(Signer(key, key_derivation="none", digest_method=hashlib.sha256), salt)
                       for key, salt in zip(keys, salts, strict=True)]
        self._size = size
        self._trusted = frozenset(trusted)

    @property
    def enabled(self) -> bool:
        """Whether signatures are checked at all."""
        return bool(self._pairs)

    def verify(self, signature: str, path: str) -> None:
        """Accept ``signature`` for ``path`` or raise BadSignature; a no-op when signing is off."""
        if not self._pairs or signature in self._trusted:
            return
        if len(signature) != encoded_length(self._size) or not _B64URL.fullmatch(signature):
            raise BadSignature("invalid signature encoding")
        # reject non-canonical spellings (unused low bits set), so one URL has one signature
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != signature:
            raise BadSignature("invalid signature encoding")
        matched = False
        for signer, salt in self._pairs:
            expected = signer.algorithm.get_signature(signer.derive_key(), salt + path.encode())
            matched |= hmac.compare_digest(expected[: self._size], raw)
        if not matched:
            raise BadSignature("invalid signature")
