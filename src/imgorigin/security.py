"""Which sources may be fetched: URL allow-lists and the address policy that stops SSRF.

``SourcePolicy.check_url`` runs on every source URL (and every redirect hop) before a connection is
made; ``SourcePolicy.check_address`` runs on every address a host name resolves to and on IP literals,
after IPv4 addresses embedded in IPv6 (mapped, compatible, 6to4, NAT64, Teredo, ISATAP) are unwrapped.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import InvalidSourceURL

__all__ = [
    "AddressBlocked",
    "AllowedNetwork",
    "SourcePolicy",
    "embedded_ipv4",
    "parse_allowed_networks",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressBlocked(OSError):
    """A resolved address is not allowed; raised inside the HTTP client's resolver."""


@dataclass(frozen=True, slots=True)
class AllowedNetwork:
    """An address or CIDR reachable in spite of the policy, optionally on one port only."""

    network: IPNetwork
    port: int | None = None

    def matches(self, address: IPAddress, port: int) -> bool:
        """Whether ``address:port`` falls in this exception."""
        return address in self.network and (self.port is None or self.port == port)


def parse_allowed_networks(items: Iterable[str]) -> tuple[AllowedNetwork, ...]:
    """Parse ``10.1.2.0/24``, ``127.0.0.1:18090``, ``[::1]:9000`` or ``[fd00::/8]``; ValueError if bad."""
    out = []
    for item in items:
        match = re.fullmatch(r"\[([^\]]+)\](?::([0-9]{1,5}))?|([0-9./]+)(?::([0-9]{1,5}))?|([0-9a-fA-F:./]+)",
                             item.strip())
        if not match:
            raise ValueError(f"{item!r}: expected an address or CIDR with an optional port")
        text = match.group(1) or match.group(3) or match.group(5)
        port_text = match.group(2) or match.group(4)
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{item!r}: {text!r} is not an address or CIDR") from None
        port = int(port_text) if port_text else None
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"{item!r}: port out of range")
        out.append(AllowedNetwork(network, port))
    return tuple(out)


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_6TO4 = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_COMPAT = ipaddress.ip_network("::/96")


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64, Teredo, ISATAP)."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    value = int(address)
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _COMPAT and value > 1:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address in _6TO4:
        return ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)
    if address in _TEREDO:
        return ipaddress.IPv4Address(~value & 0xFFFFFFFF)  # the client address, obfuscated
    if (value >> 32) & 0xFDFFFFFF == 0x00005EFE:  # ISATAP interface id ::0:5efe or ::200:5efe
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


_LOOPBACK = tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "0.0.0.0/8", "::1/128", "::/128"))
_LINK_LOCAL = tuple(ipaddress.ip_network(n) for n in ("169.254.0.0/16", "224.0.0.0/24", "fe80::/10"))
_PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))


def _category(address: IPAddress) -> str:
    for name, networks in (("loopback", _LOOPBACK), ("link_local", _LINK_LOCAL), ("private", _PRIVATE)):
        if any(address.version == net.version and address in net for net in networks):
            return name
    return "global" if address.is_global and not address.is_multicast else "reserved"


_ASCII_HOST = re.compile(r"[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]")


def _host_of(url: str) -> str:
    """The host part of ``url`` as written (brackets kept); InvalidSourceURL when it cannot be parsed."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (validates the port)
    except ValueError as exc:
        raise InvalidSourceURL(f"malformed source URL {url!r}: {exc}") from None
    netloc = parts.netloc.rpartition("@")[2]
    if netloc.startswith("["):
        return netloc[: netloc.find("]") + 1] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _glob(pattern: str, *, within: str) -> re.Pattern[str]:
    """A regex for ``pattern`` where ``*`` matches any run of characters not in ``within``."""
    return re.compile("".join(f"[^{re.escape(within)}]*" if part == "*" else re.escape(part)
                              for part in re.split(r"(\*)", pattern)))


@dataclass(frozen=True)
class _SourcePattern:
    """One ALLOWED_SOURCES entry, matched on the parsed URL: scheme, then host[:port] as a whole, then a
    path prefix. So ``http://example.com`` never lets ``http://example.com@evil.com`` or
    ``http://example.com.evil.com`` through, with or without a trailing slash."""

    scheme: str
    authority: re.Pattern[str]
    path: re.Pattern[str] | None

    @classmethod
    def parse(cls, pattern: str) -> _SourcePattern:
        scheme, sep, rest = pattern.partition("://")
        if not sep:
            raise ValueError(f"{pattern!r}: expected scheme://host/path")
        authority, slash, path = rest.partition("/")
        return cls(scheme.lower(), _glob(authority.lower(), within="/?#@"),
                   _glob("/" + path, within="/?#") if slash else None)

    def matches(self, url: str) -> bool:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            return False
        if parts.scheme.lower() != self.scheme or parts.username is not None or parts.password is not None:
            return False
        host = (parts.hostname or "") + (f":{port}" if port is not None else "")
        if parts.hostname and ":" in parts.hostname:
            host = f"[{parts.hostname}]" + (f":{port}" if port is not None else "")
        if not self.authority.fullmatch(host):
            return False
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return self.path is None or self.path.match(target) is not None


@dataclass(frozen=True)
class SourcePolicy:
    """Allowed URL prefixes and the address policy for outgoing fetches."""

    allowed_sources: tuple[str, ...] = ()
    allow_loopback: bool = False
    allow_link_local: bool = False
    allow_private: bool = False
    allowed_networks: tuple[AllowedNetwork, ...] = ()
    _patterns: tuple[_SourcePattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_patterns", tuple(_SourcePattern.parse(p) for p in self.allowed_sources))

    def check_url(self, url: str) -> None:
        """Raise InvalidSourceURL unless ``url`` is well formed, its host plain ASCII, and it matches
        ALLOWED_SOURCES (when set)."""
        host = _host_of(url)
        if host and not _ASCII_HOST.fullmatch(host):
            # HTTP clients map Unicode digits and dots (①, ０, 。) and %-escapes onto ASCII: a host that is
            # not already plain ASCII could name an address no check has seen
            raise InvalidSourceURL(f"host {host!r} is not plain ASCII (use punycode for IDN)")
        if self._patterns and not any(p.matches(url) for p in self._patterns):
            raise InvalidSourceURL(f"source {url!r} is not in ALLOWED_SOURCES")

    def address_allowed(self, address: IPAddress, port: int) -> bool:
        """Whether the policy lets us connect to ``address:port``."""
        if any(net.matches(address, port) for net in self.allowed_networks):
            return True
        category = _category(address)
        inner = embedded_ipv4(address)
        if inner is not None and category in ("global", "reserved"):
            return self.address_allowed(inner, port)  # the embedded IPv4 is where packets go
        allowed = (category == "global"
                   or (category == "loopback" and self.allow_loopback)
                   or (category == "link_local" and self.allow_link_local)
                   or (category == "private" and self.allow_private))
        # an address inside a local range that also embeds an IPv4 (ISATAP) must pass both checks
        return allowed and (inner is None or self.address_allowed(inner, port))

    def check_address(self, host: str, port: int) -> None:
        """Raise AddressBlocked if ``host`` (an IP address) is not allowed on ``port``."""
        try:
            address = ipaddress.ip_address(host.strip("[]").split("%")[0])
        except ValueError:
            raise AddressBlocked(f"not an IP address: {host!r}") from None
        if not self.address_allowed(address, port):
            raise AddressBlocked(f"address {address} port {port} is not allowed")

    def check_literal(self, url: str, host: str | None = None, port: int | None = None) -> None:
        """If the host (``url``'s, or ``host`` as the HTTP client parsed it) is an IP literal, check it
        now: HTTP clients skip the resolver for those."""
        try:
            parts = urlsplit(url)
            host = host if host is not None else parts.hostname or ""
            port = port or parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise InvalidSourceURL(f"malformed source URL {url!r}: {exc}") from None
        try:
            ipaddress.ip_address(host.strip("[]").split("%")[0])
        except ValueError:
            return
        try:
            self.check_address(host, port)
        except AddressBlocked as exc:
            raise InvalidSourceURL(str(exc)) from None
