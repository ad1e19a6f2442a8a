"""Ports for the servers a test starts on a port it names (storescp, Orthanc, a serve).

``bind(0)`` then close hands out a port from the kernel's ephemeral range, which the next
outgoing connection, or another test's server binding port 0, may take before the test's
server binds it: a rare failure that points at the wrong test. These ports come from below
that range (the kernel never picks them by itself), from a block of its own for each xdist
worker, and in turn, so a port a test freed is not handed out again soon.
"""

from __future__ import annotations

import itertools
import os
import socket

_BLOCK = 1500
_BASE = 15000  # up to 11 workers fit below 32768, the usual start of the ephemeral range


def _worker() -> int:
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name[2:].isdigit() else 0


_FIRST = _BASE + _worker() * _BLOCK
_next = itertools.cycle(range(_FIRST, _FIRST + _BLOCK))


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on or is bound to now."""
    for _ in range(_BLOCK):
        port = next(_next)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (another program, or a server a test left running)
        return port
    raise RuntimeError(f"no free port in this worker's block of {_BLOCK} ports")
