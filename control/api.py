"""The control process's REST API under `/v1/`: thin handlers over `control.service.Control`.

The handlers only move HTTP in and out: parse the path, query and body, call one `Control`
operation, pick the status. Validation and its messages live in the service (so REST, the
`/adapters` alias, the MCP tools and the CLI cannot drift apart); the error shapes, the body
cap and the 405s in `control.web`. `GET /v1/snapshot` is the long-poll of `gwfast.wire`,
which the data plane workers follow. The document at `/v1/openapi.json` is generated
(`control.openapi`); a test checks it lists exactly these routes.
"""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from control.openapi import document_json
from control.publish import Publisher
from control.service import MAX_LOG_LINES, Control, ControlError
from control.web import (
    ANY,
    Resource,
    error_response,
    int_param,
    json_response,
    no_content,
    read_json,
)
from gwfast import wire

_QUOTA_FIELDS = ("requests", "period")


def _wait(request: Request) -> float:
    raw = request.query_params.get("wait", "0")
    try:
        seconds = wire.parse_duration(raw)
    except ValueError as e:
        raise ControlError(400, f"wait: {e}", "wait") from None
    if not math.isfinite(seconds):
        raise ControlError(400, "wait must be a number of seconds", "wait")
    return min(seconds, wire.MAX_WAIT)  # the protocol's bound: a longer wait is cut


def rest_routes(control: Control, publisher: Publisher) -> list[BaseRoute]:
    """Every `/v1/` route, `/healthz`, and last a `/v1/...` catch-all answering 404 JSON:
    mount these before any other route under `/v1/`."""

    def name(request: Request) -> str:
        return request.path_params["name"]

    def tenant(request: Request) -> str:
        return request.path_params["tenant_id"]

    # -- backends --
    async def list_backends(request: Request) -> Response:
        return json_response(control.list_backends())

    async def register(request: Request) -> Response:
        out = control.register(await read_json(request))
        return json_response(out, 201, {"Location": f"/v1/backends/{out['name']}"})

    async def get_backend(request: Request) -> Response:
        return json_response(control.get_backend(name(request)))

    async def replace(request: Request) -> Response:
        n = name(request)
        control.get_backend(n)  # 404 before the body is judged
        return json_response(control.replace(n, await read_json(request)))

    async def update(request: Request) -> Response:
        n = name(request)
        control.get_backend(n)
        return json_response(control.update(n, await read_json(request)))

    async def unregister(request: Request) -> Response:
        control.unregister(name(request))
        return no_content()

    async def status(request: Request) -> Response:
        return json_response(control.status(name(request)))

    async def logs(request: Request) -> Response:
        n = name(request)
        control.get_backend(n)
        replica = int_param(request, "replica", None)
        lines = int_param(request, "lines", 100, lo=1, hi=MAX_LOG_LINES)
        return json_response(await control.logs(n, replica, lines))

    # -- tenants --
    async def list_tenants(request: Request) -> Response:
        return json_response(control.list_tenants())

    async def get_tenant(request: Request) -> Response:
        return json_response(control.get_tenant(tenant(request)))

    async def put_tenant(request: Request) -> Response:
        tid = tenant(request)
        out, created = control.put_tenant(tid, await read_json(request))
        if created:
            return json_response(out, 201, {"Location": f"/v1/tenants/{tid}"})
        return json_response(out)

    async def remove_tenant(request: Request) -> Response:
        control.remove_tenant(tenant(request))
        return no_content()

    async def get_quota(request: Request) -> Response:
        return json_response(control.tenant_quota(tenant(request)))

    async def put_quota(request: Request) -> Response:
        tid = tenant(request)
        control.tenant_quota(tid)  # an invalid tenant id first
        body = await read_json(request)
        for key in body:
            if key not in _QUOTA_FIELDS:
                raise ControlError(
                    400, f"unknown field {key!r}: a quota is requests and period", f"quota.{key}"
                )
        for key in _QUOTA_FIELDS:
            if key not in body:
                raise ControlError(
                    400,
                    f'quota.{key} is missing: give requests and period, e.g. {{"requests": '
                    '1000, "period": "1h"}',
                    f"quota.{key}",
                )
        return json_response(control.tenant_quota(tid, body["requests"], body["period"]))

    # -- the data plane's long-poll (gwfast.wire) --
    async def snapshot(request: Request) -> Response:
        have = int_param(request, "have", None, lo=-(1 << 63), hi=(1 << 63) - 1)
        wait = _wait(request)
        current = await publisher.wait(have, wait)
        if current is None:
            if publisher.closed:
                return error_response(
                    503, "the control process is stopping: retry", headers={"Retry-After": "1"}
                )
            if publisher.current is None:
                return error_response(
                    503,
                    "no snapshot published yet (the control process is starting): retry",
                    headers={"Retry-After": "1"},
                )
            return Response(status_code=304)
        return Response(publisher.body, media_type="application/json")

    async def openapi(request: Request) -> Response:
        return Response(document_json(), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def not_found(request: Request) -> Response:
        path = request.url.path
        hint = " (without the trailing slash?)" if path.endswith("/") else ""
        return error_response(
            404, f"no such path {path!r}{hint}: GET /v1/openapi.json lists the API's paths"
        )

    return [
        Resource("/v1/backends", {"GET": list_backends, "POST": register}),
        Resource(
            "/v1/backends/{name}",
            {"GET": get_backend, "PUT": replace, "PATCH": update, "DELETE": unregister},
        ),
        Resource("/v1/backends/{name}/status", {"GET": status}),
        Resource("/v1/backends/{name}/logs", {"GET": logs}),
        Resource("/v1/tenants", {"GET": list_tenants}),
        Resource(
            "/v1/tenants/{tenant_id}",
            {"GET": get_tenant, "PUT": put_tenant, "DELETE": remove_tenant},
        ),
        Resource("/v1/tenants/{tenant_id}/quota", {"GET": get_quota, "PUT": put_quota}),
        Resource(wire.SNAPSHOT_PATH, {"GET": snapshot}),
        Resource("/v1/openapi.json", {"GET": openapi}),
        Resource("/healthz", {"GET": healthz}),
        Resource("/v1/{rest:path}", {ANY: not_found}, include_in_schema=False),
    ]
