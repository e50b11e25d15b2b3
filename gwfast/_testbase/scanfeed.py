"""Feeding a scanner twin the ways a connection can: whole, byte at a time, into a growing
bytearray, in random pieces. Shared by the request and response scanner tests, whose twins
have the same `scan`/`kept_start`/`kept_end`/`kept`/`span`/`span_as`/`assemble` shape and
differ in the attributes they set."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence

from gwfast._native.headscan_py import VALUE_TABLE, HeadError


class Feeding:
    """The outcome of a scan as a comparable tuple, for the attributes `attrs`."""

    def __init__(self, attrs: Sequence[str]) -> None:
        self.attrs = tuple(attrs)

    def snapshot(self, s: object, buf: bytes | bytearray) -> dict:
        snap = {name: getattr(s, name) for name in self.attrs}
        snap["kept"] = [(s.kept_start(i), s.kept_end(i)) for i in range(s.n_kept)]
        # the copying accessors the relay uses give exactly the bytes of those offsets
        snap["kept_bytes"] = s.kept(buf)
        assert snap["kept_bytes"] == b"".join(bytes(buf[a:b]) for a, b in snap["kept"])
        for name in self.attrs:
            end_name = name[: -len("start")] + "end"
            if name.endswith("_start") and end_name in snap and snap[name] >= 0:
                a, b = snap[name], snap[end_name]
                assert s.span(buf, a, b) == bytes(buf[a:b]), name
        return snap

    def outcome(self, s: object, buf: bytes | bytearray, start: int, end: int) -> tuple:
        try:
            ret = s.scan(buf, start, end)
        except HeadError as exc:
            return ("error", exc.status, exc.message)
        if ret == 0:
            return ("pending",)
        return ("done", ret, self.snapshot(s, buf))

    def whole(self, cls: type, data: bytes, start: int = 0, **kw: int) -> tuple:
        return self.outcome(cls(**kw), data, start, len(data))

    def bytewise(self, cls: type, data: bytes, start: int = 0, **kw: int) -> tuple:
        """Scan with end growing by one until the scan ends; the outcome and where it ended."""
        s = cls(**kw)
        for end in range(start, len(data) + 1):
            result = self.outcome(s, data, start, end)
            if result[0] != "pending":
                return result, end
        return ("pending",), len(data)

    def growing(self, cls: type, data: bytes, start: int = 0, **kw: int) -> tuple:
        """As a connection does: bytes appended to one bytearray, scanned after each append."""
        s = cls(**kw)
        buf = bytearray(data[:start])
        for i in range(start, len(data)):
            buf.append(data[i])
            result = self.outcome(s, buf, start, len(buf))
            if result[0] != "pending":
                return result
        return ("pending",)

    def chunked_feed(
        self, cls: type, data: bytes, rnd: random.Random, start: int = 0, **kw: int
    ) -> tuple:
        s = cls(**kw)
        end = start
        while True:
            result = self.outcome(s, data, start, end)
            if result[0] != "pending" or end == len(data):
                return result
            end = min(len(data), end + rnd.randint(1, 40))


def check_assemble(s: object, buf: bytes) -> None:
    """`assemble` (how the relay writes a head and the body bytes after it): the parts, one
    level of tuples, then buf[start:end]; nothing from buf when it is None; a None part is
    the kept lines of the head last scanned from buf; the span errors of `span`; TypeError
    for any other part. `buf` is one complete head and a body."""
    mid = len(buf) // 2
    head = (b"POST", b" ", (b"/a", b"", b"?q"), b" HTTP/1.1\r\n")
    assert s.assemble(head, buf, 0, mid) == b"POST /a?q HTTP/1.1\r\n" + buf[:mid]
    assert s.assemble(head, bytearray(buf), mid, len(buf)) == b"POST /a?q HTTP/1.1\r\n" + buf[mid:]
    assert s.assemble(((b"x",), b"y"), None, 5, 1) == b"xy"  # no buffer: no span checked
    assert s.assemble((), buf, 0, len(buf)) == buf
    assert s.assemble(((), b""), buf, mid, mid) == b""
    for start, end in ((-1, 3), (3, 2), (0, len(buf) + 1)):
        _raises(ValueError, s.assemble, (b"x",), buf, start, end)
    for parts in (
        (b"x", bytearray(b"y")),
        (b"x", memoryview(b"y")),
        (b"x", "y"),
        ((b"x", (b"y",)),),  # tuples one level deep only
        ((b"x", bytearray(b"y")),),
        [b"x"],  # parts are a tuple
        None,
    ):
        _raises(TypeError, s.assemble, parts, buf, 0, 1)
    # None parts: the kept lines of the scanned head, straight from the buffer
    end = s.scan(buf, 0, len(buf))
    assert end > 0
    kept = s.kept(buf)
    assert len(kept) > 0
    both = s.assemble((b"<", None, (b"|", None), b">"), bytearray(buf), end, len(buf))
    assert both == b"<" + kept + b"|" + kept + b">" + buf[end:]
    assert s.assemble((None,), buf, end, end) == kept
    _raises(TypeError, s.assemble, (None,), None, 0, 0)
    short = buf[: s.kept_end(s.n_kept - 1) - 1]  # shorter than the kept lines reach
    _raises(ValueError, s.assemble, (None,), short, 0, 0)
    assert s.assemble((b"z",), short, 0, 1) == b"z" + short[:1]  # runs unused: not checked


def check_span_as(s: object, buf: bytes) -> None:
    """`span_as`: the very object `known` when the span equals it, else new bytes equal to
    the span; the span errors of `span`."""
    known = bytes(buf[1:5])
    assert s.span_as(buf, 1, 5, known) is known
    assert s.span_as(bytearray(buf), 1, 5, known) is known
    for start, end, k in ((1, 4, known), (2, 6, known), (1, 5, None), (0, 0, b"x"), (0, 0, None)):
        value = s.span_as(buf, start, end, k)
        assert value == bytes(buf[start:end]) and value is not k
    empty = b""
    assert s.span_as(buf, 3, 3, empty) is empty
    for start, end in ((-1, 3), (3, 2), (0, len(buf) + 1)):
        _raises(ValueError, s.span_as, buf, start, end, known)


# bytes a field value refuses (CTLs but HTAB, DEL) and allows, around the edges of each class
VALUE_PROBES = bytes([0x00, 0x08, 0x09, 0x0B, 0x1F, 0x20, 0x21, 0x7E, 0x7F, 0x80, 0xFF])


def value_probes(make: Callable[[bytes], bytes]) -> Iterator[tuple[bytes, bool]]:
    """Heads `make(value)` whose header value holds one probe byte at each offset of values
    of 1 to 20 bytes (across and inside the compiled twin's 8-byte words), with whether the
    value is allowed (RFC 9110 §5.5)."""
    for n in range(1, 21):
        for pos in range(n):
            for b in VALUE_PROBES:
                value = bytearray(b"v" * n)
                value[pos] = b
                yield make(bytes(value)), bool(VALUE_TABLE[b])


def _raises(exc: type[Exception], fn, *args: object) -> None:
    try:
        fn(*args)
    except exc:
        return
    raise AssertionError(f"{fn.__name__}{args!r} did not raise {exc.__name__}")
