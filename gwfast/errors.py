"""Error responses: the right HTTP status and a JSON-RPC error body saying what to fix.

DESIGN.md "Routes": every error the gateway itself answers carries a JSON-RPC 2.0 error
object (id null: the gateway does not parse bodies to learn the request id) so MCP clients
surface the message.
"""

from __future__ import annotations

import msgspec

REASONS = {
    100: "Continue",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

# JSON-RPC codes: -32600 for a request the gateway refuses as sent, -32001 for a session the
# client must re-initialize (the MCP SDKs use the 404 status, the code is informational),
# -32000 for failures of the gateway or what stands behind it.
INVALID_REQUEST = -32600
SESSION_NOT_FOUND = -32001
SERVER_ERROR = -32000

_encode = msgspec.json.Encoder().encode


def jsonrpc_error(code: int, message: str) -> bytes:
    return _encode({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}})


def error_response(
    status: int,
    message: str,
    *,
    code: int | None = None,
    close: bool = False,
    headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A whole HTTP/1.1 response (head and body) for an error the gateway answers itself."""
    if code is None:
        code = (
            SESSION_NOT_FOUND
            if status == 404 and "session" in message.lower()
            else (INVALID_REQUEST if status < 500 else SERVER_ERROR)
        )
    body = jsonrpc_error(code, message)
    lines = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def plain_response(
    status: int, body: bytes, *, content_type: str = "application/json", close: bool = False
) -> bytes:
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'OK') if status != 200 else 'OK'}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        f"{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n"
    )
    return head.encode("latin-1") + body
