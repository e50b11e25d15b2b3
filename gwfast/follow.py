"""Follow the control process's snapshots: the data plane side of the long-poll in `gwfast.wire`.

Why it exists: with `mcp-gateway proxy --control URL` the backends come from the control
process, and the data plane must keep serving the last good snapshot whenever that process
is away, restarting, or publishing something invalid (DESIGN.md "Processes"). Each worker
runs one `Follower` on its own event loop (no thread: a supervisor forks its workers), on
asyncio streams with httptools parsing the responses, over one kept-alive connection.

- An outage is logged once when it starts and once when it ends, never per retry; retries
  back off from 0.25 s doubling to 5 s, reset by the first good answer.
- A snapshot that fails the static configuration's checks is logged with the key path and
  ignored; the follower then asks with `have=` that version, so the long-poll waits for the
  next one instead of fetching the same bad snapshot again.
- `read_cache`/`write_cache`: the snapshot cache (`--snapshot-cache FILE`), so a data plane
  restarted while the control process is down still routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httptools
import msgspec

from gwfast import __version__, wire
from gwfast.config import BackendConfig, ConfigError, backends_from_wire

log = logging.getLogger("gwfast")

WAIT = 30.0  # the long-poll asked for (`wait=`); the whole exchange gets WAIT + SLACK
SLACK = 10.0
MIN_BACKOFF, MAX_BACKOFF = 0.25, 5.0  # retry delay after an error, doubling
MAX_RESPONSE = 16 * 1024 * 1024  # a larger response (head and body) is refused

OnSnapshot = Callable[[wire.Snapshot, dict[str, BackendConfig]], None]


@dataclass(frozen=True)
class FollowSettings:
    """`mcp-gateway proxy --control URL [--snapshot-cache FILE]`."""

    url: str  # the control process, http://host:port
    cache: Path | None = None  # where each applied snapshot is kept (None: nowhere)


class FollowError(Exception):
    """One exchange failed; the message says why (it goes into the log)."""


class _Stale(Exception):
    """The server closed a kept-alive connection before this request: reconnect."""


def parse_control_url(url: str) -> tuple[str, int]:
    """(host, port) of ``http://host:port``; ValueError saying what to write otherwise."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None or parts.username is not None:
        port = None
    if port is None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            "the control process URL must be http://host:port (e.g. http://127.0.0.1:8081), "
            f"not {url!r}"
        )
    return parts.hostname, port


def notes_of(snapshot: wire.Snapshot) -> dict[str, str]:
    """Each backend's `status` text, for `Backend.note`."""
    return {name: b.status for name, b in snapshot.backends.items() if b.status}


class _Reply:
    """httptools callbacks of one response."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.done = self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-length" and value.strip().isdigit():
            if int(value) > MAX_RESPONSE:
                raise FollowError(f"response refused: larger than {MAX_RESPONSE} bytes")

    def on_body(self, data: bytes) -> None:
        if len(self.body) + len(data) > MAX_RESPONSE:
            raise FollowError(f"response refused: larger than {MAX_RESPONSE} bytes")
        self.body += data

    def on_message_complete(self) -> None:
        self.done = True
        # asked now: once the message is complete the parser has forgotten it
        self.keep_alive = self.parser.should_keep_alive()


class Follower:
    """Long-polls ``GET /v1/snapshot`` at `url` forever (`run`); calls `on_snapshot` with each
    new valid snapshot. `version`: the one already served (e.g. from the cache)."""

    def __init__(
        self, url: str, on_snapshot: OnSnapshot, *, version: int | None = None, wait: float = WAIT
    ) -> None:
        self.url = url.rstrip("/")
        self.host, self.port = parse_control_url(url)
        self.authority = urlsplit(url).netloc
        self.on_snapshot = on_snapshot
        self.wait = wait
        self.version = version  # of the snapshot being served; None: none yet
        self.have = version  # what we ask with: `version`, or the last one refused
        self.down: str | None = None  # why the control process is unusable, while it is
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        delay = MIN_BACKOFF
        try:
            while True:
                try:
                    status, body = await self._poll()
                    if status not in (200, 304):
                        raise FollowError(f"answered HTTP {status}")
                    snapshot = wire.decode(body) if status == 200 else None
                except msgspec.DecodeError as e:  # ValidationError too
                    self._failed(f"undecodable snapshot: {e}")
                except (OSError, TimeoutError, FollowError, httptools.HttpParserError) as e:
                    self._failed(self._reason(e))
                else:
                    if self.down is not None:
                        log.warning("control process at %s reachable again", self.url)
                        self.down = None
                    if snapshot is not None and snapshot.version == self.version:
                        self.have = self.version  # back from a refused one
                    if snapshot is None or snapshot.version == self.version or self._take(snapshot):
                        delay = MIN_BACKOFF
                        continue
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
        finally:
            self._close()

    def _take(self, snapshot: wire.Snapshot) -> bool:
        """Validate and hand over `snapshot`; False (logged once) when it is invalid."""
        try:
            backends = backends_from_wire(snapshot.backends)
        except ConfigError as e:
            if snapshot.version != self.have:
                log.error(
                    "control process at %s sent an invalid snapshot version %d, ignored "
                    "(still serving snapshot version %s): %s",
                    self.url,
                    snapshot.version,
                    self.version,
                    e,
                )
            self.have = snapshot.version
            return False
        self.version = self.have = snapshot.version
        try:
            self.on_snapshot(snapshot, backends)
        except Exception:  # a bug: the snapshot is lost, following is not
            log.exception("could not apply snapshot version %d", snapshot.version)
        return True

    def _failed(self, why: str) -> None:
        """An exchange failed: drop the connection; log if this starts an outage."""
        self._close()
        if self.down is None:
            serving = (
                f"still serving snapshot version {self.version}"
                if self.version is not None
                else "serving no backends until it answers"
            )
            log.warning("control process at %s unreachable (%s); %s", self.url, why, serving)
            self.down = why

    def _reason(self, e: BaseException) -> str:
        if isinstance(e, TimeoutError):
            return f"no answer within {self.wait + SLACK:g}s"
        if isinstance(e, OSError) and e.errno:
            return os.strerror(e.errno)
        if isinstance(e, httptools.HttpParserError):
            cause = e.__cause__ or e.__context__
            return str(cause) if isinstance(cause, FollowError) else f"not HTTP: {e}"
        return str(e) or type(e).__name__

    async def _poll(self) -> tuple[int, bytes]:
        have = "" if self.have is None else f"have={self.have}&"
        request = (
            f"GET {wire.SNAPSHOT_PATH}?{have}wait={self.wait:g} HTTP/1.1\r\n"
            f"Host: {self.authority}\r\nUser-Agent: gwfast/{__version__}\r\n"
            "Accept: application/json\r\n\r\n"
        ).encode()
        async with asyncio.timeout(self.wait + SLACK):
            if self._writer is not None:
                try:
                    return await self._exchange(request, reused=True)
                except _Stale:
                    self._close()
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            return await self._exchange(request, reused=False)

    async def _exchange(self, request: bytes, *, reused: bool) -> tuple[int, bytes]:
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        try:
            writer.write(request)
            await writer.drain()
            data = await reader.read(65536)
        except ConnectionError:
            if reused:
                raise _Stale from None
            raise
        if not data and reused:
            raise _Stale
        reply = _Reply()
        received = 0
        while True:
            if not data:
                raise FollowError("the connection closed before the response ended")
            received += len(data)
            if received > MAX_RESPONSE + 65536:  # _Reply bounds the body; this the head
                raise FollowError(f"response refused: larger than {MAX_RESPONSE} bytes")
            reply.parser.feed_data(data)
            if reply.done:
                break
            data = await reader.read(65536)
        if not reply.keep_alive:
            self._close()
        return reply.parser.get_status_code(), bytes(reply.body)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


def read_cache(path: Path) -> tuple[wire.Snapshot, dict[str, BackendConfig]] | None:
    """The cached snapshot and its backends; None (logged unless absent) when unusable."""
    try:
        snapshot = wire.decode(path.read_bytes())
        return snapshot, backends_from_wire(snapshot.backends)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError, ConfigError) as e:
        log.warning("ignoring the snapshot cache %s: %s", path, e)
        return None


def write_cache(path: Path, snapshot: wire.Snapshot) -> None:
    """Atomically: a temporary file in the same directory, then os.replace. Several workers
    may write at once; each has its own temporary name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(wire.encode(snapshot))
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not write the snapshot cache %s: %s", path, e)
        with contextlib.suppress(OSError):
            tmp.unlink()
