"""A drop-in alias of Microsoft MCP Gateway's management API (`/adapters`) over our registry.

Scripts and the portal written for microsoft/mcp-gateway keep working against gwfast: an
adapter is a backend under another spelling, in the same registry as `/v1/backends` (an
adapter registered here lists there, and the other way round). The shapes follow its C#
contracts (`AdapterData`, `AdapterResource`, `AdapterStatus`, `ManagementController`):

  name → name, imageName[:imageVersion] → image, environmentVariables → env,
  replicaCount → replicas, description → description, requiredRoles → roles;
  useWorkloadIdentity is accepted and ignored (always false in answers).

Keys match case-insensitively (`ImageName` too), as ASP.NET's binder does.

Where we differ from it, on purpose:
- a missing adapter is 404 on every verb (it answers 400 on PUT and DELETE); a duplicate
  name is 409 (it answers 400); create is 201 with `Location: /adapters/NAME`, as it does;
- `replicaCount` is bounded (0..32, the service's bound: outside it is 400); unknown fields
  are 400 (it ignores them), except the response-only `id`, `createdBy`, `createdAt` and
  `lastUpdatedAt`, ignored so that a GET body can be PUT back;
- errors are the JSON `{"error": {"status", "message", "field"}}` of the REST API, with the
  adapter's field names;
- extension: `command` (a list of strings: a local process) or `url` (an existing MCP
  server) may stand in place of `imageName`; an `imageName` on the local orchestrator gets
  the service's error naming the Kubernetes orchestrator. A PUT that gives none of the three
  keeps what the adapter runs; its other backend fields (affinity, health check, tenants,
  ...) are kept too;
- answers omit `createdBy`, `createdAt` and `lastUpdatedAt`: the control API has no caller
  identity yet and the registry does not expose its timestamps. `status` adds `message`.
- `/adapters/{name}/logs?instance=N` answers text/plain (a JSON string when `Accept` asks
  only for JSON), like ASP.NET's `Ok(string)`.

The data plane serves MCP traffic at `/adapters/{name}/mcp` on its own port; here that path
answers 404 saying so.
"""

from __future__ import annotations

import shlex
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute

from control.service import Control, ControlError
from control.web import ANY, Resource, error_response, int_param, json_response, no_content
from control.web import read_json as _read_json

LOG_LINES = 1000  # what Microsoft's gateway tails from a pod

# adapter field → backend field (for error messages both ways)
_TO_SPEC = {
    "name": "name",
    "imageName": "image",
    "environmentVariables": "env",
    "replicaCount": "replicas",
    "description": "description",
    "requiredRoles": "roles",
    "command": "command",
    "url": "url",
}
_FROM_SPEC = {v: k for k, v in _TO_SPEC.items()}
_IGNORED = ("useWorkloadIdentity", "id", "createdBy", "createdAt", "lastUpdatedAt")
_KNOWN = {k.lower(): k for k in (*_TO_SPEC, "imageVersion", *_IGNORED)}


class AdapterData(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """The request body (Microsoft's AdapterData, plus `command` and `url`)."""

    name: str | None = None  # required on POST; on PUT it defaults to the path's
    image_name: str | None = None
    image_version: str | None = None
    environment_variables: dict[str, str] = {}
    replica_count: int = 1
    description: str = ""
    use_workload_identity: bool = False
    required_roles: list[str] = []
    command: list[str] | None = None
    url: str | None = None
    id: str | None = None
    created_by: str | None = None
    created_at: str | None = None
    last_updated_at: str | None = None


def _spec_error(e: ControlError) -> ControlError:
    """The service's error with the adapter's field names."""
    head, _, rest = e.field.partition(".")
    field = _FROM_SPEC.get(head, head) + (f".{rest}" if rest else "")
    message = e.message
    if e.field and message.startswith(f"{e.field}: "):
        message = f"{field}: {message[len(e.field) + 2 :]}"
    return ControlError(e.status, message, field)


async def _read(request: Request) -> AdapterData:
    raw = await _read_json(request)
    body: dict[str, Any] = {}
    for key, value in raw.items():
        known = _KNOWN.get(key.lower()) if isinstance(key, str) else None
        if known is None:
            raise ControlError(400, f"unknown field {key!r}", key)
        if known in body:
            raise ControlError(400, f"{known!r} is given twice", known)
        body[known] = value
    try:
        return msgspec.convert(body, AdapterData)
    except msgspec.ValidationError as e:
        message, _, at = str(e).partition(" - at `$.")
        field = at.rstrip("`").split("[")[0]
        raise ControlError(400, f"{field}: {message}" if field else message, field) from None


def _changes(data: AdapterData) -> dict[str, Any]:
    """The backend fields the adapter body sets (`image`/`command`/`url` only if given)."""
    out: dict[str, Any] = {
        "env": data.environment_variables,
        "replicas": data.replica_count,
        "description": data.description,
        "roles": data.required_roles,
    }
    if data.image_version is not None and data.image_name is None:
        raise ControlError(400, "imageVersion is given without imageName", "imageVersion")
    if data.image_name is not None:
        version = data.image_version
        out["image"] = f"{data.image_name}:{version}" if version else data.image_name
    if data.command is not None:
        out["command"] = data.command
    if data.url is not None:
        out["url"] = data.url
    return out


def _split_image(image: str) -> tuple[str, str | None]:
    """`repo/name:tag` → (`repo/name`, `tag`); a digest or no tag keeps the whole."""
    if "@" in image:
        return image, None
    head, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:  # `host:5000/name` is a registry port, not a tag
        return image, None
    return head, tag


def _adapter(backend: dict) -> dict:
    """A backend (as the service answers) as Microsoft's AdapterResource."""
    image_name, image_version = (
        _split_image(backend["image"]) if backend.get("image") else (None, None)
    )
    out = {
        "id": backend["name"],
        "name": backend["name"],
        "imageName": image_name,
        "imageVersion": image_version,
        "environmentVariables": backend["env"],
        "replicaCount": backend["replicas"],
        "description": backend["description"],
        "useWorkloadIdentity": False,
        "requiredRoles": backend["roles"],
    }
    if backend.get("command") is not None:
        out["command"] = backend["command"]
    if backend.get("url") is not None:
        out["url"] = backend["url"]
    return out


def _status(st: dict) -> dict:
    """The service's status as Microsoft's AdapterStatus (its StatefulSet's counters)."""
    wanted, ready = st["replicas"], st["ready_replicas"]
    image = st.get("image") or (shlex.join(st["command"]) if st.get("command") else st["url"])
    return {
        "readyReplicas": ready,
        # replicas running the current registration (the StatefulSet's current revision)
        "updatedReplicas": len(
            {r["replica"] for r in st["replica_status"] if r["state"] != "stopping"}
        ),
        "availableReplicas": ready,
        "image": image,
        # Microsoft's words: ready == wanted is Healthy, else "Degraded: n/m ready"
        "replicaStatus": "Healthy" if ready == wanted else f"Degraded: {ready}/{wanted} ready",
        "message": st["message"],
    }


def _not_found(name: str) -> ControlError:
    return ControlError(404, f"adapter {name!r} does not exist (GET /adapters lists them)")


def adapter_routes(control: Control) -> list[BaseRoute]:
    """`/adapters` and `/adapters/{name}[/status|/logs]`; `/adapters/{name}/mcp` → 404."""

    def existing(name: str) -> dict:
        try:
            return control.get_backend(name)
        except ControlError as e:
            raise (_not_found(name) if e.status == 404 else _spec_error(e)) from None

    def call(fn, *args):  # type: ignore[no-untyped-def]
        try:
            return fn(*args)
        except ControlError as e:
            raise _spec_error(e) from None

    async def list_adapters(request: Request) -> Response:
        return json_response([_adapter(b) for b in control.list_backends()])

    async def create(request: Request) -> Response:
        data = await _read(request)
        if data.name is None:
            raise ControlError(400, "name is missing", "name")
        try:
            out = control.register({"name": data.name, **_changes(data)})
        except ControlError as e:
            if e.status == 409:
                raise ControlError(
                    409,
                    f"adapter {data.name!r} already exists: PUT /adapters/{data.name} to "
                    "update it, or DELETE it first",
                    "name",
                ) from None
            raise _spec_error(e) from None
        return json_response(_adapter(out), 201, {"Location": f"/adapters/{out['name']}"})

    async def get(request: Request) -> Response:
        return json_response(_adapter(existing(request.path_params["name"])))

    async def update(request: Request) -> Response:
        name = request.path_params["name"]
        existing(name)
        data = await _read(request)
        if data.name is not None and data.name != name:
            raise ControlError(400, "the adapter name in the URL and the body must match", "name")
        return json_response(_adapter(call(control.update, name, _changes(data))))

    async def delete(request: Request) -> Response:
        name = request.path_params["name"]
        existing(name)
        call(control.unregister, name)
        return no_content()

    async def status(request: Request) -> Response:
        name = request.path_params["name"]
        existing(name)
        return json_response(_status(call(control.status, name)))

    async def logs(request: Request) -> Response:
        name = request.path_params["name"]
        existing(name)
        instance = int_param(request, "instance", 0)
        try:
            out = await control.logs(name, instance, LOG_LINES)
        except ControlError as e:
            raise _spec_error(e) from None
        text = "".join(f"{line}\n" for line in out["lines"])
        accept = request.headers.get("accept", "")
        if "application/json" in accept and "text/plain" not in accept:
            return json_response(text)
        return PlainTextResponse(text)

    async def mcp(request: Request) -> Response:
        name = request.path_params["name"]
        return error_response(
            404,
            f"this is the control API: MCP traffic for adapter {name!r} goes to the gateway's "
            f"own port (the data plane), at /adapters/{name}/mcp or /{name}/mcp there",
        )

    return [
        Resource("/adapters", {"GET": list_adapters, "POST": create}),
        Resource("/adapters/{name}", {"GET": get, "PUT": update, "DELETE": delete}),
        Resource("/adapters/{name}/status", {"GET": status}),
        Resource("/adapters/{name}/logs", {"GET": logs}),
        Resource("/adapters/{name}/mcp", {ANY: mcp}, include_in_schema=False),
    ]
