"""The nginx backend: nginx serving fixed MCP answers, cheaper than any proxy in front of it.

The Python fast backend (fast_backend.py) costs a large fraction of a proxy's CPU per
request, and on the one-core scheme it shares the core with wrk and the proxy: every cycle it
spends dilutes the proxy's share of the figures. This backend is one nginx worker answering
from its configuration: no state, no Python, one `recv` and one `writev` per request, and two
regular expressions over the start of the body.

What it answers (``--backend nginx`` of run.py; bench/README.md says what it does not
emulate):

- POST without ``Mcp-Session-Id`` whose body's method is ``initialize`` -> 200 JSON (the
  fast backend's result) and a fresh ``Mcp-Session-Id``: nginx's ``$request_id``, 32 hex
  digits; any other POST without a session -> 400;
- POST with a session id that is not 32 lowercase hex digits -> 404 "unknown session": an id
  this backend cannot have issued, so a proxy that forwards a mangled (or its own sealed) id
  gets errors, not speed. Sessions are not remembered: any well-formed id is accepted, and a
  DELETEd one still is;
- POST with a session and no ``"id"`` in the body (a notification) -> 202;
- POST whose first ``"name"`` is ``"stream"`` with ``Accept: text/event-stream`` -> a chunked
  ``text/event-stream`` of ``events`` events, fixed when the configuration is written (the
  driver's ``--events``, whatever the request asks), the events the fast backend sends;
- any other POST with a session -> 200 JSON, the fast backend's ~600-byte ``tools/call``
  result (``tools/list`` included);
- every answer to a request with a session carries its ``Mcp-Session-Id`` back, as the SDK
  servers do (unless ``echo`` is off); DELETE -> 200; GET -> 405 (no standalone stream);
  GET ``/healthz`` -> 200.

The JSON-RPC id is echoed, not fixed. Debian's nginx-light has no njs, but it depends on
``libnginx-mod-http-echo``, whose ``echo_read_request_body`` reads the body in the content
phase; ``echo_exec`` then redirects to an internal location whose rewrite phase can see
``$request_body``: ``if ($request_body ~ ...)`` takes the first ``"id": <number or string>``
(and the first ``"name"``), and ``return`` answers with it. (Not a ``map``: a map lowercases
its whole source value into a fresh buffer before matching, which over a 2 KB body cost more
than the rest of the answer.) JSON answers are nginx's ``return`` (with Content-Length, as the
SDK servers send them), SSE answers the echo module's ``echo`` (chunked, as the SDK servers
stream them). Reading the first ``"id"`` and ``"name"`` is right for the driver's requests and
any JSON-RPC request that puts its id before its params, wrong for a body that nests either
key before the top-level one; a string id with escapes is not matched (the request is then
taken for a notification).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .fast_backend import CALL, INIT, sse_event
from .procs import Child, Children, free_port, wait_port

ID = "${rpc_id}"  # the request's JSON-RPC id, as the request spelled it

CONF = """\
load_module {module};
worker_processes 1;
pcre_jit on;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    # the whole body in one memory buffer, or $request_body is empty
    client_max_body_size 1m;
    client_body_buffer_size 1m;
    client_body_in_single_buffer on;
    # a request up to 4 KB (the driver's are up to ~2.3 KB) in one recv, not head and body in
    # two (and an ioctl between them)
    client_header_buffer_size 4k;
    client_body_temp_path {dir}/body;
    default_type text/plain;
    # a map lowercases its whole source value: fine for a header, not for the body, which
    # is matched with `if (... ~ ...)` in the rewrite phase of a location entered after
    # echo_read_request_body has read it
    map $http_mcp_session_id $session {{
        "" none;
        "~^[0-9a-f]{{32}}$" ok;
        default unknown;
    }}
    map $http_accept $accepts_sse {{
        "~text/event-stream" 1;
        default 0;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /healthz {{ return 200 "ok"; }}
        location / {{
            {echo_header}
            if ($request_method = DELETE) {{ return 200; }}
            if ($request_method != POST) {{ return 405; }}
            if ($session = unknown) {{ return 404 "unknown session"; }}
            if ($session = none) {{ rewrite ^ /_initialize last; }}
            echo_read_request_body;
            echo_exec /_call;
        }}
        location = /_initialize {{
            internal;
            echo_read_request_body;
            echo_exec /_initialize/answer;
        }}
        location = /_initialize/answer {{
            internal;
            if ($request_body !~ '{method_initialize}') {{
                return 400 "a session id is needed";
            }}
            set $rpc_id null;
            if ($request_body ~ '{id_re}') {{ set $rpc_id $1; }}
            default_type application/json;
            add_header Mcp-Session-Id $request_id;
            return 200 '{init}';
        }}
        location = /_call {{
            internal;
            set $rpc_id "";
            if ($request_body ~ '{id_re}') {{ set $rpc_id $1; }}
            if ($rpc_id = "") {{ return 202; }}
            set $rpc_tool "";
            if ($request_body ~ '{name_re}') {{ set $rpc_tool $1; }}
            set $sse "$rpc_tool $accepts_sse";
            if ($sse = "stream 1") {{ rewrite ^ /_call/sse last; }}
            default_type application/json;
            {echo_header_always}
            return 200 '{call}';
        }}
        location = /_call/sse {{
            internal;
            default_type text/event-stream;
            add_header Cache-Control no-cache;
            {echo_header}
            echo -n '{sse}';
        }}
    }}
}}
"""
# As written inside nginx's single quotes, where \\ stands for one backslash: the first "id"
# of the body (a number, or a string without escapes), its first "name", an initialize.
ID_RE = r'"id"\s*:\s*(-?[0-9]+|"[^"\\\\]*")'
NAME_RE = r'"name"\s*:\s*"([^"]*)"'
METHOD_INITIALIZE = r'"method"\s*:\s*"initialize"'


def _literal(parts: tuple[bytes, bytes] | bytes) -> str:
    """A prebuilt answer as the inside of a single-quoted nginx string, ID where its id goes.
    nginx strings have no escape for `$`; the answers have none, nor quotes or backslashes."""
    text = (ID.encode().join(parts) if isinstance(parts, tuple) else parts).decode()
    rest = text.replace(ID, "")
    assert not any(c in rest for c in "$'\\"), "answer not expressible as an nginx string"
    return text.replace("\n", "\\n")


def echo_module(nginx: str) -> Path:
    """The echo module's shared object for this nginx, or RuntimeError saying what to install."""
    out = subprocess.run([nginx, "-V"], capture_output=True, text=True)
    m = re.search(r"--modules-path=(\S+)", out.stderr + out.stdout)
    path = Path(m.group(1) if m else "/usr/lib/nginx/modules") / "ngx_http_echo_module.so"
    if not path.exists():
        raise RuntimeError(
            f"the nginx backend needs nginx's echo module ({path} is missing): "
            "`apt-get install libnginx-mod-http-echo` (Debian's nginx-light depends on it)"
        )
    return path


def conf(d: Path, port: int, module: Path, *, events: int, echo: bool = True) -> str:
    placeholder = b'"@@ID@@"'  # an id msgspec encodes as itself, replaced by ID
    sse = b"".join(sse_event("@@ID@@", n, events) for n in range(events))
    header = "add_header Mcp-Session-Id $http_mcp_session_id"
    return CONF.format(
        module=module,
        dir=d,
        port=port,
        init=_literal(INIT),
        call=_literal(CALL),
        sse=_literal(sse.replace(placeholder, ID.encode())),
        id_re=ID_RE,
        name_re=NAME_RE,
        method_initialize=METHOD_INITIALIZE,
        echo_header=f"{header};" if echo else "",
        echo_header_always=f"{header} always;" if echo else "",
    )


def start(
    children: Children, workdir: Path, nginx: str, *, cpus: set[int], events: int, echo: bool
) -> tuple[Child, int]:
    """One nginx worker (and its master) on cpus, answering on the returned port."""
    port, d = free_port(), workdir / "backend-nginx"
    d.mkdir(exist_ok=True)
    (d / "nginx.conf").write_text(conf(d, port, echo_module(nginx), events=events, echo=echo))
    argv = [nginx, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")]
    child = children.start("backend", argv, cpus=cpus, log=d / "stdout.log")
    wait_port(port, proc=child.popen)
    return child, port
