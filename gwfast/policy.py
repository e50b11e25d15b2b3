"""Host and Origin checks: DNS-rebinding protection (MCP transports, "Security Warning").

A browser page on an attacker's domain can reach a gateway on loopback or a private address
by rebinding its DNS name; the Host and Origin headers are what give it away. Results are
cached per distinct header value (bounded), so the check costs one dict lookup per request.
"""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
_CACHE_MAX = 1024


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_authority(value: str) -> tuple[str, str] | None:
    """'Host' value → (host, port or ''), lowercased; None when it is not a valid authority."""
    value = value.strip().lower()
    if not value or any(c in value for c in " \t/\\@?#"):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[: end + 1], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:]
    else:
        host, _, port = value.partition(":")
        if ":" in port:
            return None
    if port and (not port.isdigit() or len(port) > 5):
        return None
    if not host:
        return None
    return host, port


class HostPolicy:
    """allowed_hosts: `*`, `name` (default port only), `name:port`, `name:*`."""

    def __init__(self, allowed: list[str] | None, *, loopback: bool) -> None:
        if allowed is None:
            allowed = [f"{n}:*" for n in ("127.0.0.1", "localhost", "[::1]")] if loopback else ["*"]
        self.any = "*" in allowed
        self.exact: set[tuple[str, str]] = set()
        self.any_port: set[str] = set()
        for a in allowed:
            a = a.strip().lower()
            if a == "*":
                continue
            if a.endswith(":*"):
                self.any_port.add(a[:-2])
            else:
                parts = split_authority(a)
                if parts:
                    self.exact.add(parts)
        self._cache: dict[bytes, bool] = {}

    def allows(self, raw: bytes) -> bool | None:
        """True/False, or None when the value is not a valid authority at all (400)."""
        hit = self._cache.get(raw)
        if hit is not None:
            return hit
        try:
            parts = split_authority(raw.decode("ascii"))
        except UnicodeDecodeError:
            parts = None
        if parts is None:
            return None
        ok = self.any or parts in self.exact or parts[0] in self.any_port
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[raw] = ok
        return ok


class OriginPolicy:
    """A present Origin must be same-origin with Host, listed, or loopback (on loopback)."""

    def __init__(self, allowed: list[str], *, loopback: bool) -> None:
        self.exact: set[str] = set()
        self.any_port: set[str] = set()  # "http://name"
        pats = list(allowed)
        if loopback:
            pats += [
                f"{s}://{n}:*"
                for s in ("http", "https")
                for n in ("127.0.0.1", "localhost", "[::1]")
            ]
        for p in pats:
            p = p.strip().lower().rstrip("/")
            if p.endswith(":*"):
                self.any_port.add(p[:-2])
            else:
                self.exact.add(p)
                self.any_port.discard("")
        self._cache: dict[tuple[bytes, bytes], bool] = {}

    def allows(self, origin: bytes, host: bytes) -> bool:
        key = (origin, host)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        ok = self._check(origin, host)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = ok
        return ok

    def _check(self, origin: bytes, host: bytes) -> bool:
        try:
            o = origin.decode("ascii").strip().lower()
        except UnicodeDecodeError:
            return False
        if o in self.exact:
            return True
        scheme, sep, auth = o.partition("://")
        if not sep or scheme not in ("http", "https"):
            return False  # includes the opaque origin "null"
        parts = split_authority(auth)
        if parts is None:
            return False
        if f"{scheme}://{parts[0]}" in self.any_port:
            return True
        h = split_authority(host.decode("latin-1"))
        if h is None:
            return False
        default = "80" if scheme == "http" else "443"
        return parts[0] == h[0] and (parts[1] or default) == (h[1] or default)
