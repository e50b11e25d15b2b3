"""Relay behaviour against a scripted upstream: what is forwarded, and when.

The scripted endpoint controls when each byte leaves it, so these tests can show that SSE
events pass through one by one (no buffering), that a close-delimited body is re-framed,
and exactly which request headers reach the endpoint.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from gwfast._testbase.scripted import ScriptedUpstream

pytestmark = pytest.mark.timeout(60)


def _cfg(url: str, **hc) -> dict:
    return {"endpoints": [url], "health_check": {"path": "/healthz", "interval": "1s", **hc}}


def _request(port: int, head: bytes, body: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head + body)
    return s


def _read_until(s: socket.socket, marker: bytes, limit: float = 10.0) -> bytes:
    data = b""
    deadline = time.monotonic() + limit
    while marker not in data:
        assert time.monotonic() < deadline, f"{marker!r} not received; got {data!r}"
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


POST = (
    b"POST /relay/mcp?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Accept: application/json, text/event-stream\r\nConnection: keep-alive, X-Drop\r\n"
    b"X-Drop: secret\r\nKeep-Alive: timeout=5\r\nX-Custom: kept\r\n"
)


@pytest.fixture
def sse_gate():
    return threading.Event()


def test_sse_events_are_relayed_one_at_a_time(gateway_factory, sse_gate):
    def handler(conn: socket.socket, head: bytes):
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        ev = b"event: message\ndata: one\n\n"
        conn.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
        assert sse_gate.wait(10)  # the second event waits for the client to see the first
        ev = b"event: message\ndata: two\n\n"
        conn.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(ev), ev))

    up = ScriptedUpstream(handler)
    gw = gateway_factory.start({"relay": _cfg(up.url)})
    s = _request(gw.port, POST + b"Content-Length: 2\r\n\r\n", b"{}")
    first = _read_until(s, b"data: one")
    assert b"data: two" not in first
    sse_gate.set()
    rest = _read_until(s, b"0\r\n\r\n")
    assert b"data: two" in rest
    # what reached the endpoint: path rewritten, hop-by-hop and Connection-listed fields
    # removed, X-Forwarded-* added, end-to-end fields kept
    fwd = up.requests[-1]
    assert fwd.startswith(b"POST /mcp?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % up.port)
    low = fwd.lower()
    assert b"x-drop" not in low and b"keep-alive" not in low and b"connection:" not in low
    assert b"x-custom: kept" in low and b"content-length: 2" in low
    assert b"x-forwarded-for: 127.0.0.1" in low and b"x-forwarded-host: 127.0.0.1" in low
    s.close()
    up.close()


def test_close_delimited_body_is_rechunked_and_connection_kept(gateway_factory):
    def handler(conn: socket.socket, head: bytes):
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b'Connection: close\r\n\r\n{"jsonrpc":"2.0","id":1,"result":{}}'
        )
        return False  # close: the body ends here

    up = ScriptedUpstream(handler)
    gw = gateway_factory.start({"relay": _cfg(up.url)})
    s = _request(gw.port, POST + b"Content-Length: 2\r\n\r\n", b"{}")
    data = _read_until(s, b"0\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"connection: close" not in head.lower()
    payload = b'{"jsonrpc":"2.0","id":1,"result":{}}'
    assert body == b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
    # the client connection is still usable
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert b"200 OK" in _read_until(s, b'"ok"}')
    s.close()
    up.close()


def test_expect_100_continue_is_answered_by_the_gateway(gateway_factory):
    def handler(conn: socket.socket, head: bytes):
        body = b'{"ok":true}'
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    up = ScriptedUpstream(handler)
    gw = gateway_factory.start({"relay": _cfg(up.url)})
    s = _request(gw.port, POST + b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert _read_until(s, b"\r\n\r\n").startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(b"{}")
    assert b'{"ok":true}' in _read_until(s, b'{"ok":true}')
    assert b"expect" not in up.requests[-1].lower()
    s.close()
    up.close()


def test_chunked_request_body_is_relayed_with_its_framing(gateway_factory):
    got = []

    def handler(conn: socket.socket, head: bytes):
        # the scripted upstream does not de-chunk: read what follows the head
        data = up.pending
        while not data.endswith(b"0\r\n\r\n"):
            data += conn.recv(65536)
        got.append(data)
        conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")

    up = ScriptedUpstream(handler)
    gw = gateway_factory.start({"relay": _cfg(up.url)})
    s = _request(gw.port, POST + b"Transfer-Encoding: chunked\r\n\r\n")
    for part in (b"2\r\n{}", b"\r\n", b"0\r\n\r\n"):
        s.sendall(part)
        time.sleep(0.05)
    assert b"202 Accepted" in _read_until(s, b"\r\n\r\n")
    assert got == [b"2\r\n{}\r\n0\r\n\r\n"]
    s.close()
    up.close()


def test_upstream_connections_are_pooled_and_reused(gateway_factory):
    def handler(conn: socket.socket, head: bytes):
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        )

    up = ScriptedUpstream(handler)
    gw = gateway_factory.start({"relay": _cfg(up.url, interval="60s")})
    for _ in range(3):  # three client connections, one request each, one after another
        s = _request(gw.port, POST + b"Content-Length: 2\r\n\r\n", b"{}")
        _read_until(s, b"{}")
        s.close()
    s = _request(gw.port, b"")
    for _ in range(5):  # and five on one keep-alive client connection
        s.sendall(POST + b"Content-Length: 2\r\n\r\n{}")
        _read_until(s, b"\r\n\r\n{}")
    s.close()
    posts = [h for h in up.requests if h.startswith(b"POST")]
    assert len(posts) == 8
    assert up.accepted - 1 == 1  # one connection for the health check, one for all requests
    up.close()


def test_client_leaving_closes_the_upstream_stream_at_once(gateway_factory):
    closed = threading.Event()

    def handler(conn: socket.socket, head: bytes):
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        ev = b"data: tick\n\n"
        try:
            for _ in range(200):  # a stream that would run for 20 s
                conn.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
                time.sleep(0.1)
        except OSError:
            closed.set()
            return False
        return False

    up = ScriptedUpstream(handler)
    gw = gateway_factory.start({"relay": _cfg(up.url, interval="60s")})
    s = _request(
        gw.port, b"GET /relay/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    _read_until(s, b"data: tick")
    s.close()
    assert closed.wait(5), "the upstream stream was still open 5 s after the client left"
    up.close()


def test_no_content_response_with_a_stray_body_is_relayed_without_it(gateway_factory):
    # RFC 9110 §15.3.5: a 204 has no content; bytes an endpoint sends after its head are
    # not relayed, and the upstream connection is not reused
    def handler(conn: socket.socket, head: bytes):
        conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello")

    up = ScriptedUpstream(handler)
    gw = gateway_factory.start({"relay": _cfg(up.url, interval="60s")})
    s = _request(gw.port, POST + b"Content-Length: 2\r\n\r\n", b"{}")
    head = _read_until(s, b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 204 No Content\r\n") and head.endswith(b"\r\n\r\n")
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    nxt = _read_until(s, b'"ok"}')
    assert nxt.startswith(b"HTTP/1.1 200 OK") and b"hello" not in head + nxt
    s.close()
    up.close()


def test_large_bodies_keep_their_head_while_connecting_and_when_pooled(gateway_factory):
    """A body larger than the read buffer fills it while the gateway is still connecting to
    the endpoint: the body then moves within the buffer, over the head it came after. The
    head's kept lines must have been copied out first (they are otherwise copied straight
    from the buffer into the upstream write). The second request goes over the pooled
    connection, its body as a view after the head."""

    def handler(conn: socket.socket, head: bytes):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    up = ScriptedUpstream(handler)
    # "localhost" is resolved before each connect: time for the body to fill the buffer
    gw = gateway_factory.start(
        {"relay": _cfg(up.url.replace("127.0.0.1", "localhost"), interval="60s")}
    )
    s = _request(gw.port, b"")
    bodies = [bytes(range(256)) * 1200, b"x" * 150_000]  # 307,200 and 150,000 bytes
    head = (  # no Connection header: the kept lines are copied from the read buffer
        b"POST /relay/mcp?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Accept: application/json, text/event-stream\r\nX-Custom: kept\r\n"
    )
    for body in bodies:
        s.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert _read_until(s, b"\r\n\r\n{}").startswith(b"HTTP/1.1 200 OK\r\n")
    s.close()
    posts = [i for i, h in enumerate(up.requests) if h.startswith(b"POST")]
    assert [up.bodies[i] for i in posts] == bodies
    for sent in (up.requests[i] for i in posts):
        assert sent.startswith(b"POST /mcp?x=1 HTTP/1.1\r\n")
        assert sent.split(b"\r\n")[2:5] == [
            b"Content-Type: application/json",
            b"Accept: application/json, text/event-stream",
            b"X-Custom: kept",
        ], sent
    assert up.accepted - 1 == 1  # the second request reused the first one's connection
    up.close()
