"""The control process's operations as MCP tools, over Streamable HTTP (`/mcp`) and stdio.

A model (or any MCP client) manages the gateway with the same operations as the REST API:
each tool calls one `control.service.Control` method and returns its dict as structured
content. A `ControlError` becomes a tool error (`is_error=True`) carrying the service's
message, so the model reads what to fix; arguments of the wrong type or unknown arguments
are tool errors too, never a crash of the server.

Over stdio (`mcp-gateway serve` started by an MCP client) stdout carries MCP only: the SDK's
stdio transport points fd 1 at stderr while it serves, and every log goes to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import ToolAnnotations
from pydantic import ConfigDict, Field, StrictBool, StrictInt, ValidationError, WithJsonSchema
from starlette.routing import BaseRoute
from typing_extensions import TypedDict

from control.service import Control, ControlError

log = logging.getLogger("gwfast.control")

_MAX_LINE = 64 << 20  # one JSON-RPC message on stdio (a line); the SDK's HTTP limit is 4 MiB

INSTRUCTIONS = """\
These tools manage a gwfast MCP gateway: the MCP servers (backends) it routes to, and the
tenants' request quotas. Each registered backend is reachable through the gateway at
/{name}/mcp. A backend is exactly one of: a local process (`command`, an argv list; gwfast
starts `replicas` copies, each with its own PORT, restarts them and checks their health), an
existing server (`url`), or a container (`image`, Kubernetes only).

Typical flow: list_backends; register_backend; backend_status until every replica is ready
(backend_logs when one is not); scale_backend to change the replica count;
unregister_backend to stop and remove one. tenant_quota inspects or sets a tenant's quota
(e.g. 1000 requests per "1h"). An error result says what was wrong and how to fix it;
nothing was changed when a call fails."""

_NAME = "the backend's name: a DNS-1123 label (lowercase letters, digits and '-', at most 52)"
_Name = Annotated[str, Field(description=_NAME)]
_Replicas = Annotated[StrictInt, Field(description="how many replicas to run, 0 to 32")]
# a number of seconds or a string like "5s": the service validates it (and says how to fix it)
_DURATION_SCHEMA = {"anyOf": [{"type": "string"}, {"type": "number"}]}


def _duration(description: str) -> Any:
    return Annotated[Any, WithJsonSchema(_DURATION_SCHEMA), Field(description=description)]


class HealthCheck(TypedDict, total=False):
    """How gwfast checks each replica; every key is optional."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    path: Annotated[
        str | None,
        Field(description='GET path, any 2xx is healthy (default "/healthz"); null: TCP'),
    ]
    interval: _duration('between checks: seconds or e.g. "5s" (default)')
    timeout: _duration('of one check: seconds or e.g. "2s" (default)')
    healthy_threshold: Annotated[StrictInt, Field(description="passes to become healthy (1)")]
    unhealthy_threshold: Annotated[StrictInt, Field(description="failures to be unhealthy (2)")]
    panic: Annotated[
        StrictBool, Field(description="when every replica fails, route to those that connect")
    ]


@contextlib.contextmanager
def _reported() -> Iterator[None]:
    """The service's refusal as the tool's error text (the SDK sets `is_error`)."""
    try:
        yield
    except ControlError as e:
        raise ToolError(e.message) from e


def _explain(tool: str, e: ValidationError) -> str:
    """Pydantic's errors in one line per argument, without its URLs."""
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        got = err.get("input")
        shown = f" (got {got!r})" if err["type"] != "missing" and not isinstance(got, dict) else ""
        parts.append(f"{where}: {err['msg']}{shown}")
    return f"invalid arguments to {tool}: " + "; ".join(parts)


class _AdminServer(MCPServer):
    """Refuses unknown argument names (a typo would otherwise be dropped silently) and words
    type errors readably."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        for tool in await self.list_tools():
            if tool.name == name:
                known = tool.input_schema.get("properties", {})
                unknown = sorted(set(arguments) - set(known))
                if unknown:
                    raise ToolError(
                        f"unknown argument{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))}: {name} takes "
                        f"{', '.join(known) or 'no arguments'}"
                    )
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as e:
            # the SDK prefixes "Error executing tool NAME: "; the service's words stand alone
            cause = e.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(_explain(name, cause)) from cause
            if isinstance(cause, ToolError) and isinstance(cause.__cause__, ControlError):
                raise ToolError(cause.__cause__.message) from cause.__cause__
            raise


def admin_server(control: Control) -> MCPServer:
    """The MCP admin tools over `control` (serve it with `serve_stdio` or
    `streamable_http_routes`)."""
    server = _AdminServer("gwfast", instructions=INSTRUCTIONS)
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    # Every tool is async: the service runs on the event loop's thread (SQLite, one thread).
    @server.tool(annotations=read_only)
    async def list_backends() -> list[dict[str, Any]]:
        """List every registered backend with its state (structured as {"result": [...]}).

        Each entry has the registration (name, command/url/image, replicas, ...) plus `kind`,
        `ready_replicas`, `state` ("ready", "degraded": some replicas ready, "unavailable")
        and `route` (the gateway path clients use, e.g. "/everything/mcp").
        """
        with _reported():
            return control.list_backends()

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=False))
    async def register_backend(
        name: _Name,
        command: Annotated[
            list[str] | None,
            Field(description='argv of a local MCP server, e.g. ["npx", "-y", "pkg"]'),
        ] = None,
        url: Annotated[
            str | None,
            Field(description="an existing MCP endpoint, e.g. http://127.0.0.1:9001/mcp"),
        ] = None,
        image: Annotated[str | None, Field(description="a container image (Kubernetes)")] = None,
        env: Annotated[
            dict[str, str] | None,
            Field(description="environment of each replica; PORT is set by gwfast"),
        ] = None,
        replicas: Annotated[StrictInt | None, Field(description="0 to 32 (default 1)")] = None,
        port: Annotated[StrictInt | None, Field(description="the container's port (image)")] = None,
        path: Annotated[
            str | None, Field(description='the MCP path on each replica (default "/mcp")')
        ] = None,
        health_check: HealthCheck | None = None,
        affinity: Annotated[
            Literal["session", "none"] | None,
            Field(description='"session" (default: a session sticks to one replica) or "none"'),
        ] = None,
        placement: Annotated[
            str | None,
            Field(
                description='new sessions: "random" (default), "principal", "tenant" or '
                '"header:NAME"'
            ),
        ] = None,
        tenants: Annotated[
            list[str] | None, Field(description="tenants allowed to use it (default: all)")
        ] = None,
        roles: Annotated[
            list[str] | None, Field(description="roles allowed to use it (default: all)")
        ] = None,
        description: Annotated[str | None, Field(description="free text for people")] = None,
    ) -> dict[str, Any]:
        """Register an MCP backend: gwfast starts it (command) or routes to it (url).

        Give `name` and exactly one of `command`, `url` or `image`. `{port}` inside
        `command` is replaced by the replica's port, which is also in the PORT variable.
        Returns the registration with its state; replicas start in the background, so
        follow with backend_status. A name already registered is refused (unregister it
        first, or use scale_backend to change the replica count).

        Examples:
          {"name": "everything", "command": ["npx", "-y",
           "@modelcontextprotocol/server-everything", "streamableHttp"], "replicas": 2}
          {"name": "search", "url": "http://127.0.0.1:9001/mcp",
           "health_check": {"path": null}}
        """
        given = {
            "name": name,
            "command": command,
            "url": url,
            "image": image,
            "env": env,
            "replicas": replicas,
            "port": port,
            "path": path,
            "health_check": health_check,
            "affinity": affinity,
            "placement": placement,
            "tenants": tenants,
            "roles": roles,
            "description": description,
        }
        with _reported():
            return control.register({k: v for k, v in given.items() if v is not None})

    @server.tool(annotations=read_only)
    async def backend_status(name: _Name) -> dict[str, Any]:
        """One backend in detail: its registration, `state`, `message` (empty when every
        replica is ready, else what is wrong) and `replica_status`, one entry per replica
        with `state` (starting, ready, exited, stopping), `endpoint`, `pid`, `restarts`,
        `health` and `last_exit`. Example: {"name": "everything"}."""
        with _reported():
            return control.status(name)

    @server.tool(annotations=read_only)
    async def backend_logs(
        name: _Name,
        replica: Annotated[
            StrictInt | None, Field(description="one replica's index; omitted: all replicas")
        ] = None,
        lines: Annotated[
            StrictInt, Field(description="how many of the last lines, 1 to 10000")
        ] = 100,
    ) -> dict[str, Any]:
        """The last `lines` lines of output (stdout and stderr) of a backend's replicas,
        oldest first, to find out why a replica exited or is not ready.
        Example: {"name": "everything", "replica": 0, "lines": 50}."""
        with _reported():
            return await control.logs(name, replica, lines)

    @server.tool(annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=False))
    async def unregister_backend(name: _Name) -> dict[str, Any]:
        """Stop every replica of a backend and remove its registration; its route answers
        404 from then on. Example: {"name": "everything"}."""
        with _reported():
            return control.unregister(name)

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=True))
    async def scale_backend(name: _Name, replicas: _Replicas) -> dict[str, Any]:
        """Change how many replicas of a backend run (0 stops them all but keeps the
        registration). Sessions on removed replicas must re-initialize. Returns the backend
        with its state. Example: {"name": "everything", "replicas": 3}."""
        with _reported():
            return control.scale(name, replicas)

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=True))
    async def tenant_quota(
        tenant_id: Annotated[str, Field(description="the tenant, e.g. engineering")],
        requests: Annotated[
            StrictInt | None, Field(description="requests admitted per period, with `period`")
        ] = None,
        period: _duration('e.g. "1h", "30m", "60s", or seconds; with `requests`') = None,
    ) -> dict[str, Any]:
        """Inspect a tenant's request quota, or set it by giving both `requests` and
        `period` (the tenant is created if needed). Always returns the quota in force:
        {"tenant_id", "quota": {"requests", "period" (seconds), "period_text"} or null for
        no quota}. Examples: {"tenant_id": "engineering"} reads it;
        {"tenant_id": "engineering", "requests": 1000, "period": "1h"} sets 1000 per hour."""
        with _reported():
            return control.tenant_quota(tenant_id, requests, period)

    return server


class _Lines:
    """stdin as the SDK's stdio transport reads it (an async iterator of text lines), from a
    non-blocking pipe: unlike the SDK's reader thread, cancelling it (the control process
    stopping on SIGTERM) does not wait for the client to write or close."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        line = await self._reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class _Out:
    """stdout as the SDK's stdio transport writes it; a client that stopped reading drops
    what is left (stdin's end still ends the session)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        if not self._writer.is_closing():
            self._writer.write(text.encode())

    async def flush(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.drain()


def _is_pipe(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


@contextlib.contextmanager
def _claimed(fd: int, divert: Callable[[], int]) -> Iterator[int]:
    """A private duplicate of `fd` (the wire) while `fd` itself points at `divert()`, so
    neither stray prints nor children spawned meanwhile can touch the MCP stream."""
    private = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    other = divert()
    os.dup2(other, fd)
    os.close(other)
    try:
        yield private
    finally:
        with contextlib.suppress(OSError):
            os.set_blocking(private, True)  # it shares its flags with whoever else holds it
        os.dup2(private, fd)
        os.close(private)


async def serve_stdio(server: MCPServer) -> None:
    """Serve `server` on stdin/stdout in the running event loop; returns when the client
    closes stdin (or when cancelled, at once). While it serves, fd 0 reads /dev/null and fd 1
    writes to stderr, so nothing but MCP reaches stdout."""
    if not (_is_pipe(0) and _is_pipe(1)):  # e.g. files: the SDK's own (threaded) transport
        log.info("serving the MCP admin tools on stdio")
        await server.run_stdio_async()
        return
    loop = asyncio.get_running_loop()
    sys.stdout.flush()
    with (
        _claimed(0, lambda: os.open(os.devnull, os.O_RDONLY)) as fd_in,
        _claimed(1, lambda: os.dup(2)) as fd_out,
    ):
        reader = asyncio.StreamReader(limit=_MAX_LINE, loop=loop)
        rt, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop),
            open(fd_in, "rb", buffering=0, closefd=False),  # noqa: SIM115 - the transport's
        )
        wt, wp = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin,
            open(fd_out, "wb", buffering=0, closefd=False),  # noqa: SIM115 - the transport's
        )
        writer = asyncio.StreamWriter(wt, wp, None, loop)
        lowlevel = server._lowlevel_server  # noqa: SLF001 - run_stdio_async takes no streams
        log.info("serving the MCP admin tools on stdio")
        try:
            async with stdio_server(_Lines(reader), _Out(writer)) as (read, write):  # type: ignore[arg-type]
                await lowlevel.run(read, write, lowlevel.create_initialization_options())
        finally:
            rt.close()
            wt.close()
    log.info("MCP admin tools on stdio stopped (stdin closed)")


def _loopback_security(host: str, allowed_hosts: list[str] | None) -> TransportSecuritySettings:
    """DNS-rebinding protection (the listener runs commands on this machine): accept only
    Host headers naming the loopback addresses, `host`, and `allowed_hosts`."""
    names = ["127.0.0.1", "localhost", "[::1]"]
    bracketed = f"[{host}]" if ":" in host else host
    if host not in ("", "0.0.0.0", "::") and bracketed not in names:
        names.append(bracketed)
    names += allowed_hosts or []
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{n}:*" for n in names] + list(allowed_hosts or []),
        allowed_origins=[f"http://{n}:*" for n in names],
    )


def streamable_http_routes(
    server: MCPServer,
    *,
    host: str = "127.0.0.1",
    path: str = "/mcp",
    allowed_hosts: list[str] | None = None,
) -> tuple[list[BaseRoute], Callable[[Any], contextlib.AbstractAsyncContextManager[None]]]:
    """The routes serving `server` over Streamable HTTP (stateful sessions) at `path`, and
    the lifespan the Starlette app mounting them must run (`Starlette(lifespan=...)`).

    Call it once per app: the SDK's session manager runs once.
    """
    app = server.streamable_http_app(
        streamable_http_path=path,
        stateless_http=False,
        transport_security=_loopback_security(host, allowed_hosts),
        host=host,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        async with server.session_manager.run():
            yield

    return list(app.routes), lifespan
