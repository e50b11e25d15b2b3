"""HTTP plumbing shared by the REST API (`control.api`) and the `/adapters` alias.

Why a module of its own: both APIs must answer errors the same way, and the answers must not
depend on how the app that mounts them is configured. So each route here carries its own:
- every `ControlError` becomes its status with `ControlError.to_dict()` as the JSON body;
- an unexpected exception becomes a 500 JSON body, logged with its traceback on
  "gwfast.control", and the process keeps serving;
- a method the path does not take gets 405 JSON with `Allow` (RFC 9110 §15.5.6);
- bodies are read with a 1 MiB cap (413), must say `Content-Type: application/json` (415)
  and be JSON (400 says so);
- `LoopbackOnly` wraps the whole app: a Host or an Origin that is not this loopback
  listener's is refused (421, 403).
`error_handlers()` gives the same shapes to the app's own 404/405/500 (paths no route
matches), for `Starlette(exception_handlers=...)`.

Path parameters are matched against the raw (still percent-encoded) path: ``%2F`` in a
segment is data (RFC 3986 §3.3), so ``/v1/backends/..%2Fetc`` reaches the handler with the
name ``../etc`` and the service answers 400 for the invalid name, instead of the decoded
path ``/v1/backends/../etc`` matching nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from control.service import ControlError

log = logging.getLogger("gwfast.control")

MAX_BODY = 1 << 20  # bytes: a registration is a few hundred; 1 MiB is generous
ANY = "*"  # a handler for every method

Handler = Callable[[Request], Awaitable[Response]]
_encode = msgspec.json.Encoder().encode
_JSON_KINDS = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


def json_response(
    value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(_encode(value), status, headers, media_type="application/json")


def error_response(
    status: int, message: str, field: str = "", headers: Mapping[str, str] | None = None
) -> Response:
    return json_response(ControlError(status, message, field).to_dict(), status, headers)


def no_content() -> Response:
    return Response(status_code=204)


class Resource(Route):
    """One path with one handler per method (`ANY`: every method); see the module docstring
    for what it answers on its own."""

    def __init__(
        self,
        path: str,
        handlers: Mapping[str, Handler],
        *,
        name: str = "",
        include_in_schema: bool = True,
    ) -> None:
        self.handlers = {m.upper(): h for m, h in handlers.items()}
        if "GET" in self.handlers:
            self.handlers.setdefault("HEAD", self.handlers["GET"])
        methods = None if ANY in self.handlers else list(self.handlers)
        super().__init__(
            path,
            self._dispatch,
            methods=methods,
            name=name or path,
            include_in_schema=include_in_schema,
        )
        self.allow = ", ".join(sorted(self.handlers))

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if not raw:
            return super().matches(scope)
        match, child = super().matches({**scope, "path": raw.decode("latin-1")})
        if match is not Match.NONE:
            params = child["path_params"]
            for key in self.param_convertors:  # ours only: a mount's are decoded already
                if isinstance(params.get(key), str):
                    params[key] = unquote(params[key])  # bad UTF-8: U+FFFD, an invalid name
        return match, child

    async def handle(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await self.app(scope, receive, send)  # 405 is _dispatch's, with a JSON body

    async def _dispatch(self, request: Request) -> Response:
        handler = self.handlers.get(request.method) or self.handlers.get(ANY)
        if handler is None:
            return error_response(
                405,
                f"{request.method} is not allowed on {self.path}: use {self.allow}",
                headers={"Allow": self.allow},
            )
        try:
            return await handler(request)
        except ControlError as e:
            headers = {"Connection": "close"} if e.status == 413 else None
            return json_response(e.to_dict(), e.status, headers)
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return error_response(500, "internal error (the control process logged it)")


async def read_json(request: Request, *, object_only: bool = True) -> Any:
    """The body as JSON, at most `MAX_BODY` bytes; ControlError (field "body") otherwise.

    The content type must be JSON: a web page may send a form or text/plain to any origin
    without asking, but not application/json (the browser asks first, with a preflight this
    API never grants), so a page the operator visits cannot register a command here."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise ControlError(
            415,
            f"send the body as Content-Type: application/json (got {ctype or 'none'}; "
            "with curl: -H 'Content-Type: application/json')",
            "body",
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise ControlError(413, f"the body is {length} bytes: at most {MAX_BODY} (1 MiB)", "body")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ControlError(413, f"the body is over {MAX_BODY} bytes (1 MiB)", "body")
    if not body.strip():
        raise ControlError(400, "the body is empty: send a JSON object", "body")
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError as e:
        raise ControlError(400, f"the body is not JSON ({e}): send a JSON object", "body") from None
    if object_only and not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), "a number")
        raise ControlError(400, f"the body must be a JSON object, not {kind}", "body")
    return value


def int_param(
    request: Request, name: str, default: int | None, *, lo: int = 0, hi: int = 1 << 31
) -> int | None:
    """A whole-number query parameter within [lo, hi]; ControlError naming it otherwise."""
    raw = request.query_params.get(name)
    if raw is None or (raw == "" and default is not None):
        return default
    text = raw.strip()
    if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 20:
        raise ControlError(400, f"{name} must be a whole number, not {raw!r}", name)
    value = int(text)
    if not lo <= value <= hi:
        raise ControlError(400, f"{name} must be between {lo} and {hi}", name)
    return value


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = (
            f"no such path {request.url.path!r} on the control API: the REST API is under "
            "/v1/ (GET /v1/openapi.json describes it), the Microsoft MCP Gateway alias under "
            "/adapters"
        )
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette's ServerErrorMiddleware logs nothing itself: it re-raises for the server
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error (the control process logged it)")


def error_handlers() -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    """For `Starlette(exception_handlers=error_handlers())`: JSON 404/405/500 on paths no
    route of ours matches (ours answer their own)."""
    return {HTTPException: _http_error, Exception: _server_error}


LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


class LoopbackOnly:
    """Guards an API that runs commands on this machine and listens on loopback. A Host that
    names another machine is how DNS rebinding reaches a loopback port from a web page
    (421); an Origin of another host is a page's cross-site request (403). Tools without a
    browser (curl, the CLI, scripts) send a loopback Host and no Origin."""

    def __init__(self, app: ASGIApp, *, host: str) -> None:
        self.app = app
        self.names = LOOPBACK_NAMES | {host.strip("[]").lower()}

    def _host_ok(self, value: str) -> bool:
        name = value.rsplit("]", 1)[0].lstrip("[") if value.startswith("[") else value
        if not value.startswith("["):
            name = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
        return name.lower() in self.names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            host, origin = headers.get("host", ""), headers.get("origin")
            if not self._host_ok(host):
                response = error_response(
                    421,
                    f"Host {host!r} is not this control API's: it answers only loopback names "
                    "(127.0.0.1, localhost, [::1]); a foreign Host is how DNS rebinding reaches it",
                    "host",
                )
                return await response(scope, receive, send)
            if origin is not None and (urlsplit(origin).hostname or "").lower() not in self.names:
                response = error_response(
                    403,
                    f"cross-site request from {origin!r} refused: the control API takes requests "
                    "from tools on this machine, not from web pages",
                    "origin",
                )
                return await response(scope, receive, send)
        await self.app(scope, receive, send)
