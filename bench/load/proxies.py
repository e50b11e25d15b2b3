"""The targets of a load run: the backend directly, gwfast, nginx and haproxy.

Each proxy gets the configuration a careful operator would write for session-affine MCP
routing, so the comparison is with the peers at their best, not at their defaults:
- nginx: ``hash $http_mcp_session_id consistent``, upstream keepalive, HTTP/1.1 upstream,
  ``proxy_buffering off`` (SSE), and keepalive_requests raised so wrk's connections are not
  closed every 1000 requests (gwfast and haproxy have no such limit); ``start_nginx`` takes
  the worker's connection and open-file limits and the upstream read timeout as parameters
  (idle_streams.py raises them to hold thousands of idle streams; the defaults are what
  run.py and first_event.py measure with);
- haproxy: ``balance hdr(Mcp-Session-Id)`` with consistent hashing and ``http-reuse always``
  (and, when asked, ``option http-no-delay``: without it haproxy sends with MSG_MORE and holds
  a lone SSE event in the kernel until more data follows; first_event.py asks for it);
- gwfast: one worker, ``affinity: session``, sealed session ids, its admin listener on a free
  port (the default 9090 may be taken by another gateway on the machine);
- gwfast-control: the same gwfast, but its backend comes from a control process
  (``mcp-gateway control``, the backend registered as a ``url``) that it follows with
  ``--control``: the hot path must not notice where its snapshot came from.
All listen on 127.0.0.1 and run one worker (process or thread). nginx and haproxy add the
X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host headers gwfast adds, as an operator
in front of application servers does: every proxy hands the backend the same head, and the
backend's cost of parsing it (about 0.2 µs per header in the Python backend) is the same.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .procs import Child, Children, free_port, wait_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Target:
    """Something wrk can load: a URL, and the process whose CPU time is the proxy's cost."""

    name: str
    url: str
    proc: Child | None  # None for the backend itself


NGINX_CONF = """\
worker_processes 1;
{rlimit}daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    client_body_buffer_size 64k;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    upstream mcp {{
        hash $http_mcp_session_id consistent;
        server 127.0.0.1:{backend};
        keepalive 64;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://mcp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_buffering off;
            proxy_read_timeout {read_timeout}s;
        }}
    }}
}}
"""

HAPROXY_CFG = """\
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
{options}frontend fe
    bind 127.0.0.1:{port}
    default_backend mcp
backend mcp
    balance hdr(Mcp-Session-Id)
    hash-type consistent
    http-reuse always
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    server s1 127.0.0.1:{backend} maxconn 1000
"""

GWFAST_YAML = """\
listen: 127.0.0.1:{port}
admin_listen: 127.0.0.1:{admin}
workers: 1
session_keys: [{key}]
"""
GWFAST_BACKENDS = """\
backends:
  bench:
    affinity: session
    health_check: {{path: /healthz, interval: 5s}}
    endpoints: [http://127.0.0.1:{backend}/mcp]
"""


def start_backend(
    children: Children, workdir: Path, *, cpus: set[int], echo: bool = True
) -> tuple[Child, int]:
    """The Python fast backend; `echo` False: Mcp-Session-Id only on initialize."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.load.fast_backend", "--port", str(port)]
    if not echo:
        argv.append("--no-session-echo")
    child = children.start("backend", argv, cpus=cpus, log=workdir / "backend.log", cwd=REPO)
    wait_port(port, proc=child.popen)
    return child, port


def nginx_conf(
    d: Path,
    port: int,
    backend: int,
    *,
    worker_connections: int = 8192,
    worker_rlimit_nofile: int | None = None,
    read_timeout: int = 120,
) -> str:
    """NGINX_CONF filled in; the defaults give the configuration run.py has always measured."""
    rlimit = (
        "" if worker_rlimit_nofile is None else f"worker_rlimit_nofile {worker_rlimit_nofile};\n"
    )
    return NGINX_CONF.format(
        dir=d,
        port=port,
        backend=backend,
        rlimit=rlimit,
        connections=worker_connections,
        read_timeout=read_timeout,
    )


def start_nginx(
    children: Children,
    workdir: Path,
    nginx: str,
    backend: int,
    *,
    cpus: set[int],
    worker_connections: int = 8192,
    worker_rlimit_nofile: int | None = None,
    read_timeout: int = 120,
) -> Target:
    """nginx with one worker; worker_connections counts client and upstream sockets alike."""
    port, d = free_port(), workdir / "nginx"
    d.mkdir(exist_ok=True)
    conf = nginx_conf(
        d,
        port,
        backend,
        worker_connections=worker_connections,
        worker_rlimit_nofile=worker_rlimit_nofile,
        read_timeout=read_timeout,
    )
    (d / "nginx.conf").write_text(conf)
    argv = [nginx, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")]
    child = children.start("nginx", argv, cpus=cpus, log=d / "stdout.log")
    wait_port(port, proc=child.popen)
    return Target("nginx", f"http://127.0.0.1:{port}/mcp", child)


def start_haproxy(
    children: Children,
    workdir: Path,
    haproxy: str,
    backend: int,
    *,
    cpus: set[int],
    no_delay: bool = False,
) -> Target:
    port, cfg = free_port(), workdir / "haproxy.cfg"
    options = "    option http-no-delay\n" if no_delay else ""
    cfg.write_text(HAPROXY_CFG.format(port=port, backend=backend, options=options))
    argv = [haproxy, "-db", "-f", str(cfg)]
    child = children.start("haproxy", argv, cpus=cpus, log=workdir / "haproxy.log")
    wait_port(port, proc=child.popen)
    return Target("haproxy", f"http://127.0.0.1:{port}/mcp", child)


def start_gwfast(
    children: Children, workdir: Path, backend: int, *, cpus: set[int], timeout: float = 20.0
) -> Target:
    return _start_gwfast(children, workdir, backend, cpus=cpus, timeout=timeout)


def _start_gwfast(
    children: Children,
    workdir: Path,
    backend: int,
    *,
    cpus: set[int],
    timeout: float,
    control: str | None = None,
) -> Target:
    name = "gwfast" if control is None else "gwfast-control"
    port, cfg = free_port(), workdir / f"{name}.yaml"
    key = base64.b64encode(os.urandom(32)).decode()
    text = GWFAST_YAML + ("" if control else GWFAST_BACKENDS)
    cfg.write_text(text.format(port=port, admin=free_port(), backend=backend, key=key))
    argv = [sys.executable, "-m", "gwfast", "proxy", "--config", str(cfg)]
    if control is not None:
        argv += ["--control", control]
    child = children.start(name, argv, cpus=cpus, log=workdir / f"{name}.log", cwd=REPO)
    try:
        wait_port(port, proc=child.popen, timeout=timeout)
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"{name} did not start: {exc}\n{child.tail()}") from None
    return Target(name, f"http://127.0.0.1:{port}/bench/mcp", child)


def start_gwfast_control(
    children: Children, workdir: Path, backend: int, *, cpus: set[int], timeout: float = 20.0
) -> Target:
    """gwfast following a control process that has the backend registered as a url. The
    control process is idle during the load (one long-poll held open); it shares the load's
    cores, and its CPU time is not counted as the proxy's."""
    ctl_port = free_port()
    argv = [
        sys.executable,
        "-m",
        "mcp_gateway",
        "control",
        "--data-dir",
        str(workdir / "control"),
        "--control-listen",
        f"127.0.0.1:{ctl_port}",
        "--stdio",
        "off",
    ]
    ctl = children.start("control", argv, cpus=cpus, log=workdir / "control.log", cwd=REPO)
    wait_port(ctl_port, proc=ctl.popen, timeout=timeout)
    control = f"http://127.0.0.1:{ctl_port}"
    body = {
        "name": "bench",
        "url": f"http://127.0.0.1:{backend}/mcp",
        "health_check": {"path": "/healthz", "interval": "5s"},
    }
    req = urllib.request.Request(
        f"{control}/v1/backends",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201, r.status
    return _start_gwfast(children, workdir, backend, cpus=cpus, timeout=timeout, control=control)
