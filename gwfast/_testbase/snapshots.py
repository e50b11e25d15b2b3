"""A stand-in control process for tests: `GET /v1/snapshot` with real long-poll semantics.

The protocol is the one documented in `gwfast.wire`: ``have=V&wait=S`` answers 200 with the
snapshot at once when its version differs from V, else waits up to S seconds for a change
and answers 304. Real HTTP/1.1 over TCP on a free loopback port (keep-alive included), in
a thread of the test process, so that a test blocked in a synchronous wait does not stall
the gateways polling it. `stop()` closes the listener and every open connection, as a
crashed control process would; `start()` again serves on the same port.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from urllib.parse import parse_qs, urlsplit

from gwfast import wire
from gwfast._testbase.procs import free_port


class ControlServer:
    """Serves `snapshot`; `publish()` (or `set()`) a new one, which wakes long-polls."""

    def __init__(self, snapshot: wire.Snapshot | None = None, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.snapshot = snapshot if snapshot is not None else wire.Snapshot(version=1)
        self.body: bytes | None = None  # served instead of the snapshot when set (bad JSON)
        self.connections = 0  # TCP connections accepted over the server's life
        self.requests: list[str] = []  # request targets, in order
        self._cond = threading.Condition()
        self._open: set[socket.socket] = set()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._closing = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, snapshot: wire.Snapshot, *, body: bytes | None = None) -> wire.Snapshot:
        with self._cond:
            self.snapshot, self.body = snapshot, body
            self._cond.notify_all()
        return snapshot

    def publish(self, backends: dict[str, wire.Backend], **fields: object) -> wire.Snapshot:
        """The next version with `backends` (and other Snapshot fields)."""
        return self.set(
            wire.Snapshot(version=self.snapshot.version + 1, backends=backends, **fields)
        )

    # -- lifecycle --
    def start(self) -> ControlServer:
        owner = self

        class Handler(_Handler):
            control = owner

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):  # type: ignore[no-untyped-def]
                sock, addr = super().get_request()
                with owner._cond:
                    owner.connections += 1
                    owner._open.add(sock)
                return sock, addr

            def shutdown_request(self, request):  # type: ignore[no-untyped-def]
                with owner._cond:
                    owner._open.discard(request)
                super().shutdown_request(request)

            def handle_error(self, request, client_address):  # type: ignore[no-untyped-def]
                pass  # a peer that went away mid-answer: nothing to report

        self._closing = False
        self._server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection, long-polls included (no answer)."""
        server, self._server = self._server, None
        if server is None:
            return
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            conns, self._open = set(self._open), set()
        server.shutdown()
        server.server_close()
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length
    control: ControlServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        c = self.control
        parts = urlsplit(self.path)
        if parts.path != wire.SNAPSHOT_PATH:
            self._answer(404, b'{"error": "not found"}')
            return
        query = parse_qs(parts.query)
        try:
            have = int(query["have"][0]) if "have" in query else None
            wait = min(float(query.get("wait", ["0"])[0]), wire.MAX_WAIT)
        except ValueError:
            self._answer(400, b'{"error": "have must be an integer, wait a number"}')
            return
        with c._cond:
            c.requests.append(self.path)
            c._cond.wait_for(lambda: c._closing or c.snapshot.version != have, timeout=wait)
            if c._closing:  # stopped while waiting: drop the connection unanswered
                self.close_connection = True
                return
            snapshot, body = c.snapshot, c.body
        if snapshot.version == have:
            self._answer(304, None)
        else:
            self._answer(200, body if body is not None else wire.encode(snapshot))

    def _answer(self, status: int, body: bytes | None) -> None:
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body is not None:
            self.wfile.write(body)
