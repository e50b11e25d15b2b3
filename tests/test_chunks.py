"""The chunked framing reader: both twins, whole, byte at a time and in random pieces.

The request-framing cases (good and bad bodies, limits, trailers) run on both twins, then random bodies in random chunkings fed in random pieces, SSE-shaped streams,
extensions, trailers and every error; a seeded fuzz corpus checks that the twins agree on
every return value and error under the same feeding. Without GWFAST_NO_EXTENSIONS a missing
compiled twin fails these tests; with it, the compiled parameters are skipped.
"""

from __future__ import annotations

import random

import pytest

from gwfast._native import chunks_py
from gwfast._native.chunks import (
    MAX_BODY_CAP,
    MAX_LINE,
    NO_EXTENSIONS,
    ChunkError,
    ChunkReaderC,
    ChunkReaderPy,
    TrailersTooLarge,
)


def compiled_twin() -> type:
    if ChunkReaderC is None:
        pytest.fail("compiled ChunkReader did not load: run `python3 setup.py build_ext --inplace`")
    return ChunkReaderC


@pytest.fixture(params=["py", "c"])
def reader_cls(request: pytest.FixtureRequest) -> type:
    if request.param == "py":
        return ChunkReaderPy
    if NO_EXTENSIONS:
        pytest.skip("GWFAST_NO_EXTENSIONS is set: pure twin only")
    return compiled_twin()


def twins() -> list[type]:
    return [ChunkReaderPy] if NO_EXTENSIONS else [ChunkReaderPy, compiled_twin()]


def encode(parts: list[bytes], ext: bytes = b"", trailers: bytes = b"") -> bytes:
    out = [b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in parts if p]
    return b"".join(out) + b"0" + ext + b"\r\n" + trailers + b"\r\n"


def feed_pieces(reader: object, data: bytes, cuts: list[int]) -> list:
    """Feed data[a:b] for consecutive cut points; the returns, then done/total or the error."""
    trace: list = []
    a = 0
    for b in [*cuts, len(data)]:
        if b <= a:
            continue
        try:
            trace.append(reader.feed(data, a, b))
        except (ValueError, OverflowError) as exc:
            trace.append((type(exc).__name__, str(exc)))
            return trace
        a = b
    trace.append((reader.done, reader.total))
    return trace


def random_cuts(rnd: random.Random, n: int, most: int = 40) -> list[int]:
    cuts, at = [], 0
    while at < n:
        at += rnd.randint(1, most)
        cuts.append(min(at, n))
    return cuts


def error_of(cls: type, data: bytes, **kw: int) -> tuple[type, str]:
    with pytest.raises((ChunkError, OverflowError)) as err:
        cls(kw.pop("max_body", 10**9), **kw).feed(data, 0, len(data))
    return type(err.value), str(err.value)


# --------------------------------------------------------------------------- test_chunked.py

GOOD = [
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n",
    b"0\r\nTrailer-Field: x\r\n\r\n",
]
BAD = [
    b"x\r\n",
    b"5\r\nhelloX\r\n",
    b"5\nhello\r\n",
    b"5\r\nhello\n0\r\n\r\n",
    b"1" * 20 + b"\r\n",
    b"-5\r\nhello\r\n",
    b"5;\x00\r\nhello\r\n",
    b"\r\n",
    b"0\r\nbad trailer\r\n\r\n",
    b"5\r\r\nhello\r\n",
    b"0\r\nContent-Length: 5\r\n\r\n",
    b"0\r\ntransfer-encoding: chunked\r\n\r\n",
]


@pytest.mark.parametrize("body", GOOD)
def test_good_whole_and_bytewise(reader_cls: type, body: bytes) -> None:
    r = reader_cls(1000)
    assert r.feed(body + b"NEXT", 0, len(body) + 4) == len(body) and r.done
    r = reader_cls(1000)
    for i in range(len(body)):
        assert not r.done
        assert r.feed(body, i, i + 1) == i + 1
    assert r.done
    assert r.feed(body + b"NEXT", len(body), len(body) + 4) == len(body)  # done: takes nothing


@pytest.mark.parametrize("body", BAD)
def test_bad_framing_is_refused(reader_cls: type, body: bytes) -> None:
    with pytest.raises(ChunkError):
        reader_cls(10**9).feed(body, 0, len(body))
    r = reader_cls(10**9)  # byte at a time: the same error
    with pytest.raises(ChunkError) as err:
        for i in range(len(body)):
            r.feed(body, i, i + 1)
    assert str(err.value) == error_of(reader_cls, body)[1]


def test_body_limit(reader_cls: type) -> None:
    with pytest.raises(OverflowError) as err:
        reader_cls(4).feed(b"5\r\nhello\r\n", 0, 10)
    assert err.value.args == (5,)
    r = reader_cls(5)
    body = encode([b"hel", b"lo"])
    assert r.feed(body, 0, len(body)) == len(body) and r.done and r.total == 5
    r = reader_cls(5)
    with pytest.raises(OverflowError) as err:
        r.feed(encode([b"hel", b"lo!"]), 0, len(encode([b"hel", b"lo!"])))
    assert err.value.args == (6,) and r.total == 6
    # refused when the size line arrives, before any of its data
    r = reader_cls(100)
    with pytest.raises(OverflowError):
        r.feed(b"fff\r\n", 0, 5)


def test_trailer_section_is_bounded(reader_cls: type) -> None:
    many = b"0\r\n" + b"".join(b"X-T%d: v\r\n" % i for i in range(11)) + b"\r\n"
    with pytest.raises(TrailersTooLarge) as err:
        reader_cls(100, max_trailers=10).feed(many, 0, len(many))
    assert str(err.value) == "more than 10 trailer fields (limits.max_headers)"
    big = b"0\r\nX-T: " + b"v" * 600 + b"\r\n\r\n"
    with pytest.raises(TrailersTooLarge) as err:
        reader_cls(100, max_trailer_bytes=512).feed(big, 0, len(big))
    assert str(err.value) == "the trailer section is over 512 bytes (limits.max_header_bytes)"
    ok = b"0\r\n" + b"".join(b"X-T%d: v\r\n" % i for i in range(10)) + b"\r\n"
    r = reader_cls(100, max_trailers=10)
    assert r.feed(ok, 0, len(ok)) == len(ok) and r.done
    exact = b"0\r\nX: " + b"v" * 7 + b"\r\n\r\n"  # 14 trailer bytes, the empty line included
    r = reader_cls(100, max_trailer_bytes=14)
    assert r.feed(exact, 0, len(exact)) == len(exact) and r.done
    with pytest.raises(TrailersTooLarge):
        reader_cls(100, max_trailer_bytes=13).feed(exact, 0, len(exact))
    assert issubclass(TrailersTooLarge, ChunkError)


# --------------------------------------------------------------------------- every error

ERRORS = {
    "size-not-hex": (b"x\r\n", chunks_py.E_SIZE.format(b"x")),
    "size-empty": (b"\r\n", chunks_py.E_SIZE.format(b"")),
    "size-only-ext": (b";a=b\r\n", chunks_py.E_SIZE.format(b"")),
    "size-16-digits": (b"1" * 16 + b"\r\n", chunks_py.E_SIZE.format(b"1" * 16)),
    "size-30-digits": (b"1" * 30 + b"\r\n", chunks_py.E_SIZE.format(b"1" * 20)),
    "size-leading-space": (b" 5\r\nhello\r\n", chunks_py.E_SIZE.format(b" 5")),
    "size-minus": (b"-5\r\n", chunks_py.E_SIZE.format(b"-5")),
    "size-0x": (b"0x5\r\n", chunks_py.E_SIZE.format(b"0x5")),
    "size-inner-space": (b"5 5\r\n", chunks_py.E_SIZE.format(b"5 5")),
    "size-high-byte": (b"5\xff\r\n", chunks_py.E_SIZE.format(b"5\xff")),
    "size-bare-lf": (b"5\nhello\r\n", chunks_py.E_CRLF),
    "size-cr-cr-lf": (b"5\r\r\nhello\r\n", chunks_py.E_CRLF),
    "size-lone-cr": (b"5\rx\r\n", chunks_py.E_CRLF),
    "size-line-long": (b"5;" + b"a" * 4093 + b"\r\n", chunks_py.E_LINE_LONG),
    "size-line-endless": (b"5;" + b"a" * 5000, chunks_py.E_LINE_LONG),
    "ext-nul": (b"5;\x00\r\nhello\r\n", chunks_py.E_EXT),
    "ext-del": (b"5;a=\x7f\r\nhello\r\n", chunks_py.E_EXT),
    "ext-esc": (b"5;a=\x1b\r\nhello\r\n", chunks_py.E_EXT),
    "data-long": (b"5\r\nhelloX\r\n", chunks_py.E_DATA_LONG),
    "data-bare-lf": (b"5\r\nhello\n0\r\n\r\n", chunks_py.E_CRLF),
    "data-no-crlf-endless": (b"5\r\nhello" + b"x" * 5000, chunks_py.E_LINE_LONG),
    "trailer-no-colon": (b"0\r\nbad trailer\r\n\r\n", chunks_py.E_TRAILER),
    "trailer-fold": (b"0\r\nX: 1\r\n two\r\n\r\n", chunks_py.E_TRAILER),
    "trailer-tab-first": (b"0\r\n\tX: 1\r\n\r\n", chunks_py.E_TRAILER),
    "trailer-ctl": (b"0\r\nX: a\x01b\r\n\r\n", chunks_py.E_TRAILER),
    "trailer-bare-lf": (b"0\r\nX: 1\n\r\n", chunks_py.E_CRLF),
    "trailer-line-long": (b"0\r\nX: " + b"v" * 4100 + b"\r\n\r\n", chunks_py.E_LINE_LONG),
    **{
        f"trailer-{name.decode()}": (
            b"0\r\n" + name.upper() + b" : x\r\n\r\n",
            chunks_py.E_TRAILER_NAME,
        )
        for name in sorted(chunks_py.NOT_TRAILERS)
    },
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_every_error(reader_cls: type, name: str) -> None:
    data, message = ERRORS[name]
    assert error_of(reader_cls, data, max_trailer_bytes=10**6) == (ChunkError, message)
    rnd = random.Random(name)
    for _ in range(3):  # in pieces: the same error
        r = reader_cls(10**9, max_trailer_bytes=10**6)
        trace = feed_pieces(r, data, random_cuts(rnd, len(data), 7))
        assert trace[-1] == ("ChunkError", message)


def test_line_length_limit(reader_cls: type) -> None:
    """A framing line may be MAX_LINE bytes with its CRLF, also when split across reads."""
    for ext_len, ok in ((MAX_LINE - 4, True), (MAX_LINE - 3, False)):
        line = b"5;" + b"e" * ext_len + b"\r\n"
        data = line + b"hello\r\n0\r\n\r\n"
        for cut in (1, len(line) - 1, len(line) // 2):
            r = reader_cls(100)
            if ok:
                assert feed_pieces(r, data, [cut]) == [cut, len(data), (True, 5)]
            else:
                assert feed_pieces(r, data, [cut])[-1] == ("ChunkError", chunks_py.E_LINE_LONG)


def test_extensions(reader_cls: type) -> None:
    for ext in (
        b";name",
        b";name=value",
        b' ; a=b ;c="quoted ; \\" str"',
        b";\tx=\ty",
        b";caf\xc3\xa9=\x80\xff",
        b";",
        b";;;",
    ):
        body = encode([b"hello", b"world!"], ext=ext)
        r = reader_cls(100)
        assert r.feed(body, 0, len(body)) == len(body) and r.done and r.total == 11, ext


def test_size_forms(reader_cls: type) -> None:
    for size_line, n in (
        (b"5", 5),
        (b"05", 5),
        (b"000000000000005", 5),
        (b"a", 10),
        (b"A", 10),
        (b"5 ", 5),
        (b"5\t \t", 5),
        (b"5 \t;x", 5),
    ):
        data = size_line + b"\r\n" + b"d" * n + b"\r\n0\r\n\r\n"
        r = reader_cls(100)
        assert r.feed(data, 0, len(data)) == len(data) and r.total == n, size_line
    r = reader_cls(MAX_BODY_CAP)
    data = b"fffffffffffffff\r\nabc"  # 2**60 - 1: accepted, its data then awaited
    assert r.feed(data, 0, len(data)) == len(data) and r.total == 2**60 - 1 and not r.done


def test_trailers(reader_cls: type) -> None:
    trailers = (
        b"Server-Timing: total;dur=12.5\r\n"
        b"X-Checksum:abc\r\n"
        b"X-Del: a\x7fb\r\n"  # DEL is not refused here (chunked.py's rule, kept)
        b"X-Obs: caf\xc3\xa9\r\n"
        b"X-Weird Name : v\r\n"
        b": empty name\r\n"
    )
    body = encode([b"hello"], trailers=trailers)
    r = reader_cls(100)
    assert r.feed(body + b"HTTP/1.1", 0, len(body) + 8) == len(body) and r.done


def test_max_body_is_capped(reader_cls: type) -> None:
    assert reader_cls(2**80).max_body == MAX_BODY_CAP
    r = reader_cls(7, max_trailer_bytes=9, max_trailers=3)
    assert (r.max_body, r.max_trailer_bytes, r.max_trailers, r.total) == (7, 9, 3, 0)
    r = reader_cls(-1)
    with pytest.raises(OverflowError):
        r.feed(b"0\r\n", 0, 3)


def test_bad_arguments(reader_cls: type) -> None:
    r = reader_cls(100)
    for pos, end in ((-1, 3), (3, 2), (0, 7)):
        with pytest.raises(ValueError):
            r.feed(b"5\r\nabc", pos, end)
    assert r.feed(b"5\r\nabc", 2, 2) == 2


# --------------------------------------------------------------------------- random bodies


def random_body(rnd: random.Random) -> tuple[bytes, int]:
    """A random valid chunked body and its decoded length."""
    parts = [
        rnd.randbytes(rnd.choice((1, 2, 15, 16, 17, 100, 255, 4096, 10000)))
        for _ in range(rnd.randint(0, 12))
    ]
    ext = rnd.choice((b"", b"", b";a=1", b' ;x="y;z"', b";\t"))
    trailers = rnd.choice((b"", b"", b"X-T: 1\r\n", b"A: 1\r\nB:2\r\n"))
    sizes = []
    for p in parts:  # random size spellings: case, zero padding, BWS
        s = b"%x" % len(p)
        s = rnd.choice((s, s.upper(), b"0" * rnd.randint(1, 15 - len(s)) + s, s + b" \t"))
        sizes.append(s)
    body = b"".join(b"%s%s\r\n%s\r\n" % (s, ext, p) for s, p in zip(sizes, parts, strict=True))
    body += b"0" + ext + b"\r\n" + trailers + b"\r\n"
    return body, sum(map(len, parts))


def test_random_bodies_in_random_pieces(reader_cls: type) -> None:
    rnd = random.Random(1125)
    for _ in range(300):
        body, n = random_body(rnd)
        data = body + b"HTTP/1.1 200 OK\r\n"  # whatever follows the body is not taken
        r = reader_cls(10**9)
        assert r.feed(data, 0, len(data)) == len(body) and r.done and r.total == n
        for most in (1, 3, 50, 5000):
            if most < 50 and len(data) > 3000:
                continue  # byte-sized pieces of the small bodies are enough
            r = reader_cls(10**9)
            a = 0
            for b in random_cuts(rnd, len(data), most):
                # a piece is taken whole until the body ends, then up to its end only
                assert r.feed(data, a, b) == (b if b <= len(body) else max(a, len(body)))
                assert r.done == (b >= len(body))
                a = b
            assert r.total == n


def sse_events(n: int, rnd: random.Random | None = None) -> list[bytes]:
    """n SSE events as an MCP server streams them, one chunk each."""
    events = []
    for i in range(n):
        data = b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":%d}}' % i
        if rnd is not None:
            data += b"x" * rnd.randint(0, 300)
        events.append(b"event: message\r\nid: %d\r\ndata: %s\r\n\r\n" % (i, data))
    return events


def test_sse_stream_of_small_chunks(reader_cls: type) -> None:
    rnd = random.Random(7)
    events = sse_events(1000, rnd)
    body = encode(events)
    r = reader_cls(10**9)
    assert r.feed(body, 0, len(body)) == len(body) and r.done
    assert r.total == sum(map(len, events))
    # as the relay sees it: reads of one event or a few, boundaries anywhere
    r = reader_cls(10**9)
    buf = bytearray()
    for cut in random_cuts(rnd, len(body), 700):
        a = len(buf)
        buf += body[a:cut]
        assert r.feed(buf, a, len(buf)) == len(buf)
    assert r.done and r.total == sum(map(len, events))
    # and a stream still open: not done, every byte taken
    r = reader_cls(10**9)
    open_stream = body[:-5]
    assert r.feed(open_stream, 0, len(open_stream)) == len(open_stream) and not r.done


# --------------------------------------------------------------------------- fuzzing

ALPHABET = b'\r\n\r\n \t;:="0123456789abcdefABCDEFxX-\x00\x7f\x80\xff'


def mutate(rnd: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        if not b:
            b.append(ALPHABET[0])
        i = rnd.randrange(len(b))
        op = rnd.random()
        c = ALPHABET[rnd.randrange(len(ALPHABET))]
        if op < 0.4:
            b[i] = c
        elif op < 0.8:
            b.insert(i, c)
        else:
            del b[i]
    return bytes(b)


def test_fuzz_twins_agree() -> None:
    """Mutated valid bodies: both twins give the same trace under the same feeding."""
    rnd = random.Random(20251125)
    seeds = [encode(sse_events(3)), *GOOD, encode([b"a" * 20], ext=b";q=1", trailers=b"X: 1\r\n")]
    kinds = set()
    for _ in range(4000):
        data = mutate(rnd, rnd.choice(seeds))
        kw = {
            "max_body": rnd.choice((10, 10**6)),
            "max_trailer_bytes": rnd.choice((8, 16384)),
            "max_trailers": rnd.choice((1, 100)),
        }
        cuts = random_cuts(rnd, len(data), rnd.choice((1, 5, 1000)))
        traces = [
            feed_pieces(
                cls(
                    kw["max_body"],
                    max_trailer_bytes=kw["max_trailer_bytes"],
                    max_trailers=kw["max_trailers"],
                ),
                data,
                cuts,
            )
            for cls in twins()
        ]
        assert all(t == traces[0] for t in traces), data
        last = traces[0][-1]
        kinds.add(last[0] if isinstance(last[0], str) else ("done", last[0]))
    assert {"ChunkError", "OverflowError", "TrailersTooLarge", ("done", True)} <= kinds, kinds


def test_any_buffer_reads_like_bytes(reader_cls: type) -> None:
    """bytes and bytearray are read directly; the compiled twin also takes any other buffer
    (through the buffer protocol), the pure one is typed for bytes and bytearray only."""
    body = GOOD[0] + b"NEXT"
    views = [] if reader_cls is ChunkReaderPy else [memoryview(body), memoryview(bytearray(body))]
    for buf in (body, bytearray(body), *views):
        r = reader_cls(1000)
        assert r.feed(buf, 0, len(body)) == len(GOOD[0]) and r.done, type(buf)
