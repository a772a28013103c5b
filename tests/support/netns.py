"""Network namespaces for tests, all on this machine: stand-ins for capsules, a test "internet"
behind a veth of the host's, and sockets made inside any of them.

A socket belongs to the namespace it was created in, whichever thread uses it later: a thread
enters the namespace (setns(2) changes only the calling thread's) to create it, so a server or
a client in a namespace needs no process of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
# What a blocked connection gets: a reset (refused) or an ICMP error (unreachable).
REFUSALS = {
    errno.ECONNREFUSED: "refused",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
}


def ip(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["ip", *args], input=stdin, capture_output=True, text=True, timeout=10, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def inside(netns: str, function: Callable[[], T]) -> T:
    """`function()` in a thread that entered the network namespace at path `netns`."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({netns})")
            finally:
                os.close(fd)
            outcome.append(function())
        except BaseException as error:  # handed to the caller's thread
            failure.append(error)

    thread = threading.Thread(target=run, name=f"netns {netns}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def listener(netns: str | None, address: str, port: int = 0, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A bound socket, listening if TCP, in `netns` (None: this process's namespace, the host's)."""

    def make() -> socket.socket:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(16)
        return sock

    return make() if netns is None else inside(netns, make)


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def has_pending_connection(server: socket.socket) -> bool:
    """Whether a connection reached `server` (waiting in its accept queue); takes it if so."""
    server.setblocking(False)
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


@dataclass(frozen=True)
class Outcome:
    connected: bool
    error: int | None  # errno; None when connected or timed out
    seconds: float

    @property
    def refused_fast(self) -> bool:
        """Refused or unreachable, told at once (2 s: generous, yet far below any retry timeout)."""
        return self.error in REFUSALS and self.seconds < 2.0

    def __str__(self) -> str:
        what = "connected" if self.connected else errno.errorcode.get(self.error or 0, "timed out")
        return f"{what} after {self.seconds:.3f} s"


def connect_from(
    netns: str, address: str, port: int, timeout: float = 3.0, scope_id: int = 0, source: str | None = None
) -> Outcome:
    """Open a TCP connection from inside `netns` (from `source` if given; `scope_id`: the
    interface index, inside `netns`, of a link-local IPv6 `address`)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = inside(netns, lambda: socket.socket(family, socket.SOCK_STREAM))
    sock.settimeout(timeout)
    started = time.monotonic()
    try:
        if source is not None:
            sock.bind((source, 0))
        sock.connect((address, port, 0, scope_id) if family == socket.AF_INET6 else (address, port))
    except TimeoutError:
        return Outcome(False, None, time.monotonic() - started)
    except OSError as error:
        return Outcome(False, error.errno, time.monotonic() - started)
    finally:
        sock.close()
    return Outcome(True, None, time.monotonic() - started)


def send_datagram_from(
    netns: str, address: str, port: int, payload: bytes, source: str | None = None
) -> None:
    sock = inside(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    with sock:
        if source is not None:
            sock.bind((source, 0))
        sock.sendto(payload, (address, port))


def receive_datagram(sock: socket.socket, timeout: float) -> bytes | None:
    sock.settimeout(timeout)
    try:
        return sock.recv(2048)
    except TimeoutError:
        return None


def short_id() -> str:
    return secrets.token_hex(3)


@dataclass(frozen=True)
class Namespace:
    name: str

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def ip(self, *args: str) -> str:
        """`ip` inside the namespace: what root inside a capsule may do to its own network."""
        return ip("-n", self.name, *args)


@contextlib.contextmanager
def namespace() -> Iterator[Namespace]:
    """A named network namespace (`ip netns add`), removed afterwards whatever happened."""
    space = Namespace(f"wt-{short_id()}")
    ip("netns", "add", space.name)
    try:
        yield space
    finally:
        with contextlib.suppress(RuntimeError):
            ip("netns", "del", space.name)


@dataclass(frozen=True)
class Internet:
    """A namespace standing for the internet: a veth from the host, a /30 of 203.0.113.0/24 (a
    documentation range, outside every private list) and a nameserver address in 10/8."""

    space: Namespace
    host_interface: str
    host_address: str  # a public address of the host's own
    server_address: str
    nameserver: str  # in a private range, as on many hosts


@contextlib.contextmanager
def internet() -> Iterator[Internet]:
    slot = secrets.randbelow(64)
    network = ipaddress.IPv4Network(f"203.0.113.{4 * slot}/30")
    host_address, server_address = (str(address) for address in network.hosts())
    nameserver = f"10.254.{slot}.53"
    host_interface = f"wti{short_id()}"
    with namespace() as space:
        ip("link", "add", host_interface, "type", "veth", "peer", "name", "eth0", "netns", space.name)
        try:
            ip("address", "add", f"{host_address}/30", "dev", host_interface)
            ip("link", "set", host_interface, "up")
            ip("route", "add", f"{nameserver}/32", "via", server_address, "dev", host_interface)
            space.ip("link", "set", "lo", "up")
            space.ip("address", "add", f"{server_address}/30", "dev", "eth0")
            space.ip("address", "add", f"{nameserver}/32", "dev", "eth0")
            space.ip("link", "set", "eth0", "up")
            yield Internet(space, host_interface, host_address, server_address, nameserver)
        finally:
            with contextlib.suppress(RuntimeError):
                ip("link", "del", host_interface)
