"""Types of the chunked framing reader (both twins share this surface)."""

from typing import Final

from .chunks_py import ChunkError as ChunkError
from .chunks_py import TrailersTooLarge as TrailersTooLarge

__all__ = [
    "COMPILED",
    "MAX_BODY_CAP",
    "MAX_LINE",
    "ChunkError",
    "ChunkReader",
    "ChunkReaderC",
    "ChunkReaderPy",
    "TrailersTooLarge",
]

MAX_BODY_CAP: Final[int]
MAX_LINE: Final[int]
NO_EXTENSIONS: Final[bool]
COMPILED: Final[bool]

class ChunkReader:
    """Feed raw bytes; learn how many belong to the body and when it is complete."""

    @property
    def total(self) -> int:
        """Decoded body bytes so far."""
    @property
    def max_body(self) -> int:
        """The body limit, capped at MAX_BODY_CAP."""
    @property
    def max_trailer_bytes(self) -> int: ...
    @property
    def max_trailers(self) -> int: ...
    @property
    def done(self) -> bool:
        """The last chunk and the trailer section have been read."""
    def __init__(
        self, max_body: int, *, max_trailer_bytes: int = 16384, max_trailers: int = 100
    ) -> None: ...
    def feed(self, buf: bytes | bytearray, pos: int, end: int) -> int:
        """Consume buf[pos:end]; return the offset where the body ended (or `end`).

        Raises ChunkError, TrailersTooLarge, or OverflowError(total) past `max_body`.
        """

ChunkReaderPy: type[ChunkReader]
ChunkReaderC: type[ChunkReader] | None
