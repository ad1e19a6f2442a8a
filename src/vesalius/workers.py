"""The worker processes of one ``serve``: the sockets they share and the board they balance on.

With ``workers`` > 1 the parent binds each port once and its workers inherit the listening
sockets (file descriptors passed at start, named in :data:`FDS_ENV`). Every worker waits on
the same sockets, and who takes a new DICOM association or HTTP connection is settled on a
:class:`LoadBoard`: a few shared bytes holding each worker's count of open ones. A worker with
more than the least loaded one lets a new connection pass for a moment so that the other takes
it.

Why not SO_REUSEPORT alone: the kernel hashes each connection to one of the processes'
sockets, whatever their load; with four associations on two workers it put three or four on
one of them in most runs, and that one ran at the single-process rate while the other idled.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import select
import socket
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

FDS_ENV = "_VESALIUS_WORKER_FDS"  # "dicom=5,dicom_tls=6,http=7,board=8"
SLOT_ENV = "_VESALIUS_WORKER_SLOT"  # "1/2": this worker's index on the board, of how many
BOARD_SLOTS = 64  # the most workers `serve` starts (Settings.workers)
LANES = ("dicom", "http")  # what the board counts, a row of slots each
YIELD_S = 0.002  # a busier worker looks again after this long...
MAX_YIELD_S = 0.1  # ...and takes the connection itself after this long
RETRY_ACCEPT_S = 1.0  # after accept() failed for want of file descriptors


class LoadBoard:
    """Open connections per worker and lane, in memory the workers share (int64 counters)."""

    def __init__(self, fd: int, slot: int, workers: int, lane: str) -> None:
        self.slot = slot
        self._map = mmap.mmap(fd, len(LANES) * BOARD_SLOTS * 8)
        start = LANES.index(lane) * BOARD_SLOTS
        self._counts = memoryview(self._map).cast("q")[start : start + workers]

    @staticmethod
    def create() -> int:
        """A new, zeroed board; returns its file descriptor (inheritable)."""
        fd = os.memfd_create("vesalius-load-board", 0)  # no MFD_CLOEXEC: workers inherit it
        os.ftruncate(fd, len(LANES) * BOARD_SLOTS * 8)
        return fd

    def add(self, delta: int) -> None:
        """Count associations opened (+1) or closed (-1) by this worker."""
        self._counts[self.slot] += delta

    def least_loaded(self) -> bool:
        """Whether no other worker has fewer open associations than this one."""
        return self._counts[self.slot] <= min(self._counts)


def bind(host: str, port: int, *, reuse_port: bool = False, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on *host*:*port* (IPv6 when the host has a colon); with
    *reuse_port*, other processes may bind the same port (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def encode_fds(fds: dict[str, int]) -> str:
    return ",".join(f"{name}={fd}" for name, fd in fds.items())


def _inherited() -> dict[str, int]:
    value = os.environ.get(FDS_ENV, "")
    fds: dict[str, int] = {}
    for item in filter(None, value.split(",")):
        name, _, fd = item.partition("=")
        fds[name] = int(fd)
    return fds


def inherited_socket(name: str) -> socket.socket | None:
    """The listening socket *name* (``dicom``, ``dicom_tls``, ``http``) the parent passed."""
    fd = _inherited().get(name)
    if fd is None:
        return None
    return socket.socket(fileno=fd)


def board(lane: str) -> LoadBoard | None:
    """This worker's place in *lane* of the parent's load board; None outside a worker."""
    fd = _inherited().get("board")
    if fd is None:
        return None
    slot, _, workers = os.environ.get(SLOT_ENV, "0/1").partition("/")
    return LoadBoard(fd, int(slot), int(workers or 1), lane)


class Acceptor:
    """Accepts connections on a listening socket one at a time, on an event loop.

    asyncio's own servers accept every pending connection at each wake-up, so one worker
    took a burst of them whole. This one takes one, counts it on the board's *lane* until
    :meth:`closed` is called, and lets a connection pass while another worker has fewer
    open (for at most :data:`MAX_YIELD_S`, so a stuck worker delays nobody for long).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        lane: str,
        on_accept: Callable[[socket.socket], None],
    ) -> None:
        self.loop = loop
        self.sock: socket.socket | None = sock
        self.lane = lane
        self.on_accept = on_accept
        self.board = board(lane)
        self._waiting_since: float | None = None  # letting a connection pass since then

    def start(self) -> None:
        assert self.sock is not None
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock, self._acceptable)

    def stop(self) -> None:
        """Stop accepting and close the socket (this process's copy of it)."""
        sock, self.sock = self.sock, None
        if sock is not None:
            self.loop.remove_reader(sock)
            sock.close()

    def closed(self) -> None:
        """One connection this acceptor handed out has ended."""
        if self.board is not None:
            self.board.add(-1)

    def _acceptable(self) -> None:
        sock = self.sock
        assert sock is not None
        if self.board is not None and not self.board.least_loaded():
            now = time.monotonic()
            self._waiting_since = self._waiting_since or now
            if now - self._waiting_since < MAX_YIELD_S:
                self._pause(YIELD_S)
                return
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it, or the peer gave up
        except OSError as exc:  # out of file descriptors: stop accepting for a while
            log.error("cannot accept %s connections: %s", self.lane, exc)
            self._pause(RETRY_ACCEPT_S)
            return
        self._waiting_since = None
        conn.setblocking(False)
        if self.board is not None:
            self.board.add(+1)
        self.on_accept(conn)

    def _pause(self, seconds: float) -> None:
        assert self.sock is not None
        self.loop.remove_reader(self.sock)
        self.loop.call_later(seconds, self._resume)

    def _resume(self) -> None:
        sock = self.sock
        if sock is None:
            return  # stopped meanwhile
        if not select.select([sock], [], [], 0)[0]:
            self._waiting_since = None  # another worker took the one that was waiting
        self.loop.add_reader(sock, self._acceptable)
