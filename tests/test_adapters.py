"""The `/adapters` alias of Microsoft MCP Gateway's management API, over real HTTP.

Driven with the request bodies of microsoft/mcp-gateway's README and C# contracts
(`AdapterData`), against the same registry as `/v1/backends` (tests/control_app.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from control_app import App, quick_command
from control_app import error_of as _error

from gwfast._testbase.backend import Backend, BackendFactory

# microsoft/mcp-gateway README, "Deploy an MCP server"
MICROSOFT_BODY = {
    "name": "mcp-example",
    "imageName": "mcp-example",
    "imageVersion": "1.0.0",
    "environmentVariables": {"ENV_VAR_NAME": "value"},
    "replicaCount": 1,
    "description": "test",
}
LOCAL_BODY = {k: v for k, v in MICROSOFT_BODY.items() if k not in ("imageName", "imageVersion")} | {
    "command": quick_command("adapter")
}
RESOURCE_KEYS = {
    "id",
    "name",
    "imageName",
    "imageVersion",
    "environmentVariables",
    "replicaCount",
    "description",
    "useWorkloadIdentity",
    "requiredRoles",
}
STATUS_KEYS = {
    "readyReplicas",
    "updatedReplicas",
    "availableReplicas",
    "image",
    "replicaStatus",
    "message",
}


@pytest.fixture(scope="module")
def mcp_backend(backend_factory: BackendFactory) -> Backend:
    [backend] = backend_factory.start(1, prefix="adapter")
    return backend


async def _status_until(app: App, name: str, ready: int, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = await app.ok("GET", f"/adapters/{name}/status")
        if st["readyReplicas"] == ready and st["replicaStatus"] == "Healthy":
            return st
        assert time.monotonic() < deadline, st
        await asyncio.sleep(0.05)


async def test_image_needs_kubernetes(app: App) -> None:
    err = _error(await app.call("POST", "/adapters", MICROSOFT_BODY), 400, "imageName")
    assert "Kubernetes" in err["message"]
    assert await app.ok("GET", "/adapters") == []
    assert await app.ok("GET", "/v1/backends") == []


async def test_adapter_lifecycle(app: App) -> None:
    r = await app.call("POST", "/adapters", LOCAL_BODY)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/adapters/mcp-example"
    created = r.json()
    assert RESOURCE_KEYS <= created.keys() <= RESOURCE_KEYS | {"command", "url"}
    assert created["id"] == created["name"] == "mcp-example"
    assert created["environmentVariables"] == {"ENV_VAR_NAME": "value"}
    assert created["replicaCount"] == 1 and created["description"] == "test"
    assert created["imageName"] is None and created["command"] == LOCAL_BODY["command"]
    assert created["useWorkloadIdentity"] is False and created["requiredRoles"] == []

    # one registry: the adapter is a backend
    [backend] = await app.ok("GET", "/v1/backends")
    assert backend["name"] == "mcp-example" and backend["env"] == {"ENV_VAR_NAME": "value"}
    assert await app.ok("GET", "/adapters") == [created]
    assert await app.ok("GET", "/adapters/mcp-example") == created

    st = await _status_until(app, "mcp-example", 1)
    assert st.keys() == STATUS_KEYS
    assert st["image"].startswith(LOCAL_BODY["command"][0])
    assert st["updatedReplicas"] == st["availableReplicas"] == 1

    # scale: PUT the adapter back with another replicaCount
    again = {**created, "replicaCount": 2}
    out = await app.ok("PUT", "/adapters/mcp-example", again)
    assert out["replicaCount"] == 2 and out["command"] == LOCAL_BODY["command"]
    degraded = await app.ok("GET", "/adapters/mcp-example/status")
    assert degraded["replicaStatus"] in (
        "Healthy",
        f"Degraded: {degraded['readyReplicas']}/2 ready",
    )
    st = await _status_until(app, "mcp-example", 2)
    assert st["updatedReplicas"] == 2
    assert (await app.ok("GET", "/v1/backends/mcp-example"))["replicas"] == 2

    r = await app.call("GET", "/adapters/mcp-example/logs", params={"instance": 1})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "replica up adapter" in r.text
    r = await app.call("GET", "/adapters/mcp-example/logs", headers={"Accept": "application/json"})
    assert r.headers["content-type"] == "application/json" and "replica up" in r.json()
    _error(await app.call("GET", "/adapters/mcp-example/logs?instance=5"), 404, words="replica 5")
    _error(await app.call("GET", "/adapters/mcp-example/logs?instance=x"), 400, "instance")

    r = await app.call("DELETE", "/adapters/mcp-example")
    assert r.status_code == 204 and r.content == b""
    for method, path in [
        ("GET", "/adapters/mcp-example"),
        ("PUT", "/adapters/mcp-example"),
        ("DELETE", "/adapters/mcp-example"),
        ("GET", "/adapters/mcp-example/status"),
        ("GET", "/adapters/mcp-example/logs"),
    ]:
        body = LOCAL_BODY if method == "PUT" else None
        _error(await app.call(method, path, body), 404, words="adapter 'mcp-example' does not")
    assert await app.ok("GET", "/adapters") == []


async def test_url_adapter_and_put_keeps_backend_fields(app: App, mcp_backend: Backend) -> None:
    body = {"name": "remote", "url": mcp_backend.url, "requiredRoles": ["mcp.engineer"]}
    r = await app.call("POST", "/adapters", body)
    assert r.status_code == 201, r.text
    assert r.json()["url"] == mcp_backend.url and r.json()["requiredRoles"] == ["mcp.engineer"]
    await app.ok("PATCH", "/v1/backends/remote", {"affinity": "none", "placement": "tenant"})
    st = await _status_until(app, "remote", 1)
    assert st["image"] == mcp_backend.url

    # Microsoft's portal PUTs its form back: no url/command/imageName keeps what it runs
    out = await app.ok("PUT", "/adapters/remote", {"name": "remote", "description": "edited"})
    assert out["url"] == mcp_backend.url and out["description"] == "edited"
    assert out["requiredRoles"] == []  # a PUT replaces the adapter's own fields
    kept = await app.ok("GET", "/v1/backends/remote")
    assert kept["affinity"] == "none" and kept["placement"] == "tenant"

    # keys match case-insensitively, as ASP.NET's binder does
    out = await app.ok("PUT", "/adapters/remote", {"Name": "remote", "Description": "pascal"})
    assert out["description"] == "pascal"


async def _rejected(app: App, method: str, path: str, status: int, field: str, **kw: Any) -> None:
    before = await app.ok("GET", "/adapters"), await app.version()
    _error(await app.call(method, path, **kw), status, field)
    assert (await app.ok("GET", "/adapters"), await app.version()) == before, (path, kw)


async def test_bad_adapters_change_nothing(app: App) -> None:
    await app.ok("POST", "/adapters", LOCAL_BODY)
    await _status_until(app, "mcp-example", 1)
    dup = {**LOCAL_BODY}
    await _rejected(app, "POST", "/adapters", 409, "name", json=dup)
    for changes, field in [
        ({"replicaCount": -1}, "replicaCount"),
        ({"replicaCount": 33}, "replicaCount"),
        ({"replicaCount": "3"}, "replicaCount"),
        ({"replicaCount": True}, "replicaCount"),
        ({"environmentVariables": {"PORT": "1"}}, "environmentVariables.PORT"),
        ({"environmentVariables": ["x"]}, "environmentVariables"),
        ({"bogus": 1}, "bogus"),
        ({"imageVersion": "1.0.0"}, "imageVersion"),
        ({"imageName": "x", "imageVersion": "1"}, "command"),  # two runtimes
        ({"useWorkloadIdentity": "yes"}, "useWorkloadIdentity"),
        ({"name": "Upper"}, "name"),
        ({"name": "a" * 53}, "name"),
        ({"name": ""}, "name"),
        ({"name": "../etc"}, "name"),
    ]:
        body = {**LOCAL_BODY, "name": "other", **changes}
        await _rejected(app, "POST", "/adapters", 400, field, json=body)
        if "name" not in changes:
            put = {**LOCAL_BODY, **changes}
            await _rejected(app, "PUT", "/adapters/mcp-example", 400, field, json=put)
    await _rejected(app, "POST", "/adapters", 400, "name", json={"command": ["x"]})
    await _rejected(app, "POST", "/adapters", 400, "name", json={**LOCAL_BODY, "NAME": "x"})
    await _rejected(app, "PUT", "/adapters/mcp-example", 400, "name", json={"name": "other"})
    await _rejected(app, "POST", "/adapters", 400, "body", content=b"name=x")
    await _rejected(app, "POST", "/adapters", 400, "body", json=[LOCAL_BODY])
    await _rejected(app, "POST", "/adapters", 413, "body", content=b" " * (2 << 20))
    await _rejected(app, "GET", "/adapters/..%2F..%2Fetc", 400, "name")
    await _rejected(app, "DELETE", "/adapters/..%2F..%2Fetc", 400, "name")
    await _rejected(app, "PUT", "/adapters/missing", 404, "", json=LOCAL_BODY)
    await _rejected(app, "DELETE", "/adapters/missing", 404, "")
    await _rejected(app, "PATCH", "/adapters/mcp-example", 405, "", json={})


async def test_mcp_path_points_to_the_gateway(app: App) -> None:
    for method in ("POST", "GET", "DELETE"):
        err = _error(await app.call(method, "/adapters/mcp-example/mcp"), 404)
        assert (
            "gateway's own port" in err["message"] and "/adapters/mcp-example/mcp" in err["message"]
        )
