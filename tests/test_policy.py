"""DNS-rebinding protection: Host and Origin allowlists."""

from gwfast.policy import HostPolicy, OriginPolicy


def test_loopback_default_hosts():
    p = HostPolicy(None, loopback=True)
    assert p.allows(b"127.0.0.1:8080") and p.allows(b"localhost") and p.allows(b"[::1]:1")
    assert p.allows(b"evil.example:8080") is False
    assert p.allows(b"a b") is None and p.allows(b"\xff") is None and p.allows(b"") is None


def test_non_loopback_default_allows_any_valid_host():
    p = HostPolicy(None, loopback=False)
    assert p.allows(b"mcp.internal:443") and p.allows(b"x") and p.allows(b"x/y") is None


def test_explicit_hosts():
    p = HostPolicy(["mcp.example.com", "gw:*"], loopback=False)
    assert (
        p.allows(b"MCP.example.com") and p.allows(b"gw:9") and not p.allows(b"mcp.example.com:81")
    )


def test_origins():
    o = OriginPolicy(["https://app.example.com"], loopback=True)
    assert o.allows(b"https://app.example.com", b"gw")
    assert o.allows(b"http://localhost:5173", b"gw")  # loopback origins on loopback
    assert o.allows(b"http://gw.local:8080", b"gw.local:8080")  # same origin
    assert not o.allows(b"https://evil.example", b"gw.local:8080")
    assert not o.allows(b"null", b"gw") and not o.allows(b"\xff", b"gw")
    assert not OriginPolicy([], loopback=False).allows(b"http://localhost:1", b"gw:1")
