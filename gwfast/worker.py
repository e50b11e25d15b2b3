"""Run the data plane: one uvloop worker, or a supervisor and N workers on one port.

With `workers: 1` the process is the worker. With N, a supervisor (`gwfast.supervisor`) forks
N workers that each bind the port with SO_REUSEPORT (the kernel spreads new connections over
them), replaces the ones that die, and drives reloads and shutdown.

Signals:
- SIGHUP reloads the configuration file. An invalid file is logged (the message of
  `mcp-gateway check`) and the previous configuration keeps serving. A valid one becomes a
  new snapshot that each worker publishes with `Gateway.swap`: connections, requests in
  flight and open streams are untouched. Listeners and the number of workers need a restart.
- SIGTERM or SIGINT drains: the listener closes, idle keep-alive connections close at once,
  requests and streams in flight get `timeouts.drain` to finish, then the rest are closed and
  the process exits 0. A second signal closes everything at once.

With `--control URL` (`gwfast.follow`) the backends come from the control process instead:
every worker long-polls it on its own event loop and publishes each new valid snapshot the
same way (`Worker.apply`); the file, if any, gives everything else, and a reload of it keeps
the backends the worker follows.

How workers learn about a reload: the supervisor reads and validates the file once and
sends the result (msgspec) to each worker over a socketpair. One read means every worker
applies the very same configuration even while the file is being rewritten, an error is
logged once, and a worker forked later to replace a dead one starts from the configuration
the others serve (the supervisor holds it anyway). The same socket carries "drain" and
"stop", rather than forwarded signals: a signal sent to the whole process group (Ctrl-C,
`kill -TERM -PGID`, systemd) already reaches every worker, and a forwarded copy would count
as the second signal that cuts the drain short. Its end of file tells a worker that the
supervisor is gone (with PR_SET_PDEATHSIG on Linux as a second guard): workers never
outlive their supervisor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
from pathlib import Path

import msgspec
import uvloop

from gwfast import admin, relay, wire
from gwfast._native import headscan, ring
from gwfast.config import (
    BackendConfig,
    Config,
    ConfigError,
    Duration,
    load_config_file,
    parse_config,
)
from gwfast.follow import Follower, FollowSettings, notes_of, read_cache, write_cache
from gwfast.gateway import Gateway
from gwfast.health import HealthChecker
from gwfast.metrics import Region, SharedBlock
from gwfast.model import Snapshot
from gwfast.proxy import CLOSED, IDLE
from gwfast.relay import ClientConnection
from gwfast.sessions import SessionSealer

log = logging.getLogger("gwfast")

DRAIN_POLL = 0.05  # how often a draining worker looks for connections that became idle
# settings a reload cannot change (sockets are bound, processes forked): kept until a restart
RESTART_ONLY = ("listen", "admin_listen", "workers")


# ----------------------------------------------------------------------------- configuration


class Loaded(msgspec.Struct, frozen=True):
    """A validated configuration, as the supervisor sends it to its workers."""

    config: Config
    backends: dict[str, BackendConfig]
    keys: list[bytes]  # the session key ring in effect: the first seals, all open
    notes: dict[str, str] = {}  # the control process's word on backends (`Backend.note`)


class Message(msgspec.Struct, frozen=True):
    """Supervisor to worker: `reload` (with `loaded`), `drain` or `stop` (at once)."""

    op: str
    generation: int = 0
    loaded: Loaded | None = None


def _enc_hook(obj: object) -> object:
    if isinstance(obj, Duration):
        return float(obj)
    raise NotImplementedError(type(obj))


def _dec_hook(tp: type, obj: object) -> object:
    if tp is Duration and isinstance(obj, int | float):
        return Duration(obj)
    raise NotImplementedError(tp)


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_DECODER = msgspec.msgpack.Decoder(Message, dec_hook=_dec_hook)


def encode_message(msg: Message) -> bytes:
    payload = _ENCODER.encode(msg)
    return len(payload).to_bytes(4, "big") + payload


class ConfigSource:
    """The configuration file and what of it is in effect: loaded once at start, then again
    at each SIGHUP. `path` None (only with `follow`): the defaults of every key."""

    def __init__(self, path: str | Path | None, *, follow: FollowSettings | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.follow = follow  # the backends come from the control process (gwfast.follow)
        self.current: Loaded | None = None
        self.generation = 0
        # made when no key is configured; kept for the process's life so that a reload
        # (even one that adds keys) never breaks the sessions it sealed
        self._random_key: bytes | None = None

    def _keys(self, configured: list[bytes]) -> list[bytes]:
        if not configured and self._random_key is None:
            log.warning(
                "no session_keys configured: generated a random key; sessions will "
                "not survive a restart or span replicas (set session_keys or "
                "session_key_file)"
            )
            self._random_key = secrets.token_bytes(32)
        extra = [self._random_key] if self._random_key is not None else []
        return configured + [k for k in extra if k not in configured]

    def _read(self) -> tuple[Config, dict[str, BackendConfig], list[bytes]]:
        if self.path is None:
            return (*parse_config({}), [])
        return load_config_file(self.path, control=self.follow is not None)

    def load(self) -> Loaded:
        """The first load; a ConfigError stops the start."""
        cfg, backends, keys = self._read()
        self.current = Loaded(cfg, backends, self._keys(keys))
        return self.current

    def reload(self) -> Loaded | None:
        """The file again; None (logged) when it is invalid and the old one stays."""
        old = self.current
        assert old is not None
        if self.path is None:
            log.warning("reload asked for, but there is no configuration file (--config)")
            return None
        try:
            cfg, backends, keys = self._read()
        except ConfigError as e:
            log.error(
                "reload ignored, still serving the previous configuration: configuration error: %s",
                e,
            )
            return None
        except Exception:  # a bug must not take the running gateway down
            log.exception("reload ignored, still serving the previous configuration")
            return None
        kept = {}
        for key in RESTART_ONLY:
            was, now = getattr(old.config, key, None), getattr(cfg, key, None)
            if was != now:
                log.warning(
                    "%s changed from %r to %r: restart the gateway to apply it (a reload "
                    "cannot); still using %r",
                    key,
                    was,
                    now,
                    was,
                )
                kept[key] = was
        if kept:
            cfg = msgspec.structs.replace(cfg, **kept)
        self.generation += 1
        self.current = Loaded(cfg, backends, self._keys(keys))
        log.info(
            "configuration %s reloaded (generation %d): %s",
            self.path,
            self.generation,
            "backends from the control process" if self.follow else f"{len(backends)} backends",
        )
        return self.current


# ----------------------------------------------------------------------------- one worker


def listen_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


class Worker:
    """One event loop serving the port. Reloads come from the supervisor's channel or, when
    the worker runs alone, from its own SIGHUP and `source`."""

    def __init__(
        self,
        loaded: Loaded,
        *,
        reuse_port: bool,
        channel: socket.socket | None = None,
        source: ConfigSource | None = None,
        metrics: Region | None = None,
        admin_sock: socket.socket | None = None,
        follow: FollowSettings | None = None,
    ) -> None:
        self.loaded = loaded
        self.follow = follow  # follow the control process's snapshots (gwfast.follow)
        self.version: int | None = None  # of the control process's snapshot being served
        self.metrics = metrics  # this worker's region of the metrics block (gwfast.metrics)
        self.admin_sock = admin_sock  # the admin listener, when this worker serves it
        self.reuse_port = reuse_port
        self.channel = channel
        self.source = source
        self.signals = 0  # SIGTERM/SIGINT received: the first drains, the second stops
        self.pid = os.getpid()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.stopping = asyncio.Event()
        self.now = False  # stop without waiting for requests in flight
        if self.follow is not None and self.follow.cache is not None:
            self._start_from_cache(self.follow.cache)
        snapshot = Snapshot.build(self.loaded.config, self.loaded.backends, notes=self.loaded.notes)
        gw = self.gw = Gateway(
            snapshot, SessionSealer(self.loaded.keys), loop, metrics=self.metrics
        )
        sock = listen_socket(snapshot.host, snapshot.port, reuse_port=self.reuse_port)
        self.server = await loop.create_server(lambda: ClientConnection(gw), sock=sock)
        admin_server = None
        if self.admin_sock is not None:  # workers: 1 — else the admin process serves it
            admin_server = await admin.start(self.admin_sock, gw.metrics.block)
        self.health = HealthChecker(gw)
        self.health.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        if self.source is not None:
            loop.add_signal_handler(signal.SIGHUP, self._reload_file)
        tasks = []
        if self.channel is not None:
            tasks.append(asyncio.create_task(self._read_channel(self.channel)))
        if self.follow is not None:
            follower = Follower(self.follow.url, self._on_followed, version=self.version)
            tasks.append(asyncio.create_task(follower.run()))
            log.info("worker %d following the control process at %s", self.pid, follower.url)
        log.info(
            "worker %d serving on %s:%d (native scanner %s, ring %s, relay %s)",
            self.pid,
            snapshot.host,
            snapshot.port,
            headscan.COMPILED,
            ring.COMPILED,
            relay.COMPILED,
        )
        try:
            await self.stopping.wait()
            await self._drain()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.health.aclose()
            gw.pool.close()
            if admin_server is not None:
                admin_server.close()

    # -- reload --
    def apply(
        self, loaded: Loaded, generation: int, *, what: str = "configuration generation"
    ) -> bool:
        """Publish `loaded` as the new snapshot; on any error the old one stays (False)."""
        gw = self.gw
        old = gw.snapshot
        assert old is not None
        try:
            snapshot = Snapshot.build(loaded.config, loaded.backends, notes=loaded.notes)
            sealer = SessionSealer(loaded.keys)
        except Exception:
            log.exception(
                "worker %d could not apply %s %d; still serving the previous one",
                self.pid,
                what,
                generation,
            )
            return False
        gw.swap(snapshot, sealer)
        self.health.restart()
        self.loaded = loaded
        added = sorted(snapshot.backends.keys() - old.backends.keys())
        removed = sorted(old.backends.keys() - snapshot.backends.keys())
        changed = sorted(
            n
            for n, b in snapshot.backends.items()
            if n in old.backends and b.cfg != old.backends[n].cfg
        )
        log.info(
            "worker %d applied %s %d (backends added %s, removed %s, changed %s)",
            self.pid,
            what,
            generation,
            added or "none",
            removed or "none",
            changed or "none",
        )
        return True

    def _keep_followed(self, loaded: Loaded) -> Loaded:
        """A reload of the file while following: its settings, the followed backends."""
        if self.follow is None:
            return loaded
        return msgspec.structs.replace(
            loaded, backends=self.loaded.backends, notes=self.loaded.notes
        )

    def _reload_file(self) -> None:
        assert self.source is not None
        if self.stopping.is_set():
            return
        loaded = self.source.reload()
        if loaded is not None:
            self.apply(self._keep_followed(loaded), self.source.generation)

    # -- following the control process --
    def _start_from_cache(self, path: Path) -> None:
        cached = read_cache(path)
        if cached is None:
            return
        snapshot, backends = cached
        self.loaded = msgspec.structs.replace(
            self.loaded, backends=backends, notes=notes_of(snapshot)
        )
        self.version = snapshot.version
        log.info(
            "worker %d serving cached snapshot version %d from %s until the control "
            "process answers",
            self.pid,
            snapshot.version,
            path,
        )

    def _on_followed(self, snapshot: wire.Snapshot, backends: dict[str, BackendConfig]) -> None:
        """A new valid snapshot from the control process: the file's settings and keys,
        its backends."""
        if self.stopping.is_set():
            return
        loaded = msgspec.structs.replace(self.loaded, backends=backends, notes=notes_of(snapshot))
        if self.apply(loaded, snapshot.version, what="control snapshot version"):
            self.version = snapshot.version
            assert self.follow is not None
            if self.follow.cache is not None:
                write_cache(self.follow.cache, snapshot)

    async def _read_channel(self, sock: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big")
                frame = await reader.readexactly(size)
                try:
                    self._on_message(_DECODER.decode(frame))
                except Exception:  # a bug: this message is lost, the channel is not
                    log.exception("worker %d could not handle a message", self.pid)
        except (asyncio.IncompleteReadError, ConnectionError):
            if not self.stopping.is_set():
                log.warning("worker %d: the supervisor is gone", self.pid)
            self._begin_drain("the supervisor is gone")
        finally:
            writer.close()

    def _on_message(self, msg: Message) -> None:
        if msg.op == "reload" and msg.loaded is not None:
            if not self.stopping.is_set():
                self.apply(self._keep_followed(msg.loaded), msg.generation)
        elif msg.op == "drain":
            self._begin_drain("the supervisor asked")
        elif msg.op == "stop":
            self._begin_drain("the supervisor asked")
            self._stop_now()

    # -- drain --
    def _on_signal(self, sig: int) -> None:
        self.signals += 1
        if self.signals == 1:
            self._begin_drain(f"{signal.Signals(sig).name}")
        else:
            self._stop_now()

    def _begin_drain(self, why: str) -> None:
        if not self.stopping.is_set():
            busy = sum(1 for c in self.gw.connections if c.state not in (IDLE, CLOSED))
            log.info(
                "worker %d draining (%s): %d requests or streams in flight get up to "
                "%gs (timeouts.drain)",
                self.pid,
                why,
                busy,
                self.gw.timeouts.drain,
            )
            self.stopping.set()

    def _stop_now(self) -> None:
        if not self.now:
            log.warning("worker %d stopping now: closing every connection", self.pid)
        self.now = True
        self.stopping.set()

    async def _drain(self) -> None:
        gw = self.gw
        gw.draining = True
        self.server.close()  # stop accepting; SO_REUSEPORT peers still listen until they stop
        deadline = self.loop.time() + gw.timeouts.drain
        while not self.now:
            busy = 0
            for c in list(gw.connections):
                if c.state == IDLE:
                    c.close()
                elif c.state != CLOSED:
                    # answer with Connection: close and close once this request ends
                    c.close_after = True
                    busy += 1
            if not busy:
                break
            if self.loop.time() >= deadline:
                log.warning(
                    "worker %d: %d requests or streams still open after %gs "
                    "(timeouts.drain): closing them",
                    self.pid,
                    busy,
                    gw.timeouts.drain,
                )
                break
            await asyncio.sleep(DRAIN_POLL)
        for c in list(gw.connections):
            c.close()
        log.info("worker %d stopped", self.pid)


def run_worker(
    loaded: Loaded,
    *,
    reuse_port: bool,
    channel: socket.socket | None = None,
    source: ConfigSource | None = None,
    metrics: Region | None = None,
    admin_sock: socket.socket | None = None,
    follow: FollowSettings | None = None,
) -> None:
    worker = Worker(
        loaded,
        reuse_port=reuse_port,
        channel=channel,
        source=source,
        metrics=metrics,
        admin_sock=admin_sock,
        follow=follow,
    )
    uvloop.run(worker.serve())


def run(config_path: str | Path | None, *, follow: FollowSettings | None = None) -> int:
    """`mcp-gateway proxy`: `config_path` may be None only with `follow`."""
    # a reload asked for while starting must not end the process (SIGHUP's default); the
    # handlers installed below replace this
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    source = ConfigSource(config_path, follow=follow)
    loaded = source.load()
    if loaded.config.workers == 1:
        # the same metrics code as with N workers, with one region; this process serves
        # the admin listener itself
        admin_listen = loaded.config.admin_listen
        run_worker(
            loaded,
            reuse_port=False,
            source=source,
            metrics=SharedBlock(1).region(0),
            admin_sock=admin.bind(admin_listen) if admin_listen else None,
            follow=follow,
        )
        return 0
    from gwfast.supervisor import Supervisor  # it imports this module

    return Supervisor(source).run()
