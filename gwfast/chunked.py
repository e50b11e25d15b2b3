"""Validate chunked request framing while the raw bytes are relayed (RFC 9112 §7.1).

The gateway forwards a chunked body as it arrives, framing included, so it never re-encodes;
but it must know where the body ends and refuse malformed framing (a request-smuggling
vector) with 400 before the bytes that break it reach the endpoint. Chunked request bodies
are rare for MCP (clients send Content-Length), so this is plain Python.
"""

from __future__ import annotations

_HEX = frozenset(b"0123456789abcdefABCDEF")
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ): tokens and
# quoted strings; refuse CTLs, which is what matters for smuggling
_EXT_OK = frozenset(range(0x20, 0x7F)) | {0x09} | frozenset(range(0x80, 0x100))
MAX_LINE = 4096
_NOT_TRAILERS = frozenset((b"content-length", b"transfer-encoding", b"host", b"connection",
                           b"te", b"trailer", b"upgrade", b"mcp-session-id", b"authorization",
                           b"content-type", b"keep-alive"))
MAX_SIZE_DIGITS = 15  # 2**60: far above any body limit, far below overflow

SIZE, DATA, DATA_CRLF, TRAILER, DONE = range(5)


class ChunkError(ValueError):
    pass


class TrailersTooLarge(ChunkError):
    """The trailer section is over the head limits (answered with 431)."""


class ChunkedReader:
    """Feed raw bytes; learn how many belong to the body and when it is complete."""

    __slots__ = ("state", "remaining", "line", "total", "max_body", "max_trailer_bytes",
                 "max_trailers", "trailer_bytes", "trailers")

    def __init__(self, max_body: int, *, max_trailer_bytes: int = 16384,
                 max_trailers: int = 100) -> None:
        self.state = SIZE
        self.remaining = 0
        self.line = bytearray()
        self.total = 0  # decoded body bytes so far
        self.max_body = max_body
        # trailers are a second header section: the head's limits bound them too
        self.max_trailer_bytes = max_trailer_bytes
        self.max_trailers = max_trailers
        self.trailer_bytes = 0
        self.trailers = 0

    @property
    def done(self) -> bool:
        return self.state == DONE

    def _take_line(self, buf, pos: int, end: int) -> tuple[bytes | None, int]:
        nl = buf.find(b"\n", pos, end)
        if nl < 0:
            self.line += buf[pos:end]
            if len(self.line) > MAX_LINE:
                raise ChunkError("a chunk-size or trailer line is longer than 4096 bytes")
            return None, end
        self.line += buf[pos:nl + 1]
        line = bytes(self.line)
        self.line.clear()
        if len(line) > MAX_LINE:
            raise ChunkError("a chunk-size or trailer line is longer than 4096 bytes")
        if len(line) < 2 or line[-2] != 0x0D or b"\r" in line[:-2]:
            raise ChunkError("chunk framing lines must end with CRLF (bare LF or CR found)")
        return line[:-2], nl + 1

    def feed(self, buf, pos: int, end: int) -> int:
        """Consume buf[pos:end]; return the offset where the body ended (or `end`)."""
        while pos < end and self.state != DONE:
            st = self.state
            if st == DATA:
                n = min(self.remaining, end - pos)
                pos += n
                self.remaining -= n
                if self.remaining == 0:
                    self.state = DATA_CRLF
            elif st == DATA_CRLF:
                line, pos = self._take_line(buf, pos, end)
                if line is None:
                    continue
                if line:
                    raise ChunkError("chunk data is longer than its declared size")
                self.state = SIZE
            elif st == SIZE:
                line, pos = self._take_line(buf, pos, end)
                if line is None:
                    continue
                size_part, _, ext = line.partition(b";")
                size_part = size_part.rstrip(b" \t")
                if not size_part or len(size_part) > MAX_SIZE_DIGITS or not _HEX.issuperset(
                        size_part):
                    raise ChunkError(f"invalid chunk size {size_part[:20]!r}: expected hex digits")
                if ext and not _EXT_OK.issuperset(ext):
                    raise ChunkError("control characters in a chunk extension")
                size = int(size_part, 16)
                self.total += size
                if self.total > self.max_body:
                    raise OverflowError(self.total)
                if size == 0:
                    self.state = TRAILER
                else:
                    self.remaining = size
                    self.state = DATA
            else:  # TRAILER: header lines until an empty one
                before = pos
                line, pos = self._take_line(buf, pos, end)
                self.trailer_bytes += pos - before
                if self.trailer_bytes > self.max_trailer_bytes:
                    raise TrailersTooLarge(
                        f"the trailer section is over {self.max_trailer_bytes} bytes "
                        "(limits.max_header_bytes)")
                if line is None:
                    continue
                if line:
                    self.trailers += 1
                    if self.trailers > self.max_trailers:
                        raise TrailersTooLarge(
                            f"more than {self.max_trailers} trailer fields (limits.max_headers)")
                if not line:
                    self.state = DONE
                elif b":" not in line or line[:1] in (b" ", b"\t") or any(
                        c < 0x20 and c != 0x09 for c in line):
                    raise ChunkError("malformed trailer field after the last chunk")
                elif line.split(b":", 1)[0].strip().lower() in _NOT_TRAILERS:
                    # RFC 9110 §6.5.1: framing and routing fields cannot be trailers; a
                    # backend that merged one into the head would re-frame the stream
                    raise ChunkError("a framing or routing field was sent as a trailer")
        return pos
