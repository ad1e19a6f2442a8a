"""The worker processes of one ``serve``: the sockets they share and the board they balance on.

With ``workers`` > 1 the parent binds each port once and its workers inherit the listening
sockets (file descriptors passed at start, named in :data:`FDS_ENV`). Every worker waits on
the same sockets, and who takes a new DICOM association is settled on a :class:`LoadBoard`:
a few shared bytes holding each worker's count of open associations. A worker with more than
the least loaded one lets a new association pass for a moment so that the other takes it.

Why not SO_REUSEPORT alone: the kernel hashes each connection to one of the processes'
sockets, whatever their load; with four associations on two workers it put three or four on
one of them in most runs, and that one ran at the single-process rate while the other idled.
"""

from __future__ import annotations

import mmap
import os
import socket

FDS_ENV = "_VESALIUS_WORKER_FDS"  # "dicom=5,dicom_tls=6,http=7,board=8"
SLOT_ENV = "_VESALIUS_WORKER_SLOT"  # "1/2": this worker's index on the board, of how many
BOARD_SLOTS = 64  # the most workers `serve` starts (Settings.workers)


class LoadBoard:
    """Open associations per worker, in memory the workers share (one int64 a worker)."""

    def __init__(self, fd: int, slot: int, workers: int) -> None:
        self.slot = slot
        self._map = mmap.mmap(fd, BOARD_SLOTS * 8)
        self._counts = memoryview(self._map).cast("q")[:workers]

    @staticmethod
    def create() -> int:
        """A new, zeroed board; returns its file descriptor (inheritable)."""
        fd = os.memfd_create("vesalius-load-board", 0)  # no MFD_CLOEXEC: workers inherit it
        os.ftruncate(fd, BOARD_SLOTS * 8)
        return fd

    def add(self, delta: int) -> None:
        """Count associations opened (+1) or closed (-1) by this worker."""
        self._counts[self.slot] += delta

    def least_loaded(self) -> bool:
        """Whether no other worker has fewer open associations than this one."""
        return self._counts[self.slot] <= min(self._counts)

    def counts(self) -> list[int]:
        return list(self._counts)


def bind(host: str, port: int, *, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on *host*:*port* (IPv6 when the host has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


def board() -> LoadBoard | None:
    """This worker's place on the parent's load board; None outside a worker."""
    fd = _inherited().get("board")
    if fd is None:
        return None
    slot, _, workers = os.environ.get(SLOT_ENV, "0/1").partition("/")
    return LoadBoard(fd, int(slot), int(workers or 1))
