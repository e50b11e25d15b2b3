"""Raw-socket HTTP/1.1 for tests: send any bytes, read exactly what the server said.

An HTTP client library repairs or refuses what these tests need to send (bare LF, obs-fold,
two Content-Length lines...) and hides how a response ended. `RawConnection` writes bytes
as given and reads a response by RFC 9112 §6.3 framing (Content-Length, chunked, or until
close), telling a complete body from a truncated one and a clean close from a reset.
`RawSession` is a minimal MCP Streamable HTTP client on top (initialize, tools/call).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import socket
import struct
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

PROTOCOL_VERSION = "2025-06-18"
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


class ProtocolError(Exception):
    """The server's response does not parse as HTTP/1.1."""


@dataclasses.dataclass
class Response:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]  # names and values as sent, decoded as latin-1
    body: bytes = b""
    # the body ended as its framing says (Content-Length reached, last chunk and trailers
    # read, or EOF for a close-delimited body); False when the connection ended first
    complete: bool = False
    chunked: bool = False
    request_method: str = "GET"

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    def json(self) -> Any:
        return json.loads(self.body)

    def jsonrpc_error(self) -> dict[str, Any]:
        """Check that this is a gwfast error response and return its `error` object.

        DESIGN.md: every error has a JSON-RPC error body that says what was wrong and how
        to fix it, as application/json.
        """
        assert self.complete, f"error body incomplete: {self!r}"
        assert self.content_type == "application/json", f"not JSON: {self!r}"
        doc = self.json()
        assert isinstance(doc, dict), doc
        assert doc.get("jsonrpc") == "2.0", doc
        assert "id" in doc and doc["id"] is None, doc
        err = doc.get("error")
        assert isinstance(err, dict), doc
        assert isinstance(err.get("code"), int) and not isinstance(err["code"], bool), doc
        assert isinstance(err.get("message"), str) and err["message"].strip(), doc
        return err

    def messages(self) -> list[dict[str, Any]]:
        """The JSON-RPC messages of an MCP response: a JSON body or the SSE `data:` lines."""
        if self.content_type == "text/event-stream":
            return [json.loads(e["data"]) for e in parse_sse(self.body) if e.get("data")]
        if not self.body:
            return []
        doc = self.json()
        return doc if isinstance(doc, list) else [doc]

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"..."
        return (
            f"Response({self.status} {self.reason!r}, headers={self.headers!r}, body={body!r}, "
            f"complete={self.complete})"
        )


def parse_sse(data: bytes) -> list[dict[str, str]]:
    """Split an SSE body into events ({field: value}; data lines joined with \\n)."""
    events = []
    text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    for block in text.split("\n\n"):
        event: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            event[name] = event[name] + "\n" + value if name == "data" and name in event else value
        if event:
            events.append(event)
    return events


def build_request(
    method: str,
    target: str,
    *,
    host: str | None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_length: bool = True,
    version: str = "HTTP/1.1",
) -> bytes:
    """A request as bytes; `host=None` leaves Host out, headers are written as given."""
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    lines = [f"{method} {target} {version}".encode("latin-1")]
    if host is not None:
        lines.append(b"Host: " + host.encode("latin-1"))
    for k, v in items:
        lines.append(
            k.encode("latin-1") + b": " + (v if isinstance(v, bytes) else v.encode("latin-1"))
        )
    if content_length and (body or method in ("POST", "PUT", "PATCH")):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def jsonrpc(method: str, params: Any = None, *, id: int | str | None = 1) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if id is not None:
        msg["id"] = id
    if params is not None:
        msg["params"] = params
    return json.dumps(msg).encode()


def initialize_body(*, id: int = 1, protocol: str = PROTOCOL_VERSION) -> bytes:
    return jsonrpc(
        "initialize",
        {
            "protocolVersion": protocol,
            "capabilities": {},
            "clientInfo": {"name": "gwfast-rawhttp", "version": "1"},
        },
        id=id,
    )


class RawConnection:
    """One TCP connection read through our own buffer.

    A raw socket rather than asyncio streams: the kernel hands out bytes that arrived before
    a reset, and so does this class (a StreamReader raises the reset first and loses them).
    A peer's reset reads as the end of the stream, with `.reset` set.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.buf = bytearray()
        self.reset = False  # the peer reset the connection (ECONNRESET)
        self.eof = False  # the stream ended (EOF or reset)

    @classmethod
    async def open(cls, host: str, port: int, *, timeout: float = 5.0) -> RawConnection:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, (host, port)), timeout
            )
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def __aenter__(self) -> RawConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----- writing -----

    async def send(self, data: bytes) -> bool:
        """Write `data` as is; False (not an error) if the peer is gone by now."""
        if self.sock.fileno() < 0:
            return False
        try:
            await self.loop.sock_sendall(self.sock, data)
        except (ConnectionError, OSError):
            return False
        return True

    async def send_slowly(self, data: bytes, *, step: int = 1, delay: float = 0.1) -> None:
        """Trickle `data`, `step` bytes every `delay` s, until sent or the peer is gone."""
        for i in range(0, len(data), step):
            if not await self.send(data[i : i + step]):
                return
            await asyncio.sleep(delay)

    # ----- reading primitives: a reset is the end of the stream -----

    async def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = await self.loop.sock_recv(self.sock, 65536)
        except ConnectionResetError:
            self.eof = self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take(self, n: int) -> bytes:
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def _readuntil(self, sep: bytes) -> bytes:
        """Up to and including `sep`, or what there was when the stream ended."""
        start = 0
        while (i := self.buf.find(sep, start)) < 0:
            start = max(0, len(self.buf) - len(sep) + 1)
            if not await self._fill():
                return self._take(len(self.buf))
        return self._take(i + len(sep))

    async def _read(self, n: int) -> bytes:
        if not self.buf and not await self._fill():
            return b""
        return self._take(n)

    async def _readexactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self._fill():
                break
        return self._take(n)

    # ----- responses -----

    async def read_head(self, *, timeout: float = 10.0, method: str = "GET") -> Response:
        """Read a response head (skipping 1xx); raises EOFError if the stream ends first."""
        async with asyncio.timeout(timeout):
            while True:
                head = await self._readuntil(b"\r\n\r\n")
                if not head.endswith(b"\r\n\r\n"):
                    raise EOFError(
                        f"connection {'reset' if self.reset else 'closed'} before a response "
                        f"head; got {head[:200]!r}"
                    )
                resp = _parse_head(head, method)
                if not 100 <= resp.status < 200:
                    return resp

    async def read_raw_head(self, *, timeout: float = 10.0) -> bytes:
        """The bytes of the next head, interim (1xx) ones included; EOFError if none."""
        async with asyncio.timeout(timeout):
            head = await self._readuntil(b"\r\n\r\n")
        if not head.endswith(b"\r\n\r\n"):
            raise EOFError(f"connection ended before a response head; got {head[:200]!r}")
        return head

    async def body_pieces(self, resp: Response, *, timeout: float = 10.0) -> AsyncIterator[bytes]:
        """Yield the decoded body as it arrives; sets resp.complete at the end.

        `timeout` bounds the wait for each piece (a stalled stream raises TimeoutError).
        """
        te = (resp.header("transfer-encoding") or "").lower()
        cl = resp.header("content-length")
        if resp.request_method == "HEAD" or resp.status in (204, 304):
            resp.complete = True
            return
        if "chunked" in te:
            resp.chunked = True
            while True:
                async with asyncio.timeout(timeout):
                    line = await self._readuntil(b"\r\n")
                if not line.endswith(b"\r\n"):
                    return
                size_text = line[:-2].split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size line {line!r}") from None
                if size == 0:
                    async with asyncio.timeout(timeout):
                        while True:  # trailers, then the empty line
                            t = await self._readuntil(b"\r\n")
                            if not t.endswith(b"\r\n"):
                                return
                            if t == b"\r\n":
                                resp.complete = True
                                return
                left = size
                while left:
                    async with asyncio.timeout(timeout):
                        data = await self._read(min(left, 65536))
                    if not data:
                        return
                    left -= len(data)
                    yield data
                async with asyncio.timeout(timeout):
                    crlf = await self._readexactly(2)
                if len(crlf) < 2:
                    return
                if crlf != b"\r\n":
                    raise ProtocolError(f"chunk data not followed by CRLF: {crlf!r}")
        elif cl is not None:
            left = int(cl)
            while left:
                async with asyncio.timeout(timeout):
                    data = await self._read(min(left, 65536))
                if not data:
                    return
                left -= len(data)
                yield data
            resp.complete = True
        else:  # close-delimited
            while True:
                async with asyncio.timeout(timeout):
                    data = await self._read(65536)
                if not data:
                    resp.complete = not self.reset
                    return
                yield data

    async def read_body(self, resp: Response, *, timeout: float = 10.0) -> Response:
        chunks = [piece async for piece in self.body_pieces(resp, timeout=timeout)]
        resp.body += b"".join(chunks)
        return resp

    async def read_response(self, *, timeout: float = 10.0, method: str = "GET") -> Response:
        """Head and whole body within `timeout` seconds."""
        async with asyncio.timeout(timeout):
            resp = await self.read_head(timeout=timeout, method=method)
            return await self.read_body(resp, timeout=timeout)

    async def sse_events(
        self, resp: Response, *, timeout: float = 10.0
    ) -> AsyncIterator[dict[str, str]]:
        """Yield SSE events of a streaming response as each completes (resp.body grows)."""
        buf = b""
        async for piece in self.body_pieces(resp, timeout=timeout):
            resp.body += piece
            buf += piece
            while True:
                sep = min(
                    (i for i in (buf.find(b"\n\n"), buf.find(b"\r\n\r\n")) if i >= 0), default=-1
                )
                if sep < 0:
                    break
                end = sep + (4 if buf[sep : sep + 4] == b"\r\n\r\n" else 2)
                block, buf = buf[:end], buf[end:]
                yield from_sse(block)

    async def wait_closed(self, *, timeout: float = 5.0) -> bool:
        """True if the server ends the connection (EOF or reset) within `timeout`.

        Bytes that arrive instead are an error: a closed connection must not say more.
        """
        if self.buf:
            raise AssertionError(
                f"expected the connection to close, got more bytes: {bytes(self.buf)!r}"
            )
        if self.eof:
            return True
        try:
            async with asyncio.timeout(timeout):
                data = await self._read(65536)
        except TimeoutError:
            return False
        if data:
            raise AssertionError(f"expected the connection to close, got more bytes: {data!r}")
        return True

    async def close(self) -> None:
        self.sock.close()

    def abort(self) -> None:
        """Close with an RST (SO_LINGER 0)."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def from_sse(block: bytes) -> dict[str, str]:
    events = parse_sse(block)
    return events[0] if events else {}


def _parse_head(head: bytes, method: str) -> Response:
    lines = head[:-4].split(b"\r\n")
    status_line = lines[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {status_line!r}")
    headers = []
    for raw in lines[1:]:
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"bad response header line {raw!r}")
        headers.append((name, value.strip(" \t")))
    return Response(
        status=int(parts[1]),
        reason=parts[2] if len(parts) > 2 else "",
        version=parts[0],
        headers=headers,
        request_method=method,
    )


async def exchange(
    host: str,
    port: int,
    data: bytes,
    *,
    timeout: float = 10.0,
    close_timeout: float | None = 3.0,
    method: str = "GET",
) -> tuple[Response, bool]:
    """Send `data` on a new connection, read one response; (response, server closed it).

    "Closed" means the server ended the connection within `close_timeout` of the response;
    with `close_timeout=None` it is not waited for (True only if it had ended already).
    """
    async with await RawConnection.open(host, port) as conn:
        await conn.send(data)
        resp = await conn.read_response(timeout=timeout, method=method)
        if close_timeout is None:
            return resp, conn.eof
        closed = await conn.wait_closed(timeout=close_timeout)
        return resp, closed


class RawSession:
    """An MCP session over one raw keep-alive connection (protocol 2025-06-18).

    ``await RawSession.open(host, port, path)`` runs initialize and the initialized
    notification; ``call_tool`` returns the result object. Each request may also be sent
    by hand with ``request_bytes`` to read the stream piece by piece.
    """

    def __init__(self, conn: RawConnection, *, host: str, path: str) -> None:
        self.conn = conn
        self.host = host
        self.path = path
        self.session_id: str | None = None
        self.ids = itertools.count(1)

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        path: str,
        *,
        timeout: float = 10.0,
        extra_headers: Mapping[str, str] | None = None,
    ) -> RawSession:
        conn = await RawConnection.open(host, port)
        s = cls(conn, host=f"{host}:{port}", path=path)
        try:
            resp = await s.post(
                initialize_body(id=next(s.ids)), timeout=timeout, extra_headers=extra_headers
            )
            if resp.status != 200:
                raise AssertionError(f"initialize failed: {resp!r}")
            s.session_id = resp.header("mcp-session-id")
            if not s.session_id:
                raise AssertionError(f"initialize gave no Mcp-Session-Id: {resp!r}")
            note = await s.post(jsonrpc("notifications/initialized", id=None), timeout=timeout)
            if note.status != 202:
                raise AssertionError(f"notifications/initialized not accepted: {note!r}")
        except BaseException:
            await conn.close()
            raise
        return s

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        h = dict(MCP_HEADERS)
        if self.session_id:
            h["Mcp-Session-Id"] = self.session_id
            h["MCP-Protocol-Version"] = PROTOCOL_VERSION
        h.update(extra or {})
        return h

    def request_bytes(
        self, body: bytes, *, method: str = "POST", extra_headers: Mapping[str, str] | None = None
    ) -> bytes:
        return build_request(
            method, self.path, host=self.host, headers=self.headers(extra_headers), body=body
        )

    async def post(
        self, body: bytes, *, timeout: float = 10.0, extra_headers: Mapping[str, str] | None = None
    ) -> Response:
        await self.conn.send(self.request_bytes(body, extra_headers=extra_headers))
        return await self.conn.read_response(timeout=timeout, method="POST")

    def tool_call_body(
        self, name: str, arguments: dict[str, Any], *, progress_token: str | None = None
    ) -> bytes:
        params: dict[str, Any] = {"name": name, "arguments": arguments}
        if progress_token is not None:
            params["_meta"] = {"progressToken": progress_token}
        return jsonrpc("tools/call", params, id=next(self.ids))

    async def call_tool(
        self, name: str, arguments: dict[str, Any], *, timeout: float = 10.0
    ) -> dict[str, Any]:
        resp = await self.post(self.tool_call_body(name, arguments), timeout=timeout)
        if resp.status != 200:
            raise AssertionError(f"tools/call {name} failed: {resp!r}")
        results = [m for m in resp.messages() if "result" in m or "error" in m]
        if len(results) != 1 or "result" not in results[0]:
            raise AssertionError(f"tools/call {name}: no single result in {resp!r}")
        return results[0]["result"]

    async def echo(self, message: str, *, timeout: float = 10.0) -> str:
        result = await self.call_tool("echo", {"message": message}, timeout=timeout)
        return result["content"][0]["text"]

    async def close(self) -> None:
        await self.conn.close()


async def get(
    host: str,
    port: int,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> Response:
    """One GET on a new connection (Connection: close)."""
    data = build_request(
        "GET", path, host=f"{host}:{port}", headers={"Connection": "close", **(headers or {})}
    )
    resp, _ = await exchange(host, port, data, timeout=timeout, close_timeout=None)
    return resp


async def wait_ready(
    host: str, port: int, *, path: str = "/readyz", timeout: float = 20.0
) -> Response:
    """Poll `path` until it answers 200; TimeoutError (with the last answer) otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Response | BaseException | None = None
    while loop.time() < deadline:
        try:
            last = await get(host, port, path, timeout=2.0)
            if last.status == 200:
                return last
        except (OSError, EOFError, TimeoutError, ProtocolError) as e:
            last = e
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{path} on port {port} not 200 after {timeout}s; last: {last!r}")
