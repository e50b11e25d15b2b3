"""Count a process's TCP connections from /proc (Linux), to find leaked upstream connections.

No psutil needed: a process's sockets are the ``socket:[INODE]`` links in /proc/PID/fd, and
/proc/net/tcp{,6} maps each inode to its addresses and state.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


@dataclass(frozen=True)
class TcpConn:
    pid: int
    local: tuple[str, int]
    remote: tuple[str, int]
    state: str


def descendants(pid: int) -> list[int]:
    """`pid` and all its live descendants (workers of a multi-process gateway)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name (2nd field) may hold spaces and parentheses: split after it
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _addr(hex_addr: str) -> tuple[str, int]:
    ip_hex, port_hex = hex_addr.split(":")
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(ip_hex, 16)))
    else:  # IPv6: four little-endian 32-bit words
        words = struct.unpack("<4I", raw)
        ip = socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))
    return ip, int(port_hex, 16)


def _tcp_table() -> dict[int, tuple[tuple[str, int], tuple[str, int], str]]:
    table: dict[int, tuple[tuple[str, int], tuple[str, int], str]] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            inode = int(fields[9])
            if inode:
                table[inode] = (
                    _addr(fields[1]),
                    _addr(fields[2]),
                    TCP_STATES.get(fields[3], fields[3]),
                )
    return table


def tcp_connections(pid: int, *, include_children: bool = True) -> list[TcpConn]:
    """TCP sockets held by `pid` (and its descendants), with addresses and state."""
    pids = descendants(pid) if include_children else [pid]
    table = _tcp_table()
    conns = []
    for p in pids:
        for inode in _socket_inodes(p):
            if inode in table:
                local, remote, state = table[inode]
                conns.append(TcpConn(p, local, remote, state))
    return conns


def connections_to(
    pid: int, ports: int | set[int] | list[int], *, state: str | None = "ESTABLISHED"
) -> list[TcpConn]:
    """`pid`'s connections whose remote port is in `ports` (in `state`, unless None)."""
    wanted = {ports} if isinstance(ports, int) else set(ports)
    return [
        c
        for c in tcp_connections(pid)
        if c.remote[1] in wanted and (state is None or c.state == state)
    ]


def count_established(pid: int, ports: int | set[int] | list[int]) -> int:
    """How many ESTABLISHED TCP connections `pid` and its children hold to `ports`."""
    return len(connections_to(pid, ports))
