"""Slow paths over raw header bytes, shared by the request and the response relay.

The native scanners give the hot path its offsets; these helpers serve the rare cases the
scanners only flag: a field the scanners do not track, and fields named by `Connection`.
"""

from __future__ import annotations

import re


def header_value(head: bytes, name: bytes) -> bytes | None:
    """The first value of field `name` in a raw head (start line included), OWS trimmed."""
    m = re.search(rb"\r\n" + re.escape(name) + rb"[ \t]*:[ \t]*([^\r]*)", head, re.I)
    return m.group(1).strip() if m else None


def drop_connection_listed(lines: bytes, connection: bytes) -> bytes:
    """RFC 9110 §7.6.1: a proxy also drops the fields that Connection names."""
    names = {t.strip().lower() for t in connection.split(b",") if t.strip()}
    out = []
    for line in lines.split(b"\r\n"):
        if line and line.split(b":", 1)[0].strip().lower() in names:
            continue
        out.append(line)
    return b"\r\n".join(out)
