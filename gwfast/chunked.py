"""Validate chunked request framing while the raw bytes are relayed (RFC 9112 §7.1).

The gateway forwards a chunked body as it arrives, framing included, so it never re-encodes;
but it must know where the body ends and refuse malformed framing (a request-smuggling
vector) with 400 before the bytes that break it reach the endpoint. The reader is a native
twin (`gwfast._native.chunks`); this module keeps the name the proxy imports.
"""

from gwfast._native.chunks import ChunkError, TrailersTooLarge
from gwfast._native.chunks import ChunkReader as ChunkedReader

__all__ = ["ChunkError", "ChunkedReader", "TrailersTooLarge"]
