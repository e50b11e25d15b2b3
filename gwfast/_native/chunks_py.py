"""Chunked framing reader (RFC 9112 §7.1), pure-Python twin of `_chunks_c.pyx`.

Why it exists: the gateway forwards a chunked body as it arrives, framing included, so it
never re-encodes; but it must know where the body ends (to reuse the connection, or to find
the next pipelined request) and refuse malformed framing, a smuggling vector, before the
bytes that break it are passed on. Requests (answered 400/413/431) and endpoint responses
(SSE streams are chunked) go through the same reader.

This twin is the reference (it replaced the first pure `gwfast.chunked` reader); the
compiled twin must behave exactly alike on every sequence of `feed` calls: same return
values, `done`, `total`, and the same exception type and message at the same call.
ChunkError, TrailersTooLarge and the messages live here and are imported by the compiled
twin, so there is one copy of each.
"""

from __future__ import annotations

__all__ = ["MAX_BODY_CAP", "MAX_LINE", "ChunkError", "ChunkReader", "TrailersTooLarge"]

_HEX = frozenset(b"0123456789abcdefABCDEF")
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ): tokens and
# quoted strings; refuse CTLs, which is what matters for smuggling
_EXT_OK = frozenset(range(0x20, 0x7F)) | {0x09} | frozenset(range(0x80, 0x100))
MAX_LINE = 4096  # a chunk-size, chunk-data CRLF or trailer line, CRLF included
# RFC 9110 §6.5.1: framing and routing fields cannot be trailers; a recipient that merged
# one into the head would re-frame the stream or re-route the message
NOT_TRAILERS = frozenset(
    (
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"mcp-session-id",
        b"authorization",
        b"content-type",
        b"keep-alive",
    )
)
MAX_SIZE_DIGITS = 15  # 2**60: far above any body limit, far below overflow
# max_body is capped so that total + one chunk size always fits 64 bits (compiled twin)
MAX_BODY_CAP = 2**62

SIZE, DATA, DATA_CRLF, TRAILER, DONE = range(5)

# ---------------------------------------------------------------- messages (shared)
E_RANGE = "feed needs 0 <= pos <= end <= len(buf)"
E_LINE_LONG = "a chunk-size or trailer line is longer than 4096 bytes"
E_CRLF = "chunk framing lines must end with CRLF (bare LF or CR found)"
E_DATA_LONG = "chunk data is longer than its declared size"
E_SIZE = "invalid chunk size {!r}: expected hex digits"
E_EXT = "control characters in a chunk extension"
E_TRAILER_BYTES = "the trailer section is over {} bytes (limits.max_header_bytes)"
E_TRAILER_COUNT = "more than {} trailer fields (limits.max_headers)"
E_TRAILER = "malformed trailer field after the last chunk"
E_TRAILER_NAME = "a framing or routing field was sent as a trailer"


class ChunkError(ValueError):
    """Malformed chunked framing (a request is answered 400, a response 502)."""


class TrailersTooLarge(ChunkError):
    """The trailer section is over the head limits (answered with 431)."""


class ChunkReader:
    """Feed raw bytes; learn how many belong to the body and when it is complete.

    `feed` raises ChunkError (or its subclass TrailersTooLarge) for malformed framing and
    OverflowError(total) when the decoded body grows past `max_body`; the reader is not
    usable after an error.
    """

    __slots__ = (
        "_state",
        "_remaining",
        "_line",
        "total",
        "max_body",
        "max_trailer_bytes",
        "max_trailers",
        "_trailer_bytes",
        "_trailers",
    )

    def __init__(
        self, max_body: int, *, max_trailer_bytes: int = 16384, max_trailers: int = 100
    ) -> None:
        self._state = SIZE
        self._remaining = 0
        self._line = bytearray()
        self.total = 0  # decoded body bytes so far
        self.max_body = min(max_body, MAX_BODY_CAP)
        # trailers are a second header section: the head's limits bound them too
        self.max_trailer_bytes = max_trailer_bytes
        self.max_trailers = max_trailers
        self._trailer_bytes = 0
        self._trailers = 0

    @property
    def done(self) -> bool:
        return self._state == DONE

    def _take_line(self, buf: bytes | bytearray, pos: int, end: int) -> tuple[bytes | None, int]:
        nl = buf.find(b"\n", pos, end)
        if nl < 0:
            self._line += buf[pos:end]
            if len(self._line) > MAX_LINE:
                raise ChunkError(E_LINE_LONG)
            return None, end
        self._line += buf[pos : nl + 1]
        line = bytes(self._line)
        self._line.clear()
        if len(line) > MAX_LINE:
            raise ChunkError(E_LINE_LONG)
        if len(line) < 2 or line[-2] != 0x0D or b"\r" in line[:-2]:
            raise ChunkError(E_CRLF)
        return line[:-2], nl + 1

    def feed(self, buf: bytes | bytearray, pos: int, end: int) -> int:
        """Consume buf[pos:end]; return the offset where the body ended (or `end`)."""
        if not 0 <= pos <= end <= len(buf):
            raise ValueError(E_RANGE)
        while pos < end and self._state != DONE:
            st = self._state
            if st == DATA:
                n = min(self._remaining, end - pos)
                pos += n
                self._remaining -= n
                if self._remaining == 0:
                    self._state = DATA_CRLF
            elif st == DATA_CRLF:
                line, pos = self._take_line(buf, pos, end)
                if line is None:
                    continue
                if line:
                    raise ChunkError(E_DATA_LONG)
                self._state = SIZE
            elif st == SIZE:
                line, pos = self._take_line(buf, pos, end)
                if line is None:
                    continue
                size_part, _, ext = line.partition(b";")
                size_part = size_part.rstrip(b" \t")
                if (
                    not size_part
                    or len(size_part) > MAX_SIZE_DIGITS
                    or not _HEX.issuperset(size_part)
                ):
                    raise ChunkError(E_SIZE.format(size_part[:20]))
                if ext and not _EXT_OK.issuperset(ext):
                    raise ChunkError(E_EXT)
                size = int(size_part, 16)
                self.total += size
                if self.total > self.max_body:
                    raise OverflowError(self.total)
                if size == 0:
                    self._state = TRAILER
                else:
                    self._remaining = size
                    self._state = DATA
            else:  # TRAILER: header lines until an empty one
                before = pos
                line, pos = self._take_line(buf, pos, end)
                self._trailer_bytes += pos - before
                if self._trailer_bytes > self.max_trailer_bytes:
                    raise TrailersTooLarge(E_TRAILER_BYTES.format(self.max_trailer_bytes))
                if line is None:
                    continue
                if line:
                    self._trailers += 1
                    if self._trailers > self.max_trailers:
                        raise TrailersTooLarge(E_TRAILER_COUNT.format(self.max_trailers))
                if not line:
                    self._state = DONE
                elif (
                    b":" not in line
                    or line[:1] in (b" ", b"\t")
                    or any(c < 0x20 and c != 0x09 for c in line)
                ):
                    raise ChunkError(E_TRAILER)
                elif line.split(b":", 1)[0].strip().lower() in NOT_TRAILERS:
                    raise ChunkError(E_TRAILER_NAME)
        return pos
