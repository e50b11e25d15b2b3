"""The REST API under /v1/ over real HTTP: CRUD, bad input, the snapshot long-poll, OpenAPI.

Each test gets its own control process in this one (SQLite store, local orchestrator,
granian on a free port; tests/control_app.py). `url` backends point at a real MCP test
backend; `command` backends are quick local processes. Every rejected request is checked
to change nothing: the registry lists the same, and the published snapshot keeps its
version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from control_app import App, quick_command
from control_app import error_of as _error
from openapi_spec_validator import validate

from control import openapi
from control.api import rest_routes
from control.web import MAX_BODY, Resource
from gwfast import wire
from gwfast._testbase.backend import Backend, BackendFactory

TRAVERSAL = "..%2F..%2Fetc"


@pytest.fixture(scope="module")
def mcp_backend(backend_factory: BackendFactory) -> Backend:
    [backend] = backend_factory.start(1, prefix="api")
    return backend


async def _state(app: App) -> tuple[Any, Any, int]:
    backends = await app.ok("GET", "/v1/backends")
    tenants = await app.ok("GET", "/v1/tenants")
    return backends, tenants, await app.version()


async def _url_backend(app: App, backend: Backend, name: str = "remote") -> dict:
    out = await app.ok("POST", "/v1/backends", {"name": name, "url": backend.url})
    await app.wait_ready(name, 1)
    return out


# ----------------------------------------------------------------------------- backends


async def test_backend_lifecycle(app: App, mcp_backend: Backend) -> None:
    assert await app.ok("GET", "/v1/backends") == []
    r = await app.call("POST", "/v1/backends", {"name": "remote", "url": mcp_backend.url})
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/v1/backends/remote"
    created = msgspec.convert(r.json(), openapi.BackendInfo)
    assert created.url == mcp_backend.url and created.route == "/remote/mcp"
    st = await app.wait_ready("remote", 1)
    msgspec.convert(st, openapi.BackendStatus)
    assert st["state"] == "ready" and st["orchestrator"] == "local"
    [replica] = st["replica_status"]
    assert replica["endpoint"] == mcp_backend.url and replica["routable"]

    snap = wire.decode((await app.http.get("/v1/snapshot")).content)
    assert snap.backends["remote"].endpoints == [mcp_backend.url]

    listed = await app.ok("GET", "/v1/backends")
    assert [b["name"] for b in listed] == ["remote"]
    got = await app.ok("GET", "/v1/backends/remote")
    assert got["url"] == mcp_backend.url and got["ready_replicas"] == 1

    # PUT replaces the whole registration: what it does not give returns to its default
    await app.ok("PATCH", "/v1/backends/remote", {"affinity": "none"})
    put = await app.ok(
        "PUT", "/v1/backends/remote", {"url": mcp_backend.url, "description": "the remote one"}
    )
    assert put["description"] == "the remote one" and put["affinity"] == "session"
    assert (await app.ok("GET", "/v1/backends/remote"))["description"] == "the remote one"

    r = await app.call("DELETE", "/v1/backends/remote")
    assert r.status_code == 204 and r.content == b""
    _error(await app.call("GET", "/v1/backends/remote"), 404, words="not registered")
    _error(await app.call("GET", "/v1/backends/remote/status"), 404)
    _error(await app.call("DELETE", "/v1/backends/remote"), 404)
    assert await app.ok("GET", "/v1/backends") == []
    assert "remote" not in wire.decode((await app.http.get("/v1/snapshot")).content).backends


async def test_scale_status_and_logs(app: App) -> None:
    await app.ok("POST", "/v1/backends", {"name": "quick", "command": quick_command("q")})
    await app.wait_ready("quick", 1)
    out = await app.ok("PATCH", "/v1/backends/quick", {"replicas": 3})
    assert out["replicas"] == 3
    st = await app.wait_ready("quick", 3)
    assert sorted(r["replica"] for r in st["replica_status"]) == [0, 1, 2]
    assert all(r["pid"] for r in st["replica_status"])
    snap = wire.decode((await app.http.get("/v1/snapshot")).content)
    assert len(snap.backends["quick"].endpoints) == 3

    logs = await app.ok("GET", "/v1/backends/quick/logs", params={"replica": 2, "lines": 50})
    msgspec.convert(logs, openapi.BackendLogs)
    assert logs["replica"] == 2 and any("replica up q" in line for line in logs["lines"])
    every = await app.ok("GET", "/v1/backends/quick/logs")
    assert every["replica"] is None and len(every["lines"]) >= 3
    one = await app.ok("GET", "/v1/backends/quick/logs", params={"lines": 1})
    assert len(one["lines"]) == 1
    _error(await app.call("GET", "/v1/backends/quick/logs?replica=7"), 404, words="replica 7")

    await app.ok("PATCH", "/v1/backends/quick", {"replicas": 1})
    st = await app.wait_ready("quick", 1)
    assert [r["replica"] for r in st["replica_status"] if r["state"] == "ready"] == [0]


# ----------------------------------------------------------------------------- bad input


async def _rejected(app: App, method: str, path: str, status: int, field: str, **kw: Any) -> dict:
    """The request gets `status` naming `field`, and nothing changed."""
    before = await _state(app)
    err = _error(await app.call(method, path, **kw), status, field)
    assert await _state(app) == before, (method, path, kw)
    return err


async def test_bad_registrations_change_nothing(app: App, mcp_backend: Backend) -> None:
    await _url_backend(app, mcp_backend)
    cmd = quick_command()
    bad: list[tuple[Any, int, str]] = [
        ({"name": "x", "url": mcp_backend.url, "bogus": 1}, 400, "bogus"),
        ({"name": "Upper", "url": mcp_backend.url}, 400, "name"),
        ({"name": "..", "url": mcp_backend.url}, 400, "name"),
        ({"name": "a" * 53, "url": mcp_backend.url}, 400, "name"),
        ({"name": "", "url": mcp_backend.url}, 400, "name"),
        ({"name": "../etc", "url": mcp_backend.url}, 400, "name"),
        ({"url": mcp_backend.url}, 400, "name"),
        ({"name": "remote", "url": mcp_backend.url}, 409, "name"),
        ({"name": "x", "command": cmd, "replicas": -1}, 400, "replicas"),
        ({"name": "x", "command": cmd, "replicas": 33}, 400, "replicas"),
        ({"name": "x", "command": cmd, "replicas": "3"}, 400, "replicas"),
        ({"name": "x", "command": cmd, "replicas": True}, 400, "replicas"),
        ({"name": "x", "command": []}, 400, "command"),
        ({"name": "x"}, 400, "command"),
        ({"name": "x", "url": "ftp://h/x"}, 400, "url"),
        ({"name": "x", "command": cmd, "env": {"PORT": "1"}}, 400, "env.PORT"),
        ({"name": "x", "command": cmd, "affinity": "sticky"}, 400, "affinity"),
        (
            {"name": "x", "command": cmd, "health_check": {"interval": "soon"}},
            400,
            "health_check.interval",
        ),
    ]
    for body, status, field in bad:
        await _rejected(app, "POST", "/v1/backends", status, field, json=body)
    await _rejected(app, "POST", "/v1/backends", 400, "body", content=b"{not json")
    err = await _rejected(app, "POST", "/v1/backends", 400, "body", content=b"[1, 2]")
    assert "JSON object" in err["message"] and "array" in err["message"]
    await _rejected(app, "POST", "/v1/backends", 400, "body", content=b"")
    await _rejected(app, "POST", "/v1/backends", 400, "body", content=b"\xff\xfe")
    big = b'{"name": "x", "description": "' + b"a" * MAX_BODY + b'"}'
    await _rejected(app, "POST", "/v1/backends", 413, "body", content=big)

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: cut while reading
        for _ in range(20):
            yield b" " * 65536

    await _rejected(app, "POST", "/v1/backends", 413, "body", content=chunked())


async def test_bad_updates_change_nothing(app: App, mcp_backend: Backend) -> None:
    await _url_backend(app, mcp_backend)
    path = "/v1/backends/remote"
    for method in ("PUT", "PATCH"):
        for body, status, field in [
            ({"bogus": 1}, 400, "bogus"),
            ({"name": "other"}, 400, "name"),
            ({"affinity": 3}, 400, "affinity"),
        ]:
            await _rejected(app, method, path, status, field, json=body)
        await _rejected(app, method, path, 400, "body", content=b"nope")
        await _rejected(app, method, path, 400, "body", content=b"[]")
        await _rejected(app, method, path, 413, "body", content=b"[" + b" " * MAX_BODY + b"]")
        await _rejected(app, method, "/v1/backends/missing", 404, "", json={"url": "http://h/"})
    # a url backend is one endpoint: it cannot scale
    await _rejected(app, "PATCH", path, 400, "replicas", json={"replicas": 3})
    await _rejected(app, "PUT", path, 400, "command", json={"description": "no runtime"})


async def test_names_in_paths_are_validated(app: App, mcp_backend: Backend) -> None:
    await _url_backend(app, mcp_backend)
    # (a literal `..` segment is resolved by the client, RFC 3986 §5.2.4: it never arrives)
    for name in (TRAVERSAL, "%2E%2E", "Upper", "a" * 53, "a%00b", "%FF", "-x"):
        for method, suffix, body in [
            ("GET", "", None),
            ("PUT", "", {"url": mcp_backend.url}),
            ("PATCH", "", {"replicas": 1}),
            ("DELETE", "", None),
            ("GET", "/status", None),
            ("GET", "/logs", None),
        ]:
            await _rejected(app, method, f"/v1/backends/{name}{suffix}", 400, "name", json=body)
    err = _error(await app.call("GET", f"/v1/backends/{TRAVERSAL}"), 400, "name")
    assert "'../../etc'" in err["message"] and "DNS-1123" in err["message"]
    for name in (TRAVERSAL, "a b", "x" * 64):
        await _rejected(app, "GET", f"/v1/tenants/{name}", 400, "tenant_id")
        await _rejected(app, "PUT", f"/v1/tenants/{name}", 400, "tenant_id", json={})
        await _rejected(app, "DELETE", f"/v1/tenants/{name}", 400, "tenant_id")
        await _rejected(app, "GET", f"/v1/tenants/{name}/quota", 400, "tenant_id")
        await _rejected(app, "PUT", f"/v1/tenants/{name}/quota", 400, "tenant_id", json={})


async def test_bad_query_parameters(app: App) -> None:
    await app.ok("POST", "/v1/backends", {"name": "quick", "command": quick_command()})
    await app.wait_ready("quick", 1)
    for query, field in [
        ("replica=x", "replica"),
        ("replica=-1", "replica"),
        ("replica=1.5", "replica"),
        ("lines=0", "lines"),
        ("lines=100001", "lines"),
        ("lines=ten", "lines"),
    ]:
        await _rejected(app, "GET", f"/v1/backends/quick/logs?{query}", 400, field)
    for query, field in [
        ("have=x", "have"),
        ("have=1.5", "have"),
        ("wait=-1", "wait"),
        ("wait=soon", "wait"),
        ("wait=nan", "wait"),
        ("wait=inf", "wait"),
    ]:
        await _rejected(app, "GET", f"/v1/snapshot?{query}", 400, field)


async def test_errors_are_json(app: App, caplog: pytest.LogCaptureFixture) -> None:
    r = await app.call("DELETE", "/v1/backends")
    _error(r, 405, words="not allowed")
    assert r.headers["allow"] == "GET, HEAD, POST"
    _error(await app.call("POST", "/v1/snapshot"), 405)
    _error(await app.call("PATCH", "/v1/tenants/t1"), 405)
    _error(await app.call("GET", "/v1/nothing/here"), 404, words="openapi.json")
    _error(await app.call("GET", "/elsewhere"), 404, words="/v1/")

    def broken() -> list:
        raise RuntimeError("planted failure")

    real = app.control.list_backends
    app.control.list_backends = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="gwfast.control"):
        _error(await app.call("GET", "/v1/backends"), 500, words="internal error")
    app.control.list_backends = real  # type: ignore[method-assign]
    [record] = [r for r in caplog.records if r.exc_info and "planted" in str(r.exc_info[1])]
    assert record.name == "gwfast.control" and "GET /v1/backends" in record.getMessage()
    assert await app.ok("GET", "/v1/backends") == []  # still serving
    assert await app.ok("GET", "/healthz") == {"status": "ok"}


# ----------------------------------------------------------------------------- tenants


async def test_tenants_and_quotas(app: App) -> None:
    assert await app.ok("GET", "/v1/tenants") == []
    r = await app.call("PUT", "/v1/tenants/engineering", json={"description": "eng"})
    assert r.status_code == 201 and r.headers["location"] == "/v1/tenants/engineering"
    msgspec.convert(r.json(), openapi.TenantInfo)
    r = await app.call(
        "PUT", "/v1/tenants/engineering", json={"quota": {"requests": 5, "period": "1m"}}
    )
    assert r.status_code == 200 and r.json()["quota"]["period_text"] == "1m"
    got = await app.ok("GET", "/v1/tenants/engineering")
    assert got["description"] == "" and got["quota"]["requests"] == 5  # PUT replaced it

    quota = await app.ok("PUT", "/v1/tenants/engineering/quota", {"requests": 1000, "period": "1h"})
    msgspec.convert(quota, openapi.TenantQuota)
    assert quota["quota"] == {"requests": 1000, "period": 3600.0, "period_text": "1h"}
    assert (await app.ok("GET", "/v1/tenants/engineering/quota")) == quota
    snap = wire.decode((await app.http.get("/v1/snapshot")).content)
    assert snap.tenants["engineering"].quota == wire.Quota(requests=1000, period=3600.0)

    # a quota for a new tenant creates it; an absent tenant has no quota
    await app.ok("PUT", "/v1/tenants/research/quota", {"requests": 10, "period": 60})
    assert [t["name"] for t in await app.ok("GET", "/v1/tenants")] == ["engineering", "research"]
    assert (await app.ok("GET", "/v1/tenants/nobody/quota"))["quota"] is None

    q = "/v1/tenants/engineering/quota"
    await _rejected(app, "PUT", q, 400, "quota.requests", json={"requests": 0, "period": "1h"})
    await _rejected(app, "PUT", q, 400, "quota.requests", json={"requests": "5", "period": "1h"})
    await _rejected(app, "PUT", q, 400, "quota.period", json={"requests": 5, "period": "soon"})
    await _rejected(app, "PUT", q, 400, "quota.period", json={"requests": 5, "period": "0s"})
    await _rejected(app, "PUT", q, 400, "quota.period", json={"requests": 5})
    await _rejected(
        app, "PUT", q, 400, "quota.burst", json={"requests": 5, "period": 1, "burst": 2}
    )
    await _rejected(app, "PUT", q, 400, "body", content=b"1000/h")
    await _rejected(app, "PUT", q, 400, "body", json=[1000, "1h"])
    t = "/v1/tenants/engineering"
    await _rejected(
        app, "PUT", t, 400, "quota.requests", json={"quota": {"requests": 0, "period": 1}}
    )
    await _rejected(app, "PUT", t, 400, "bogus", json={"bogus": 1})
    await _rejected(app, "PUT", t, 400, "name", json={"name": "other"})

    r = await app.call("DELETE", "/v1/tenants/research")
    assert r.status_code == 204
    _error(await app.call("GET", "/v1/tenants/research"), 404)
    _error(await app.call("DELETE", "/v1/tenants/research"), 404)


# ----------------------------------------------------------------------------- long-poll


async def test_snapshot_long_poll(app: App, mcp_backend: Backend) -> None:
    version = await app.version()
    r = await app.http.get("/v1/snapshot")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.content == app.publisher.body
    assert (await app.http.get(f"/v1/snapshot?have={version - 1}&wait=30")).status_code == 200

    started = time.monotonic()
    r = await app.http.get(f"/v1/snapshot?have={version}&wait=1")
    took = time.monotonic() - started
    assert r.status_code == 304 and r.content == b""
    assert 0.9 <= took < 3, took
    r = await app.http.get(f"/v1/snapshot?have={version}&wait=0")
    assert r.status_code == 304

    # a registration during the wait answers it at once with the new snapshot
    poll = asyncio.create_task(app.http.get(f"/v1/snapshot?have={version}&wait=20"))
    await asyncio.sleep(0.3)
    assert not poll.done()
    started = time.monotonic()
    await app.ok("POST", "/v1/backends", {"name": "late", "url": mcp_backend.url})
    r = await poll
    assert r.status_code == 200 and time.monotonic() - started < 5
    snap = wire.decode(r.content)
    assert snap.version != version and "late" in snap.backends


async def test_snapshot_wait_is_bounded(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    version = await app.version()
    monkeypatch.setattr(wire, "MAX_WAIT", 0.5)
    started = time.monotonic()
    r = await app.http.get(f"/v1/snapshot?have={version}&wait=3600")
    assert r.status_code == 304 and time.monotonic() - started < 2


# ----------------------------------------------------------------------------- OpenAPI


def _route_methods() -> set[tuple[str, str]]:
    routes = rest_routes(None, None)  # type: ignore[arg-type]  # built, never called
    return {
        (r.path, m.lower())
        for r in routes
        if isinstance(r, Resource) and r.include_in_schema
        for m in r.handlers
        if m != "HEAD"
    }


async def test_openapi_document(app: App) -> None:
    doc = await app.ok("GET", "/v1/openapi.json")
    assert doc == msgspec.json.decode(msgspec.json.encode(openapi.document()))
    validate(doc)  # OpenAPI 3.1, schemas included
    assert doc["openapi"].startswith("3.1")
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert documented == _route_methods()
    schemas = doc["components"]["schemas"]
    for name in ("BackendSpec", "TenantSpec", "QuotaSpec", "Snapshot", "Error", "BackendPatch"):
        assert name in schemas
    assert schemas["BackendSpec"]["properties"]["replicas"]["maximum"] == 32
    assert schemas["BackendSpec"]["additionalProperties"] is False
    assert doc["paths"]["/v1/backends"]["post"]["responses"]["201"]["headers"]["Location"]
    assert "304" in doc["paths"]["/v1/snapshot"]["get"]["responses"]
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


async def test_cross_site_requests_are_refused(app: App, mcp_backend: Backend) -> None:
    """The API runs commands on this machine: a web page must not reach it. A page may send
    text/plain or a form anywhere without asking (415 here), and DNS rebinding shows as a
    foreign Host (421); a cross-site Origin is refused (403). Nothing changes."""
    body = b'{"name": "evil", "command": ["sh", "-c", "touch /tmp/owned"]}'
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        err = await _rejected(
            app, "POST", "/v1/backends", 415, "body", content=body, headers={"Content-Type": ctype}
        )
        assert "application/json" in err["message"]
    for path in ("/v1/backends", "/adapters"):
        await _rejected(
            app, "POST", path, 421, "host", content=body, headers={"Host": "evil.example:9091"}
        )
        await _rejected(
            app,
            "POST",
            path,
            403,
            "origin",
            content=body,
            headers={"Origin": "https://evil.example"},
        )
    assert (
        await app.call("GET", "/v1/backends", headers={"Host": "evil.example"})
    ).status_code == 421
    # loopback names and a loopback Origin (a local tool's page) are fine
    for host in ("localhost", "127.0.0.1:1", "[::1]:9091"):
        assert (await app.call("GET", "/v1/backends", headers={"Host": host})).status_code == 200
    ok = await app.call("GET", "/v1/backends", headers={"Origin": "http://localhost:3000"})
    assert ok.status_code == 200
