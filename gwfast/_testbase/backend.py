"""A project-owned MCP backend on the official Python SDK, for tests and benchmarks.

Run it as ``python -m gwfast._testbase.backend --port P --replica NAME``. It serves
Streamable HTTP (stateful sessions; both protocol eras) on ``/mcp`` and ``GET /healthz``.

What tests use it for:

- **Affinity**: every HTTP response carries ``X-Replica: NAME`` and the tool ``whoami``
  returns NAME, so a test can tell which replica served a call.
- **Plain tools**: ``echo`` (returns its message unchanged), ``slow`` (sleeps N seconds, to
  test cancellation and long requests) and ``stats`` (JSON counters of this replica:
  calls, slow calls started, finished and cancelled).
- **Health**: ``GET /healthz`` answers 200 until ``POST /healthz?status=N`` makes it answer
  N (``status=200`` again to recover), so a test can fail a replica's health check while it
  keeps serving MCP.
- **Conformance**: every name that the scenarios of ``@modelcontextprotocol/conformance``
  (0.1.16, ``--suite all``) call — ``test_simple_text``, ``test_sampling``,
  ``test://static-text``, ``test_simple_prompt``, ... — with the behaviour they check.
  Server-to-client requests (sampling, elicitation) and the tools' log and progress
  notifications go on the tool call's own response stream (request-scoped), never on the
  session's GET stream, so they work behind any relay that streams responses.

The harness at the end (`BackendFactory`, `backend_config`) starts replicas as real
processes on free loopback ports and writes their gateway configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
import urllib.request
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import (
    AudioContent,
    CallToolResult,
    CompleteRequestParams,
    CompleteResult,
    Completion,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    JSONRPCMessage,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gwfast._testbase.procs import REPO, Proc, free_port, python_argv

# A 1x1 red PNG and a minimal WAV, as the conformance suite's reference server sends.
TEST_IMAGE_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
TEST_AUDIO_BASE64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

# SEP-1613: served verbatim in tools/list ($schema, $defs and additionalProperties kept).
JSON_SCHEMA_2020_12_INPUT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}

REPLICA_HEADER = "X-Replica"


class MemoryEventStore(EventStore):
    """Keeps every SSE event in memory so clients can resume with ``Last-Event-ID``.

    Needed for SEP-1699 (the server closes a tool call's stream mid-call and the client
    resumes it). Event ids sort in the order they were stored.
    """

    def __init__(self, max_events: int = 20_000) -> None:
        self._events: dict[EventId, tuple[StreamId, JSONRPCMessage | None]] = {}
        self._counter = itertools.count()
        self._max = max_events

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = f"{next(self._counter):012d}_{stream_id}"
        self._events[event_id] = (stream_id, message)
        while len(self._events) > self._max:
            self._events.pop(next(iter(self._events)))
        return event_id

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        found = self._events.get(last_event_id)
        if found is None:
            return None
        stream_id = found[0]
        for event_id, (sid, message) in list(self._events.items()):
            if sid == stream_id and event_id > last_event_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


class ReplicaHeader:
    """ASGI middleware adding ``X-Replica: NAME`` to every HTTP response."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.lower().encode(), replica.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_header)


def _text(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)])


def build_server(replica: str) -> MCPServer:
    """The MCP server of one replica: plain test tools plus the conformance fixtures."""
    # Logging, sampling and the rest are deprecated in 2026-07-28 but are what the
    # 2025 scenarios test; say so once here rather than on every call.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*deprecated.*")

    stats = {"calls": 0, "slow_started": 0, "slow_finished": 0, "slow_cancelled": 0}
    subscriptions: set[str] = set()

    def json_schema_2020_12_tool(
        name: str | None = None, address: dict[str, Any] | None = None
    ) -> CallToolResult:
        """Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)."""
        args = {k: v for k, v in {"name": name, "address": address}.items() if v is not None}
        return _text(f"JSON Schema 2020-12 tool called with: {json.dumps(args)}")

    schema_tool = Tool.from_function(json_schema_2020_12_tool)
    schema_tool = schema_tool.model_copy(update={"parameters": JSON_SCHEMA_2020_12_INPUT_SCHEMA})

    server: MCPServer = MCPServer(
        "gwfast-test-backend",
        version="1.0.0",
        instructions=f"gwfast test backend, replica {replica}",
        tools=[schema_tool],
    )

    async def log(ctx: Context, level: str, data: Any) -> None:
        await ctx.session.send_log_message(
            level=level, data=data, logger="gwfast-test-backend", related_request_id=ctx.request_id
        )

    # ----- tools for gateway tests -----

    @server.tool()
    def whoami() -> str:
        """The name of the replica serving this call."""
        stats["calls"] += 1
        return replica

    @server.tool()
    def echo(message: str) -> str:
        """Return `message` unchanged."""
        stats["calls"] += 1
        return message

    @server.tool()
    async def slow(seconds: float, ctx: Context) -> str:
        """Sleep `seconds` (reporting progress each second), then say which replica slept."""
        stats["calls"] += 1
        stats["slow_started"] += 1
        try:
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(1.0, left))
                await ctx.report_progress(seconds - max(0.0, deadline - time.monotonic()), seconds)
        except asyncio.CancelledError:
            stats["slow_cancelled"] += 1
            raise
        stats["slow_finished"] += 1
        return f"{replica} slept {seconds}s"

    @server.tool(name="stats")
    def stats_tool() -> str:
        """JSON counters of this replica (calls, slow_started/finished/cancelled)."""
        return json.dumps({"replica": replica, "pid": os.getpid(), **stats})

    # ----- conformance fixtures (names fixed by the suite) -----

    @server.tool()
    def test_simple_text() -> CallToolResult:
        """Tests simple text content response"""
        return _text("This is a simple text response for testing.")

    @server.tool()
    def test_image_content() -> CallToolResult:
        """Tests image content response"""
        return CallToolResult(
            content=[ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png")]
        )

    @server.tool()
    def test_audio_content() -> CallToolResult:
        """Tests audio content response"""
        return CallToolResult(
            content=[AudioContent(type="audio", data=TEST_AUDIO_BASE64, mime_type="audio/wav")]
        )

    @server.tool()
    def test_embedded_resource() -> CallToolResult:
        """Tests embedded resource content response"""
        return CallToolResult(
            content=[
                EmbeddedResource(
                    type="resource",
                    resource=TextResourceContents(
                        uri="test://embedded-resource",
                        mime_type="text/plain",
                        text="This is an embedded resource content.",
                    ),
                )
            ]
        )

    @server.tool()
    def test_multiple_content_types() -> CallToolResult:
        """Tests response with multiple content types (text, image, resource)"""
        return CallToolResult(
            content=[
                TextContent(type="text", text="Multiple content types test:"),
                ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png"),
                EmbeddedResource(
                    type="resource",
                    resource=TextResourceContents(
                        uri="test://mixed-content-resource",
                        mime_type="application/json",
                        text=json.dumps({"test": "data", "value": 123}),
                    ),
                ),
            ]
        )

    @server.tool()
    async def test_tool_with_logging(ctx: Context) -> CallToolResult:
        """Tests tool that emits log messages during execution"""
        await log(ctx, "info", "Tool execution started")
        await asyncio.sleep(0.05)
        await log(ctx, "info", "Tool processing data")
        await asyncio.sleep(0.05)
        await log(ctx, "info", "Tool execution completed")
        return _text("Tool with logging executed successfully")

    @server.tool()
    async def test_tool_with_progress(ctx: Context) -> CallToolResult:
        """Tests tool that reports progress notifications"""
        for step in (0, 50, 100):
            await ctx.report_progress(step, 100, f"Completed step {step} of 100")
            if step < 100:
                await asyncio.sleep(0.05)
        meta = ctx.request_context.meta or {}
        token = meta.get("progress_token", meta.get("progressToken"))
        return _text(str(token if token is not None else 0))

    @server.tool()
    def test_error_handling() -> CallToolResult:
        """Tests error response handling"""
        return CallToolResult(
            content=[
                TextContent(
                    type="text", text="This tool intentionally returns an error for testing"
                )
            ],
            is_error=True,
        )

    @server.tool()
    async def test_reconnection(ctx: Context) -> CallToolResult:
        """Closes its own SSE stream mid-call; the result arrives after the client resumes."""
        await ctx.close_sse_stream()
        await asyncio.sleep(0.1)
        return _text(
            "Reconnection test completed successfully. If you received this, the client "
            "properly reconnected after stream closure."
        )

    @server.tool()
    async def test_sampling(prompt: str, ctx: Context) -> CallToolResult:
        """Tests server-initiated sampling (LLM completion request)"""
        try:
            result = await ctx.session.create_message(
                messages=[
                    SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
                ],
                max_tokens=100,
                related_request_id=ctx.request_id,
            )
        except Exception as exc:  # the scenario checks the request, not our reply
            return _text(f"Sampling not supported or error: {exc}")
        content = result.content
        text = getattr(content, "text", None) or "No response"
        return _text(f"LLM response: {text}")

    async def elicit(
        ctx: Context, message: str, schema: dict[str, Any], prefix: str
    ) -> CallToolResult:
        try:
            result = await ctx.session.elicit_form(
                message=message, requested_schema=schema, related_request_id=ctx.request_id
            )
        except Exception as exc:
            return _text(f"Elicitation not supported or error: {exc}")
        return _text(
            f"{prefix}: action={result.action}, content={json.dumps(result.content or {})}"
        )

    @server.tool()
    async def test_elicitation(message: str, ctx: Context) -> CallToolResult:
        """Tests server-initiated elicitation (user input request)"""
        schema = {
            "type": "object",
            "properties": {"response": {"type": "string", "description": "User's response"}},
            "required": ["response"],
        }
        return await elicit(ctx, message, schema, "User response")

    @server.tool()
    async def test_elicitation_sep1034_defaults(ctx: Context) -> CallToolResult:
        """Tests elicitation with default values per SEP-1034"""
        schema = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "User name", "default": "John Doe"},
                "age": {"type": "integer", "description": "User age", "default": 30},
                "score": {"type": "number", "description": "User score", "default": 95.5},
                "status": {
                    "type": "string",
                    "description": "User status",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {
                    "type": "boolean",
                    "description": "Verification status",
                    "default": True,
                },
            },
            "required": [],
        }
        return await elicit(
            ctx,
            "Please review and update the form fields with defaults",
            schema,
            "Elicitation completed",
        )

    @server.tool()
    async def test_elicitation_sep1330_enums(ctx: Context) -> CallToolResult:
        """Tests elicitation with enum schema improvements per SEP-1330"""
        schema = {
            "type": "object",
            "properties": {
                "untitledSingle": {
                    "type": "string",
                    "description": "Select one option",
                    "enum": ["option1", "option2", "option3"],
                },
                "titledSingle": {
                    "type": "string",
                    "description": "Select one option with titles",
                    "oneOf": [
                        {"const": "value1", "title": "First Option"},
                        {"const": "value2", "title": "Second Option"},
                        {"const": "value3", "title": "Third Option"},
                    ],
                },
                "legacyEnum": {
                    "type": "string",
                    "description": "Select one option (legacy)",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "description": "Select multiple options",
                    "minItems": 1,
                    "maxItems": 3,
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                },
                "titledMulti": {
                    "type": "array",
                    "description": "Select multiple options with titles",
                    "minItems": 1,
                    "maxItems": 3,
                    "items": {
                        "anyOf": [
                            {"const": "value1", "title": "First Choice"},
                            {"const": "value2", "title": "Second Choice"},
                            {"const": "value3", "title": "Third Choice"},
                        ]
                    },
                },
            },
            "required": [],
        }
        return await elicit(
            ctx, "Please select options from the enum fields", schema, "Elicitation completed"
        )

    # ----- resources -----

    @server.resource(
        "test://static-text",
        name="static-text",
        title="Static Text Resource",
        description="A static text resource for testing",
        mime_type="text/plain",
    )
    def static_text() -> str:
        return "This is the content of the static text resource."

    @server.resource(
        "test://static-binary",
        name="static-binary",
        title="Static Binary Resource",
        description="A static binary resource (image) for testing",
        mime_type="image/png",
    )
    def static_binary() -> bytes:
        import base64

        return base64.b64decode(TEST_IMAGE_BASE64)

    @server.resource(
        "test://template/{id}/data",
        name="template",
        title="Resource Template",
        description="A resource template with parameter substitution",
        mime_type="application/json",
    )
    def template(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @server.resource(
        "test://watched-resource",
        name="watched-resource",
        title="Watched Resource",
        description="A resource that auto-updates every 3 seconds",
        mime_type="text/plain",
    )
    def watched() -> str:
        return "Watched resource content"

    # ----- prompts -----

    @server.prompt(title="Simple Test Prompt", description="A simple prompt without arguments")
    def test_simple_prompt() -> list[dict[str, Any]]:
        return [
            {
                "role": "user",
                "content": {"type": "text", "text": "This is a simple prompt for testing."},
            }
        ]

    @server.prompt(title="Prompt With Arguments", description="A prompt with required arguments")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[dict[str, Any]]:
        text = f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
        return [{"role": "user", "content": {"type": "text", "text": text}}]

    @server.prompt(
        title="Prompt With Embedded Resource",
        description="A prompt that includes an embedded resource",
    )
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[dict[str, Any]]:  # noqa: N803
        return [
            {
                "role": "user",
                "content": {
                    "type": "resource",
                    "resource": {
                        "uri": resourceUri,
                        "mimeType": "text/plain",
                        "text": "Embedded resource content for testing.",
                    },
                },
            },
            {
                "role": "user",
                "content": {"type": "text", "text": "Please process the embedded resource above."},
            },
        ]

    @server.prompt(title="Prompt With Image", description="A prompt that includes image content")
    def test_prompt_with_image() -> list[dict[str, Any]]:
        return [
            {
                "role": "user",
                "content": {"type": "image", "data": TEST_IMAGE_BASE64, "mimeType": "image/png"},
            },
            {
                "role": "user",
                "content": {"type": "text", "text": "Please analyze the image above."},
            },
        ]

    # ----- logging, subscriptions, completion (low-level handlers) -----

    lowlevel = server._lowlevel_server  # the documented seam for spec methods MCPServer lacks

    async def set_level(ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
        await ctx.session.send_log_message(
            level="info", data=f"Log level set to: {params.level}", logger="gwfast-test-backend"
        )
        return EmptyResult()

    async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        subscriptions.add(str(params.uri))
        return EmptyResult()

    async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        subscriptions.discard(str(params.uri))
        return EmptyResult()

    async def complete(ctx: Any, params: CompleteRequestParams) -> CompleteResult:
        return CompleteResult(completion=Completion(values=[], total=0, has_more=False))

    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    lowlevel.add_request_handler("completion/complete", CompleteRequestParams, complete)

    # ----- plain HTTP -----

    health = {"status": 200}  # what GET /healthz answers; POST /healthz?status=N sets it

    @server.custom_route("/healthz", methods=["GET", "POST"])
    async def healthz(request: Request) -> Response:
        if request.method == "POST":
            health["status"] = int(request.query_params.get("status", "200"))
            return PlainTextResponse(f"healthz answers {health['status']}")
        ok = 200 <= health["status"] < 300
        return PlainTextResponse("ok" if ok else "unhealthy", status_code=health["status"])

    @server.custom_route("/whoami", methods=["GET"])
    async def whoami_http(request: Request) -> Response:
        return JSONResponse({"replica": replica, "pid": os.getpid()})

    return server


def build_app(replica: str, *, host: str = "127.0.0.1", retry_interval_ms: int = 500) -> ASGIApp:
    server = build_server(replica)
    app = server.streamable_http_app(
        stateless_http=False,
        event_store=MemoryEventStore(),
        retry_interval=retry_interval_ms,
        host=host,
    )
    return ReplicaHeader(app, replica)


# ----------------------------------------------------------------------------- harness
# Starting replicas from tests (tests/conftest.py's `backend_factory`).


def _repo_env() -> dict[str, str]:
    """Children import gwfast from this checkout whether or not it is installed."""
    path = os.environ.get("PYTHONPATH")
    return {
        "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO),
        "PYTHONUNBUFFERED": "1",
    }


def wait_http_ok(url: str, *, timeout: float = 20.0, proc: Proc | None = None) -> None:
    """Wait until GET `url` answers 200."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(
                f"{proc.argv} exited before {url} answered:\n{proc.output()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception as exc:  # anything but 200 means not yet
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s (last: {last!r})")


@dataclass
class Backend:
    """One replica of gwfast._testbase.backend: `url` is its MCP endpoint."""

    name: str
    port: int
    proc: Proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        self.proc.stop()


@dataclass
class BackendFactory:
    workdir: Path
    started: list[Backend] = field(default_factory=list)

    def start(self, n: int = 1, *, prefix: str = "replica") -> list[Backend]:
        """Start `n` replicas named PREFIX-0, PREFIX-1, ...; wait until all are healthy."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        new = []
        for i in range(n):
            name = f"{prefix}-{i}"
            port = free_port()
            proc = Proc(
                python_argv(
                    "-m", "gwfast._testbase.backend", "--port", str(port), "--replica", name
                ),
                env=_repo_env(),
                cwd=REPO,
                log=self.workdir / f"backend-{name}-{port}.log",
            )
            backend = Backend(name, port, proc)
            self.started.append(backend)
            new.append(backend)
        for backend in new:
            wait_http_ok(f"{backend.base}/healthz", proc=backend.proc)
        return new

    def stop_all(self) -> None:
        for backend in self.started:
            backend.stop()

    def logs(self) -> str:
        return "\n".join(
            f"--- backend {b.name}:{b.port} ---\n{b.proc.output()[-3000:]}" for b in self.started
        )


def backend_config(
    endpoints: list[str],
    *,
    affinity: str = "session",
    placement: str = "random",
    health_path: str | None = "/healthz",
    health_interval: str = "1s",
) -> dict[str, Any]:
    """The gateway's configuration of one backend (a value of the `backends:` map)."""
    return {
        "affinity": affinity,
        "placement": placement,
        "health_check": {"path": health_path, "interval": health_interval, "timeout": "1s"},
        "endpoints": list(endpoints),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--replica", default=f"replica-{uuid.uuid4().hex[:6]}")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument(
        "--retry-interval-ms",
        type=int,
        default=500,
        help="SSE `retry:` the server announces (SEP-1699 polling)",
    )
    args = parser.parse_args(argv)
    app = build_app(args.replica, host=args.host, retry_interval_ms=args.retry_interval_ms)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, lifespan="on")


if __name__ == "__main__":
    main()
