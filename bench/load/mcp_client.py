"""A tiny blocking MCP client: open sessions through a target and check that it routes right.

Each proxy is given its own sessions, opened through it: gwfast answers ``initialize`` with
its own sealed session id, so ids collected through one target mean nothing to another.
Before any timing the driver checks each target end to end (JSON answer with the right id,
an SSE stream with every event, DELETE, then 404 for the deleted session), so a fast but
wrong proxy cannot win the table.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-06-18",
}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "gwfast-bench", "version": "1"},
    },
}


class Client:
    """One keep-alive HTTP/1.1 connection to an MCP URL."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.path = parts.path or "/"
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def send(
        self, method: str, body: dict | None = None, session: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        headers = dict(HEADERS)
        if session:
            headers["Mcp-Session-Id"] = session
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, self.path, body=data, headers=headers)
        resp = self.conn.getresponse()
        payload = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload

    def initialize(self) -> str:
        status, headers, payload = self.send("POST", INITIALIZE)
        sid = headers.get("mcp-session-id")
        if status != 200 or not sid:
            raise RuntimeError(f"initialize answered {status} {payload[:200]!r} without a session")
        self.send("POST", {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
        return sid

    def call(
        self, session: str, tool: str, rpc_id: int, **arguments: object
    ) -> tuple[int, str, bytes]:
        status, headers, payload = self.send("POST", call_body(tool, rpc_id, **arguments), session)
        return status, headers.get("content-type", ""), payload


def call_body(tool: str, rpc_id: int, **arguments: object) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": rpc_id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }


def open_sessions(url: str, count: int) -> list[str]:
    with Client(url) as client:
        return [client.initialize() for _ in range(count)]


def check_target(
    url: str, sessions: list[str], *, events: int = 10, tracks_sessions: bool = True
) -> None:
    """Raise AssertionError unless url routes JSON, SSE and DELETE correctly. A backend that
    keeps no sessions (the nginx backend: `tracks_sessions=False`) cannot answer 404 to a
    deleted session; every backend answers 404 to an id it cannot have issued."""
    with Client(url) as c:
        for n, sid in enumerate(sessions[:8], start=1):
            status, headers, payload = c.send("POST", call_body("echo", n, text="x" * 500), sid)
            ctype = headers.get("content-type", "")
            assert status == 200, f"tools/call answered {status}: {payload[:200]!r}"
            assert ctype.startswith("application/json"), f"content-type {ctype!r}"
            assert json.loads(payload)["id"] == n, f"wrong id in {payload[:200]!r}"
            # the backend echoes its own id; the client must get back the one it sent
            back = headers.get("mcp-session-id", sid)
            assert back == sid, f"answered with session id {back!r}, not the client's {sid!r}"
        status, ctype, payload = c.call(sessions[0], "stream", 99, events=events)
        assert status == 200 and ctype.startswith("text/event-stream"), (status, ctype)
        got = payload.count(b"\ndata: ") + payload.startswith(b"data: ")
        assert got == events, f"SSE gave {got} events, not {events}"
        assert b'"id":99' in payload.rsplit(b"data: ", 1)[1], "SSE result event missing"
        sid = c.initialize()
        status, _, payload = c.send("DELETE", None, sid)
        assert status == 200, f"DELETE answered {status}: {payload[:200]!r}"
        if tracks_sessions:
            status, _, _ = c.call(sid, "echo", 7)
            assert status == 404, f"a deleted session answered {status}, not 404"
        status, _, _ = c.call("not-a-session-of-this-backend", "echo", 8)
        assert status == 404, f"an unknown session answered {status}, not 404"
