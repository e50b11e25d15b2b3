"""Chunked request framing validation (RFC 9112 §7.1), whole and byte at a time."""

import pytest

from gwfast.chunked import ChunkedReader, ChunkError

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
def test_good_whole_and_bytewise(body):
    r = ChunkedReader(1000)
    assert r.feed(body + b"NEXT", 0, len(body) + 4) == len(body) and r.done
    r = ChunkedReader(1000)
    for i in range(len(body)):
        assert not r.done
        r.feed(body, i, i + 1)
    assert r.done


@pytest.mark.parametrize("body", BAD)
def test_bad_framing_is_refused(body):
    with pytest.raises(ChunkError):
        ChunkedReader(10**9).feed(body, 0, len(body))


def test_body_limit():
    with pytest.raises(OverflowError):
        ChunkedReader(4).feed(b"5\r\nhello\r\n", 0, 10)


def test_trailer_section_is_bounded():
    from gwfast.chunked import TrailersTooLarge

    many = b"0\r\n" + b"".join(b"X-T%d: v\r\n" % i for i in range(11)) + b"\r\n"
    with pytest.raises(TrailersTooLarge):
        ChunkedReader(100, max_trailers=10).feed(many, 0, len(many))
    big = b"0\r\nX-T: " + b"v" * 600 + b"\r\n\r\n"
    with pytest.raises(TrailersTooLarge):
        ChunkedReader(100, max_trailer_bytes=512).feed(big, 0, len(big))
    ok = b"0\r\n" + b"".join(b"X-T%d: v\r\n" % i for i in range(10)) + b"\r\n"
    r = ChunkedReader(100, max_trailers=10)
    assert r.feed(ok, 0, len(ok)) == len(ok) and r.done
