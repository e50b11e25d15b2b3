"""A deliberately fast MCP Streamable HTTP backend for load tests.

A proxy benchmark measures the proxy only if the backend behind it costs much less than the
proxy itself. The official SDK server costs milliseconds per request, so this one is a raw
uvloop ``asyncio.Protocol`` with httptools and prebuilt responses: one process answers several
times more requests per second than any proxy in front of it (check with wrk directly).

It speaks just enough of MCP Streamable HTTP (2025-06-18 and 2026-07-28) for a proxy to route:

- POST ``initialize`` -> 200 JSON and a new ``Mcp-Session-Id`` (random hex);
- every answer to a request with a known session id carries that ``Mcp-Session-Id`` back,
  as the official SDKs' servers (Python and TypeScript) do; ``--no-session-echo`` sends it
  only on ``initialize`` (what this backend did before 2026-12-08). The header line is built
  once per session, at ``initialize``: echoing costs one lookup that was made anyway;
- POST ``tools/list`` / ``tools/call`` with a known session id -> ~600-byte JSON-RPC result;
  an unknown session id -> 404, so a proxy that mangles ids shows up as wrk non-2xx errors;
- POST ``tools/call`` of tool ``stream`` with ``Accept: text/event-stream`` -> a chunked SSE
  response of ``events`` events (argument, default 10), ``interval_ms`` apart (default 0);
  with ``rest_after_ms`` instead, the first event goes out in the same write as the response
  head and the others in one write that many milliseconds later (time to first event);
- POST a notification (no id) -> 202; DELETE -> 200 and forgets the session;
- requests with ``MCP-Protocol-Version: 2026-07-28`` are stateless: no session needed, and
  ``server/discover`` answers;
- GET ``/healthz`` -> 200; GET on the MCP path with a known session -> a standalone SSE
  stream (chunked) that sends one priming comment and then stays open and silent until the
  client leaves, as an idle MCP server stream does; without one -> 400.

Run: ``python -m bench.load.fast_backend --port 8001``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal

import httptools
import msgspec
import uvloop

STATELESS_VERSION = b"2026-07-28"
PRIMING = b": stream\n\n"  # an SSE comment: the stream is open
TEXT = ("lorem ipsum dolor sit amet " * 18)[:480]  # makes a tools/call result of ~600 bytes


class Params(msgspec.Struct):
    name: str = ""
    arguments: dict = {}


class Rpc(msgspec.Struct):
    """The part of a JSON-RPC message the backend reads; other fields are skipped unparsed."""

    method: str = ""
    id: int | str | None = None
    params: Params | None = None


_decode = msgspec.json.Decoder(Rpc).decode
_encode = msgspec.json.encode


def _result_parts(result: object) -> tuple[bytes, bytes]:
    """Split a prebuilt response body around the request id, so a reply is two concatenations."""
    body = _encode({"jsonrpc": "2.0", "id": "@@ID@@", "result": result})
    head, tail = body.split(b'"@@ID@@"')
    return head, tail


INIT = _result_parts(
    {
        "protocolVersion": "2025-06-18",
        "capabilities": {"tools": {"listChanged": False}},
        "serverInfo": {"name": "gwfast-bench-backend", "version": "1"},
    }
)
DISCOVER = _result_parts(
    {
        "supportedVersions": ["2025-06-18", "2026-07-28"],
        "capabilities": {"tools": {}},
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "gwfast-bench", "version": "1"}},
    }
)
CALL = _result_parts({"content": [{"type": "text", "text": TEXT}], "isError": False})
LIST = _result_parts(
    {
        "tools": [
            {
                "name": name,
                "description": f"The {name} tool of the benchmark backend; it does no work.",
                "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
            }
            for name in ("echo", "stream", "search")
        ]
    }
)
EMPTY = _result_parts({})

REASONS = {
    200: b"OK",
    202: b"Accepted",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
}


def _head(status: int, ctype: bytes, length: int, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
        status,
        REASONS[status],
        ctype,
        length,
        extra,
    )


def _json(status: int, parts: tuple[bytes, bytes], rpc_id: object, extra: bytes = b"") -> bytes:
    body = parts[0] + _encode(rpc_id) + parts[1]
    return _head(status, b"application/json", len(body), extra) + body


def _plain(status: int, text: bytes = b"", extra: bytes = b"") -> bytes:
    return _head(status, b"text/plain", len(text), extra) + text


class Request:
    __slots__ = ("method", "url", "session", "accept", "version", "body")

    def __init__(self) -> None:
        self.method = b""
        self.url = b""
        self.session = b""
        self.accept = b""
        self.version = b""
        self.body: list[bytes] = []


class McpProtocol(asyncio.Protocol):
    """One keep-alive connection; requests are answered strictly in order (pipelining safe)."""

    def __init__(self, sessions: dict[bytes, bytes], *, echo: bool = True) -> None:
        self.sessions = sessions  # session id -> the header line echoed on its answers
        self.echo = echo
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.req = Request()
        self.queue: collections.deque[Request] = collections.deque()
        self.streaming = False
        self.close_after = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(_plain(400, b"bad request"))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self.req = Request()

    def on_url(self, url: bytes) -> None:
        self.req.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"mcp-session-id":
            self.req.session = value
        elif name == b"accept":
            self.req.accept = value
        elif name == b"mcp-protocol-version":
            self.req.version = value

    def on_body(self, body: bytes) -> None:
        self.req.body.append(body)

    def on_message_complete(self) -> None:
        self.req.method = self.parser.get_method()
        if not self.parser.should_keep_alive():
            self.close_after = True
        self.queue.append(self.req)
        if not self.streaming:
            self._drain()

    # -- dispatch
    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _drain(self) -> None:
        while self.queue and not self.streaming and self.transport is not None:
            self._handle(self.queue.popleft())
        if not self.queue and not self.streaming and self.close_after and self.transport:
            self.transport.close()

    def _handle(self, req: Request) -> None:
        path = req.url.split(b"?", 1)[0]
        if path == b"/healthz":
            self._write(_plain(200, b"ok"))
        elif req.method == b"POST":
            self._post(req)
        elif req.method == b"DELETE":
            echo = self.sessions.pop(req.session, None)
            if echo is not None:
                self._write(_plain(200, b"", echo))
            else:
                self._write(_plain(404, b"unknown session"))
        elif req.method == b"GET":
            echo = self.sessions.get(req.session)
            if echo is None:
                self._write(_plain(400, b"GET needs a session"))
                return
            self.streaming = True  # holds the connection: nothing else is answered on it
            self._write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n%s\r\n"
                b"%x\r\n%s\r\n" % (echo, len(PRIMING), PRIMING)
            )
        else:
            self._write(_plain(405))

    def _post(self, req: Request) -> None:
        try:
            rpc = _decode(b"".join(req.body))
        except msgspec.DecodeError:
            self._write(_plain(400, b"bad json-rpc"))
            return
        method = rpc.method
        stateless = req.version == STATELESS_VERSION
        if method == "initialize":
            sid = os.urandom(16).hex().encode()
            line = b"Mcp-Session-Id: %s\r\n" % sid
            self.sessions[sid] = line if self.echo else b""
            self._write(_json(200, INIT, rpc.id, line))
            return
        echo = self.sessions.get(req.session)  # None: no session id, or an unknown one
        if echo is None:
            if not stateless:
                self._write(_plain(404 if req.session else 400, b"unknown session"))
                return
            echo = b""
        if rpc.id is None:  # a notification or a response: nothing to answer
            self._write(_plain(202, b"", echo))
        elif method == "tools/call":
            params = rpc.params or Params()
            if params.name == "stream" and b"text/event-stream" in req.accept:
                self._stream(rpc.id, params.arguments, echo)
            else:
                self._write(_json(200, CALL, rpc.id, echo))
        elif method == "tools/list":
            self._write(_json(200, LIST, rpc.id, echo))
        elif method == "server/discover":
            self._write(_json(200, DISCOVER, rpc.id, echo))
        else:
            self._write(_json(200, EMPTY, rpc.id, echo))

    # -- SSE
    def _stream(self, rpc_id: object, arguments: dict, echo: bytes) -> None:
        events = int(arguments.get("events", 10))
        interval = float(arguments.get("interval_ms", 0)) / 1000.0
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n%s\r\n" % echo
        )
        loop = asyncio.get_running_loop()
        if "rest_after_ms" in arguments:  # first event at once, with the head; the rest later
            self._write(head + self._event(rpc_id, 0, events))
            if events == 1:
                return
            self.streaming = True

            def rest() -> None:
                if self.transport is None:
                    return
                self._write(b"".join(self._event(rpc_id, n, events) for n in range(1, events)))
                self.streaming = False
                self._drain()

            loop.call_later(float(arguments["rest_after_ms"]) / 1000.0, rest)
            return
        self._write(head)
        if interval <= 0:  # one write for the whole stream: the backend must stay cheap
            self._write(b"".join(self._event(rpc_id, n, events) for n in range(events)))
            return
        self.streaming = True

        def tick(n: int) -> None:
            if self.transport is None:
                return
            self._write(self._event(rpc_id, n, events))
            if n + 1 < events:
                loop.call_later(interval, tick, n + 1)
            else:
                self.streaming = False
                self._drain()

        loop.call_later(interval, tick, 0)

    @staticmethod
    def _event(rpc_id: object, n: int, events: int) -> bytes:
        """Event n as an HTTP chunk (the last one ends the body)."""
        data = sse_event(rpc_id, n, events)
        tail = b"0\r\n\r\n" if n + 1 >= events else b""
        return b"%x\r\n%s\r\n%s" % (len(data), data, tail)


def sse_event(rpc_id: object, n: int, events: int) -> bytes:
    """Event n of a stream of `events`: progress notifications, then the final result.
    (The nginx backend, nginx_backend.py, serves the same events.)"""
    if n + 1 < events:
        msg = _encode(
            {
                "jsonrpc": "2.0",
                "method": "notifications/progress",
                "params": {"progressToken": rpc_id, "progress": n + 1, "total": events},
            }
        )
    else:
        msg = CALL[0] + _encode(rpc_id) + CALL[1]
    return b"event: message\ndata: " + msg + b"\n\n"


async def serve(host: str, port: int, *, echo: bool = True) -> None:
    loop = asyncio.get_running_loop()
    sessions: dict[bytes, bytes] = {}
    server = await loop.create_server(
        lambda: McpProtocol(sessions, echo=echo), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument(
        "--no-session-echo",
        action="store_true",
        help="send Mcp-Session-Id only on initialize, not on every answer of a session",
    )
    args = ap.parse_args(argv)
    uvloop.run(serve(args.host, args.port, echo=not args.no_session_echo))


if __name__ == "__main__":
    main()
