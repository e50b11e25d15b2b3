"""The MCP conformance suite and the Inspector CLI, directly and through the gateway.

The gateway is judged by comparison: every check of ``conformance server --suite all``
must end with the same status through the gateway as directly against the backend, over
several runs in a row (a relay that leaks upstream streams shows it after a few runs), and
afterwards the gateway must hold no upstream connections beyond its idle keep-alive pool,
which it closes after ``timeouts.upstream_keepalive``.

Backends: the project's own backend (gwfast._testbase.backend), which implements every
name the suite's scenarios call, and the reference server-everything, which implements
few of them (most of its checks fail directly too: the comparison is what counts).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from gwfast._testbase.backend import Backend, BackendFactory, backend_config
from gwfast._testbase.sockets import connections_to

pytestmark = pytest.mark.timeout(300)

OURS = "conf"
EVERYTHING = "everything"
GATEWAY_RUNS = 3
KEEPALIVE = "1s"
SCENARIO_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")

# Per check id, the set of statuses it ended with (some ids, e.g. `incoming-sse-event`,
# appear several times per scenario: their count is informational, their status is not).
Checks = dict[str, dict[str, tuple[str, ...]]]


def parse_results(out: Path) -> Checks:
    results: Checks = {}
    for scenario_dir in sorted(out.iterdir()):
        match = SCENARIO_DIR.match(scenario_dir.name)
        assert match, f"unexpected entry {scenario_dir.name} in {out}"
        scenario = match["scenario"]
        assert scenario not in results, f"{scenario} ran twice in {out}"
        statuses: dict[str, set[str]] = {}
        for check in json.loads((scenario_dir / "checks.json").read_text()):
            statuses.setdefault(check["id"], set()).add(check["status"])
        results[scenario] = {cid: tuple(sorted(s)) for cid, s in sorted(statuses.items())}
    return results


def run_conformance(npm_tools, url: str, out: Path) -> tuple[int, Checks, str]:
    proc = subprocess.run(
        [npm_tools.exe("conformance"), "server", "--url", url, "--suite", "all", "-o", str(out)],
        env=npm_tools.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    results = parse_results(out)
    assert results, f"conformance wrote no results:\n{output[-4000:]}"
    return proc.returncode, results, output


def summary(output: str) -> str:
    return output[output.find("=== SUMMARY ===") :]


def differences(expected: Checks, got: Checks) -> list[str]:
    diffs = []
    for scenario in sorted(set(expected) | set(got)):
        want, have = expected.get(scenario), got.get(scenario)
        if want is None or have is None:
            diffs.append(f"{scenario}: {'missing' if have is None else 'unexpected'}")
            continue
        for cid in sorted(set(want) | set(have)):
            if want.get(cid) != have.get(cid):
                diffs.append(f"{scenario}/{cid}: {want.get(cid)} -> {have.get(cid)}")
    return diffs


def failures(results: Checks) -> list[str]:
    return [
        f"{scenario}/{cid}"
        for scenario, checks in results.items()
        for cid, statuses in checks.items()
        if "FAILURE" in statuses
    ]


def assert_no_leaked_upstream(gateway, port: int, *, settle: float = 20.0) -> int:
    """Wait (boundedly) until the gateway holds no ESTABLISHED connection to `port`.

    Idle keep-alive connections may remain until `timeouts.upstream_keepalive` (1s here)
    closes them; anything that stays is a leaked stream. Returns the count seen first.
    """
    first = len(connections_to(gateway.proc.pid, port))
    deadline = time.monotonic() + settle
    while conns := connections_to(gateway.proc.pid, port):
        if time.monotonic() > deadline:
            pytest.fail(
                f"gateway still holds {len(conns)} ESTABLISHED upstream connections to :{port} "
                f"{settle}s after the clients left (keep-alive is {KEEPALIVE}; {first} right "
                f"after the runs): {conns[:10]}"
            )
        time.sleep(0.25)
    return first


@pytest.fixture(scope="module")
def our_backend(backend_factory: BackendFactory) -> Backend:
    return backend_factory.start(1, prefix="conf")[0]


@pytest.fixture(scope="module")
def gateway(gateway_factory, our_backend, everything_server):
    return gateway_factory.start(
        {
            OURS: backend_config([our_backend.url]),
            # server-everything has no health route: TCP connect check only
            EVERYTHING: backend_config([everything_server.url], health_path=None),
        },
        name="conformance",
        timeouts={"upstream_keepalive": KEEPALIVE},
    )


def test_conformance_our_backend_same_through_gateway(
    npm_tools, our_backend, gateway, tmp_path: Path
) -> None:
    rc, direct, output = run_conformance(npm_tools, our_backend.url, tmp_path / "direct")
    # Directly, our backend passes every scenario of --suite all. (server-sse-polling only
    # reports WARNINGs: the scenario's raw request says MCP-Protocol-Version 2025-03-26, and
    # the SDK sends SSE priming events and closes streams for resumption only from
    # 2025-11-25 on, so that scenario has no pass/fail check here, directly or not.)
    assert rc == 0 and not failures(direct), summary(output)
    assert len(direct) >= 30, sorted(direct)

    for run in range(GATEWAY_RUNS):
        rc, through, output = run_conformance(
            npm_tools, gateway.url(OURS), tmp_path / f"gateway-{run}"
        )
        diffs = differences(direct, through)
        assert not diffs, f"run {run + 1} through the gateway differs:\n" + "\n".join(diffs)
        assert rc == 0, summary(output)

    assert_no_leaked_upstream(gateway, our_backend.port)


# The one check that differs, on purpose: server-everything does not validate Host/Origin
# (it accepts `Host: evil.example.com`, so the check fails directly), while the gateway
# on a loopback listener rejects non-loopback Host/Origin itself with a 403 before
# relaying (DNS-rebinding protection, MCP "Security Warning"), so the check passes
# through it. Our own backend (SDK) rejects such hosts too, so it shows no difference.
EVERYTHING_DIFFERENCES = [
    "dns-rebinding-protection/localhost-host-rebinding-rejected: ('FAILURE',) -> ('SUCCESS',)"
]


def test_conformance_server_everything_same_through_gateway(
    npm_tools, everything_server, gateway, tmp_path: Path
) -> None:
    # server-everything implements few of the suite's fixed names, so many checks fail
    # directly as well; the gateway must change none of them. Its sampling and elicitation
    # tools are not the suite's (`test_sampling`, ...), so those scenarios fail at once
    # ("tool not found") both ways instead of waiting on its GET stream, which is where
    # server-everything sends server->client requests (and which can time out behind any
    # relay when the GET stream opens after the tool call).
    # It answers 400 (not 404) to an unknown session; the gateway's own 404 for a session
    # id it cannot open is tested with our backend, not here.
    _, direct, _ = run_conformance(npm_tools, everything_server.url, tmp_path / "direct")
    for run in range(2):
        _, through, output = run_conformance(
            npm_tools, gateway.url(EVERYTHING), tmp_path / f"gateway-{run}"
        )
        diffs = differences(direct, through)
        assert diffs == EVERYTHING_DIFFERENCES, (
            f"run {run + 1} through the gateway differs:\n" + "\n".join(diffs) + summary(output)
        )

    assert_no_leaked_upstream(gateway, everything_server.port)


def test_inspector_cli_calls_a_tool_through_gateway(npm_tools, gateway) -> None:
    proc = subprocess.run(
        [
            npm_tools.exe("mcp-inspector"),
            "--cli",
            gateway.url(OURS),
            "--method",
            "tools/call",
            "--tool-name",
            "echo",
            "--tool-arg",
            "message=hi",
        ],
        env=npm_tools.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["isError"] is False
    assert result["content"] == [{"type": "text", "text": "hi"}]
