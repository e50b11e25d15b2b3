"""Types of the HTTP/1.x response head scanner (both twins share this surface)."""

from typing import Final

from .headscan_py import HeadError as HeadError

__all__ = [
    "COMPILED",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEAD_BYTES",
    "DROPPED_HEADERS",
    "HeadError",
    "ResponseScanner",
    "ResponseScannerC",
    "ResponseScannerPy",
]

DEFAULT_MAX_HEAD_BYTES: Final[int]
DEFAULT_MAX_HEADERS: Final[int]
DROPPED_HEADERS: Final[frozenset[bytes]]
NO_EXTENSIONS: Final[bool]
COMPILED: Final[bool]

class ResponseScanner:
    """Scans one response head at a time; one reused object per upstream connection.

    The status line begins at the `start` passed to `scan`. Offsets are absolute into the
    buffer scanned; a missing field has start == end == -1. Attributes describe the last
    head `scan` completed.
    """

    @property
    def max_head_bytes(self) -> int: ...
    @property
    def max_headers(self) -> int: ...
    # status line (RFC 9112 §4)
    @property
    def status(self) -> int:
        """The status code, 100 to 599 (1xx: an interim response, skip it)."""
    @property
    def http_minor(self) -> int:
        """0 for HTTP/1.0, 1 for HTTP/1.1."""
    @property
    def line_end(self) -> int:
        """Offset just past the status line's CRLF."""
    # header section
    @property
    def n_headers(self) -> int: ...
    @property
    def n_kept(self) -> int:
        """Runs of whole header lines (CRLFs included) to forward: all but DROPPED_HEADERS."""
    @property
    def content_length(self) -> int:
        """-1 when absent."""
    @property
    def chunked(self) -> bool:
        """Transfer-Encoding: chunked (never together with Content-Length)."""
    @property
    def conn_close(self) -> bool: ...
    @property
    def conn_keep_alive(self) -> bool: ...
    @property
    def conn_other(self) -> bool:
        """Connection named some other option."""
    @property
    def session_start(self) -> int:
        """Mcp-Session-Id value span (OWS trimmed)."""
    @property
    def session_end(self) -> int: ...
    def __init__(self, max_head_bytes: int = 65536, max_headers: int = 200) -> None: ...
    def scan(self, buf: bytes | bytearray, start: int, end: int) -> int:
        """0 if buf[start:end] holds no complete head yet, else the offset past CRLFCRLF.

        Raises HeadError (status 502) for a head the relay refuses.
        """
    def reset(self) -> None: ...
    def kept_start(self, i: int) -> int: ...
    def kept_end(self, i: int) -> int: ...
    def span(self, buf: bytes | bytearray, start: int, end: int) -> bytes: ...
    def span_as(self, buf: bytes | bytearray, start: int, end: int, known: bytes | None) -> bytes:
        """`known` itself when buf[start:end] equals it (no allocation), else span()."""
    def kept(self, buf: bytes | bytearray) -> bytes: ...
    def assemble(self, parts: tuple, buf: bytes | bytearray | None, start: int, end: int) -> bytes:
        """b"".join(parts) + buf[start:end] (nothing from buf when it is None); a part may be
        None (the kept lines of the head last scanned from buf) or a tuple of parts."""

ResponseScannerPy: type[ResponseScanner]
ResponseScannerC: type[ResponseScanner] | None
