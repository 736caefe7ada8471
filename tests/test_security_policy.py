"""The SSRF address policy (with IPv4 embedded in IPv6 unwrapped), allowed networks and source prefixes."""

from __future__ import annotations

import ipaddress

import pytest

from imgorigin.errors import InvalidSourceURL
from imgorigin.security import (
    AddressBlocked,
    AllowedNetwork,
    SourcePolicy,
    embedded_ipv4,
    parse_allowed_networks,
)

ip = ipaddress.ip_address

# address -> the switch that allows it ("" = none of them; only ALLOWED_SOURCE_NETWORKS can)
DENIED: list[tuple[str, str]] = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("0.0.0.0", "loopback"),
    ("::1", "loopback"),
    ("::", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::127.0.0.1", "loopback"),
    ("64:ff9b::7f00:1", "loopback"),
    ("64:ff9b:1::7f00:1", "loopback"),
    ("2002:7f00:1::", "loopback"),
    ("2002:7f00:1:1234::5", "loopback"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1 (obfuscated)
    ("2a00:1450:4001::5efe:7f00:1", "loopback"),  # ISATAP, 127.0.0.1
    ("2a00:1450:4001::200:5efe:7f00:1", "loopback"),  # ISATAP, universal/local bit set
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "private"),
    ("100.127.255.255", "private"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("::ffff:10.1.2.3", "private"),
    ("::ffff:192.168.0.1", "private"),
    ("64:ff9b::a00:1", "private"),
    ("2002:c0a8:101::1", "private"),
    ("2a00:1450:4001::5efe:a00:1", "private"),
    ("169.254.169.254", "link_local"),
    ("::ffff:169.254.169.254", "link_local"),
    ("64:ff9b::a9fe:a9fe", "link_local"),
    ("fe80::1", "link_local"),
    ("224.0.0.1", "link_local"),
    ("fe80::5efe:808:808", "link_local"),  # link-local ISATAP address: the outer address is link-local
    ("fd00::5efe:808:808", "private"),  # ULA ISATAP address: the outer address is private
    ("240.0.0.1", ""),
    ("255.255.255.255", ""),
    ("192.0.2.1", ""),
    ("198.51.100.7", ""),
    ("203.0.113.9", ""),
    ("198.18.0.1", ""),
    ("224.1.2.3", ""),
    ("2001:db8::1", ""),
    ("ff02::1", ""),
    ("::ffff:192.0.2.1", ""),
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:82b::200e",
           "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2a00:1450:4001::5efe:808:808",
           "172.32.0.1", "100.128.0.1", "11.0.0.1"]


@pytest.mark.parametrize(("address", "switch"), DENIED)
def test_denied_by_default(address: str, switch: str) -> None:
    policy = SourcePolicy()
    assert policy.address_allowed(ip(address), 80) is False
    with pytest.raises(AddressBlocked):
        policy.check_address(address, 80)
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(InvalidSourceURL):
        policy.check_literal(f"http://{host}/a.png")


@pytest.mark.parametrize(("address", "switch"), DENIED)
def test_each_switch_allows_only_its_category(address: str, switch: str) -> None:
    switches = {"loopback": SourcePolicy(allow_loopback=True),
                "link_local": SourcePolicy(allow_link_local=True),
                "private": SourcePolicy(allow_private=True)}
    for name, policy in switches.items():
        assert policy.address_allowed(ip(address), 443) is (name == switch), name
    everything = SourcePolicy(allow_loopback=True, allow_link_local=True, allow_private=True)
    assert everything.address_allowed(ip(address), 443) is (switch != "")


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_allowed(address: str) -> None:
    policy = SourcePolicy()
    assert policy.address_allowed(ip(address), 80)
    policy.check_address(address, 80)
    host = f"[{address}]" if ":" in address else address
    policy.check_literal(f"https://{host}/a.png")


@pytest.mark.parametrize(("address", "inner"), [
    ("::ffff:127.0.0.1", "127.0.0.1"),
    ("::127.0.0.1", "127.0.0.1"),
    ("::10.0.0.1", "10.0.0.1"),
    ("64:ff9b::7f00:1", "127.0.0.1"),
    ("64:ff9b:1::a00:1", "10.0.0.1"),
    ("2002:7f00:1::", "127.0.0.1"),
    ("2002:c0a8:101:5::1", "192.168.1.1"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fefe", "10.0.1.1"),
    ("2a00:1450::5efe:7f00:1", "127.0.0.1"),
    ("2a00:1450::200:5efe:a9fe:a9fe", "169.254.169.254"),
    ("::1", None),
    ("::", None),
    ("2606:4700:4700::1111", None),
    ("fe80::1", None),
    ("127.0.0.1", None),
])
def test_embedded_ipv4(address: str, inner: str | None) -> None:
    assert embedded_ipv4(ip(address)) == (ip(inner) if inner else None)


def test_check_address_syntax() -> None:
    policy = SourcePolicy(allow_loopback=True, allow_link_local=True)
    policy.check_address("[::1]", 80)
    policy.check_address("fe80::1%eth0", 80)
    for bad in ("localhost", "example.com", "", "2130706433", "0x7f.1"):
        with pytest.raises(AddressBlocked):
            SourcePolicy().check_address(bad, 80)


def test_check_literal_ignores_host_names_and_uses_ports() -> None:
    policy = SourcePolicy(allowed_networks=(AllowedNetwork(ipaddress.ip_network("127.0.0.1/32"), 8443),))
    policy.check_literal("http://example.com/a.png")
    policy.check_literal("https://127.0.0.1:8443/a.png")
    with pytest.raises(InvalidSourceURL):
        policy.check_literal("https://127.0.0.1/a.png")  # port 443
    with pytest.raises(InvalidSourceURL):
        policy.check_literal("http://127.0.0.1:8080/a.png")


# --- allowed networks --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("item", "network", "port"), [
    ("10.1.2.0/24", "10.1.2.0/24", None),
    ("10.1.2.3/24", "10.1.2.0/24", None),
    ("127.0.0.1", "127.0.0.1/32", None),
    ("127.0.0.1:18090", "127.0.0.1/32", 18090),
    ("10.0.0.0/8:9000", "10.0.0.0/8", 9000),
    ("[::1]:9000", "::1/128", 9000),
    ("[::1]", "::1/128", None),
    ("[fd00::/8]", "fd00::/8", None),
    ("[fd00::/8]:443", "fd00::/8", 443),
    ("fd00::/8", "fd00::/8", None),
    ("::1", "::1/128", None),
    (" 10.0.0.1 ", "10.0.0.1/32", None),
])
def test_parse_allowed_networks(item: str, network: str, port: int | None) -> None:
    assert parse_allowed_networks([item]) == (AllowedNetwork(ipaddress.ip_network(network), port),)


@pytest.mark.parametrize("item", ["abc", "example.com", "10.0.0.0/33", "300.1.1.1", "127.0.0.1:0",
                                  "127.0.0.1:70000", "[::1]:99999", "[::1", "1.2.3.4:", "[::1]:", "",
                                  "[example]:80", "::1/129", "1.2.3.4:80:90"])
def test_parse_allowed_networks_errors(item: str) -> None:
    with pytest.raises(ValueError, match=r"expected|not an address|port") as info:
        parse_allowed_networks(["10.0.0.1", item])
    assert repr(item) in str(info.value)


def test_allowed_networks_override_the_policy() -> None:
    policy = SourcePolicy(allowed_networks=parse_allowed_networks(
        ["127.0.0.1:18090", "10.1.2.0/24", "[::1]:9000", "[fd00::/8]", "192.0.2.0/24"]))
    assert policy.address_allowed(ip("127.0.0.1"), 18090)
    assert not policy.address_allowed(ip("127.0.0.1"), 18091)
    assert not policy.address_allowed(ip("127.0.0.2"), 18090)
    assert policy.address_allowed(ip("::ffff:127.0.0.1"), 18090)
    assert policy.address_allowed(ip("10.1.2.200"), 1)
    assert not policy.address_allowed(ip("10.1.3.1"), 1)
    assert policy.address_allowed(ip("::1"), 9000)
    assert not policy.address_allowed(ip("::1"), 9001)
    assert policy.address_allowed(ip("fd00::1"), 5)
    assert not policy.address_allowed(ip("fc00::1"), 5)
    assert policy.address_allowed(ip("192.0.2.55"), 80)
    policy.check_address("[::1]", 9000)
    with pytest.raises(AddressBlocked):
        policy.check_address("[::1]", 80)


# --- ALLOWED_SOURCES ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("patterns", "url", "allowed"), [
    ((), "http://anything/at/all", True),
    (("http://example.com/",), "http://example.com/a.png", True),
    (("http://example.com/",), "http://example.com.evil.com/a.png", False),
    (("http://example.com/",), "https://example.com/a.png", False),
    (("http://example.com/",), "http://example.com@evil.com/a.png", False),
    (("http://example.com/",), "xhttp://example.com/a.png", False),
    (("https://*.example.com/",), "https://img.example.com/a.png", True),
    (("https://*.example.com/",), "https://a.b.example.com/a.png", True),
    (("https://*.example.com/",), "https://example.com/a.png", False),
    (("https://*.example.com/",), "https://evil.com/.example.com/a.png", False),
    (("https://*.example.com/",), "https://evil.org/x.example.com/", False),
    (("s3://bucket/*/public/",), "s3://bucket/2024/public/a.png", True),
    (("s3://bucket/*/public/",), "s3://bucket/2024/x/public/a.png", False),
    (("local:///", "http://a.example/"), "local:///cat.png", True),
    (("local:///", "http://a.example/"), "http://a.example/cat.png", True),
    (("local:///", "http://a.example/"), "http://b.example/cat.png", False),
    (("http://x.example/a+b(c)/",), "http://x.example/a+b(c)/d.png", True),
    (("http://x.example/a+b(c)/",), "http://x.example/aab(c)/d.png", False),
    (("http://x.example/a.b/",), "http://x.example/aXb/d.png", False),
])
def test_allowed_sources(patterns: tuple[str, ...], url: str, allowed: bool) -> None:
    policy = SourcePolicy(allowed_sources=patterns)
    if allowed:
        policy.check_url(url)
    else:
        with pytest.raises(InvalidSourceURL, match="ALLOWED_SOURCES"):
            policy.check_url(url)


def test_allowed_sources_match_the_parsed_url_not_a_string_prefix() -> None:
    # imgproxy matches a string prefix, so "http://example.com" also lets userinfo and longer hosts
    # through; we match scheme, host[:port] and path prefix of the parsed URL instead
    for pattern in ("http://example.com", "http://example.com/"):
        policy = SourcePolicy(allowed_sources=(pattern,))
        policy.check_url("http://example.com/a.png")
        for hostile in ("http://example.com@evil.com/a.png", "http://example.com.evil.com/a.png",
                        "http://evil.com/http://example.com/", "http://user@example.com/a.png",
                        "https://example.com/a.png", "http://example.com:8080/a.png"):
            with pytest.raises(InvalidSourceURL):
                policy.check_url(hostile)
    wildcard = SourcePolicy(allowed_sources=("http://*.mycdn.dev/images/",))
    wildcard.check_url("http://a-1.b-2.mycdn.dev/images/x.png")
    for hostile in ("http://other.dev/.mycdn.dev/images/x.png", "http://evil.com?.mycdn.dev/images/x",
                    "http://a.mycdn.dev/private/x.png", "http://x@a.mycdn.dev/images/x.png"):
        with pytest.raises(InvalidSourceURL):
            wildcard.check_url(hostile)
