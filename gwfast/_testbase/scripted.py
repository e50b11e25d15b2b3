"""A scripted HTTP/1.1 upstream in a thread, for relay tests that need exact control of
when each byte leaves the endpoint (SSE pacing, close-delimited bodies, resets)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


class ScriptedUpstream:
    """Accepts connections; for each request head calls `handler(conn, head_bytes)`.

    The handler writes the response itself on the blocking socket. `requests` keeps every
    head received, so a test can check what the gateway forwarded.
    """

    def __init__(self, handler: Callable[[socket.socket, bytes], None]) -> None:
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.bodies: list[bytes] = []  # the Content-Length body of each request, in order
        self.open_conns = 0
        self.accepted = 0
        self.pending = b""
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        self.open_conns += 1
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                self.bodies.append(buf[:length])
                buf = buf[length:]
                self.requests.append(head)
                if b"transfer-encoding: chunked" in head.lower():
                    self.pending, buf = buf, b""  # the handler reads the chunked body
                if head.startswith(b"GET /healthz"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    continue
                if self.handler(conn, head) is False:
                    return
        except OSError:
            return
        finally:
            self.open_conns -= 1
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()
