"""Realistic MCP users for locust, to load gwfast (or any MCP endpoint) like real clients do.

wrk (bench/load) measures the proxy's cost per request at saturation; locust measures what
users see in whole conversations: session setup, the handshake, a few tool calls, teardown,
mixed with stateless 2026-07-28 clients. Two users:

- ``LegacyMcpUser`` (2025-06-18, stateful): initialize -> ``Mcp-Session-Id``,
  notifications/initialized, tools/list, tools/call x N with the session id, DELETE.
- ``StatelessMcpUser`` (2026-07-28): no session; every request carries
  ``MCP-Protocol-Version``, ``Mcp-Method`` / ``Mcp-Name`` headers and ``_meta``;
  server/discover once, then tools/list and tools/call.

Usage (``--host`` is the full MCP URL, path included)::

    locust -f bench/locustfile.py --host http://127.0.0.1:8080/bench/mcp \
        --headless -u 10 -r 5 -t 20s

Environment: ``MCP_TOOL`` (tool to call, default ``echo``), ``MCP_CALLS`` (most tool calls per
conversation, default 8). Pick one user class by naming it after the options.
Every answer is checked (status, JSON-RPC id, a result rather than an error), so a proxy that
routes a session to the wrong replica shows up as failures, not as speed.
"""

from __future__ import annotations

import itertools
import json
import os
import random

from locust import between, task
from locust.contrib.fasthttp import FastHttpUser

TOOL = os.environ.get("MCP_TOOL", "echo")
MAX_CALLS = int(os.environ.get("MCP_CALLS", "8"))
LEGACY = "2025-06-18"
STATELESS = "2026-07-28"
BASE_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
}
_ids = itertools.count(1)


def rpc(method: str, params: dict | None = None, *, notify: bool = False) -> tuple[int, bytes]:
    """A JSON-RPC message and its id (0 for a notification)."""
    msg: dict = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    rpc_id = 0 if notify else next(_ids)
    if not notify:
        msg["id"] = rpc_id
    return rpc_id, json.dumps(msg).encode()


def tool_arguments() -> dict:
    """Arguments of 400-2000 bytes once encoded, like real tool inputs vary."""
    return {"text": "q" * random.randint(340, 1940)}


def read_answer(response, rpc_id: int) -> dict | None:
    """The JSON-RPC answer to rpc_id, from a JSON body or the last matching SSE event."""
    ctype = response.headers.get("content-type", "")
    text = response.text or ""
    if ctype.startswith("text/event-stream"):
        for line in reversed(text.splitlines()):
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg.get("id") == rpc_id:
                    return msg
        return None
    return json.loads(text) if text else None


class McpUser(FastHttpUser):
    """Shared plumbing: POST a JSON-RPC message and judge the answer."""

    abstract = True
    wait_time = between(0.05, 0.5)
    protocol = LEGACY

    def headers(self, session: str | None = None, **extra: str) -> dict[str, str]:
        headers = {**BASE_HEADERS, "MCP-Protocol-Version": self.protocol, **extra}
        if session:
            headers["Mcp-Session-Id"] = session
        return headers

    def post(
        self,
        method: str,
        params: dict | None = None,
        *,
        session: str | None = None,
        notify: bool = False,
        name: str | None = None,
        **extra: str,
    ):
        rpc_id, body = rpc(method, params, notify=notify)
        with self.client.post(
            "",
            data=body,
            headers=self.headers(session, **extra),
            name=name or method,
            catch_response=True,
        ) as resp:
            if notify:
                if resp.status_code != 202:
                    resp.failure(f"notification answered {resp.status_code}")
                return resp, None
            if resp.status_code != 200:
                resp.failure(f"{method} answered {resp.status_code}")
                return resp, None
            try:
                answer = read_answer(resp, rpc_id)
            except ValueError as exc:
                resp.failure(f"{method}: unreadable answer: {exc}")
                return resp, None
            if not answer or "result" not in answer:
                resp.failure(f"{method}: no result for id {rpc_id}: {(resp.text or '')[:200]}")
                return resp, None
            return resp, answer["result"]


class LegacyMcpUser(McpUser):
    """A 2025-06-18 client: one session per conversation, closed with DELETE."""

    weight = 3

    @task
    def conversation(self) -> None:
        resp, result = self.post(
            "initialize",
            {
                "protocolVersion": LEGACY,
                "capabilities": {},
                "clientInfo": {"name": "locust", "version": "1"},
            },
        )
        session = resp.headers.get("mcp-session-id") if result is not None else None
        if not session:
            return
        self.post("notifications/initialized", session=session, notify=True)
        self.post("tools/list", {}, session=session)
        for _ in range(random.randint(1, MAX_CALLS)):
            self.wait()
            self.post("tools/call", {"name": TOOL, "arguments": tool_arguments()}, session=session)
        with self.client.delete(
            "", headers=self.headers(session), name="DELETE session", catch_response=True
        ) as resp:
            if resp.status_code not in (200, 202, 204, 405):  # 405: server keeps sessions
                resp.failure(f"DELETE answered {resp.status_code}")


class StatelessMcpUser(McpUser):
    """A 2026-07-28 client: no session, routing headers and _meta on every request."""

    weight = 1
    protocol = STATELESS
    META = {
        "io.modelcontextprotocol/protocolVersion": STATELESS,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "locust", "version": "1"},
    }

    def on_start(self) -> None:
        self.post("server/discover", {"_meta": self.META}, **{"Mcp-Method": "server/discover"})

    @task(1)
    def list_tools(self) -> None:
        self.post("tools/list", {"_meta": self.META}, **{"Mcp-Method": "tools/list"})

    @task(5)
    def call_tool(self) -> None:
        params = {"name": TOOL, "arguments": tool_arguments(), "_meta": self.META}
        self.post("tools/call", params, **{"Mcp-Method": "tools/call", "Mcp-Name": TOOL})
