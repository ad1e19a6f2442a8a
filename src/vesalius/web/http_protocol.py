"""uvicorn's HTTP protocol (httptools) with request bodies handed on without two copies.

uvicorn gathers each piece of a request body in a ``bytearray`` (``on_body``) and copies it
out again as ``bytes`` when the application asks for it (``receive``): two copies of every
body byte on the event loop, in fresh buffers that each cost page faults. :class:`BodyProtocol`
keeps each piece httptools made as it is, in a queue, and hands them to the application one
by one; ``receive``'s ``bytes(...)`` of a ``bytes`` object is that object again, so a body
piece reaches the application with no copy at all. Everything else is uvicorn's; so is its
flow control, at a higher mark, and resumed only under it (below).

Measured on the development machine (2 cores), 4 clients posting 25 parts of 525 KB per
request, with the first version of this protocol (which still joined the pieces read ahead):

- to an application that only reads the body: 0.54-0.68 ms of server CPU per part with
  uvicorn's ``on_body``, 0.18-0.36 ms with this one (a bare ``asyncio.BufferedProtocol``
  took 0.12-0.14; reading into a buffer of the protocol's own as well saved no more);
- STOW-RS to Vesalius (``ab_bench --load stow-series``, 10 interleaved rounds): 1.81 ms of
  CPU per instance instead of 2.03, and 1.10x the instances/s (7 of 10 rounds). perf had
  put 5-6% of the server's CPU in ``memmove``, most of it these copies.

It also reads further ahead of the application: up to :data:`BODY_HIGH_WATER` of a body
rather than uvicorn's 64 KB. uvloop reads up to 256 KB at a time, so past 64 KB every piece
stopped the connection's reading until the application had taken it; reading on while it
stores the last piece gave STOW-RS series 1.072x, 1.028x and 1.032x the instances/s (17 of
24 interleaved rounds; one-image studies 0.999x), for up to 1 MiB held per connection whose
application reads slowly.

What is read ahead waits in a queue, each piece as httptools made it, and the application
takes them one at a time (:class:`PieceCycle`). Gathering them in one buffer, as uvicorn does,
copied every byte read ahead twice more (into the buffer, then out as ``bytes``), in fresh
megabyte buffers that cost page faults too: perf put 13% of the STOW-RS server's CPU in
``memmove`` and ``realloc``. Queued, STOW-RS series took 1.48 ms of CPU per instance instead
of 1.84 and ran at 1.12x the instances/s (6 of 6 interleaved rounds). Pieces under
:data:`JOIN_BELOW` are still joined, so that a body sent in tiny chunks reaches the
application in few pieces, not one per chunk. Reading resumes only once what waits is back
under the mark: one read can bring several pieces, and the application takes one a time, so
resuming at every ``receive`` as uvicorn does let a body in 100 KB chunks pile up 10 MB.
"""

from __future__ import annotations

from collections import deque

from uvicorn._types import ASGIReceiveEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

BODY_HIGH_WATER = 1024 * 1024  # bytes of a request body read ahead of the application
JOIN_BELOW = 64 * 1024  # a piece read ahead is joined to the one before while that is smaller


class PieceCycle(RequestResponseCycle):
    """uvicorn's request cycle, its body read ahead as a queue of pieces, each handed to the
    application as it came (``bytes(piece)`` of a ``bytes`` piece is that object: no copy)."""

    pieces: deque[bytes | bytearray]  # read, not yet taken by the application
    ahead: int  # their bytes

    async def receive(self) -> ASGIReceiveEvent:
        """uvicorn's ``receive``, with the body taken a piece at a time."""
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            if self.ahead <= BODY_HIGH_WATER:  # (uvicorn resumes at every receive: a read
                self.flow.resume_reading()  # can bring more pieces than one receive takes)
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        pieces = self.pieces
        body = pieces.popleft() if pieces else b""
        self.ahead -= len(body)
        if pieces:
            self.message_event.set()  # the next one is here already
        more = self.more_body or bool(pieces)
        return {"type": "http.request", "body": bytes(body), "more_body": more}


class BodyProtocol(HttpToolsProtocol):
    """uvicorn's :class:`HttpToolsProtocol` whose request bodies wait in a :class:`PieceCycle`
    and are read up to :data:`BODY_HIGH_WATER` ahead; given to ``uvicorn.Config(http=...)``."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        cycle.__class__ = PieceCycle  # before its task first runs, so receive() is ours
        cycle.pieces = deque()
        cycle.ahead = 0

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        pieces = cycle.pieces
        if pieces and len(pieces[-1]) < JOIN_BELOW:
            last = pieces[-1]
            if isinstance(last, bytes):
                last = pieces[-1] = bytearray(last)
            last += body
        else:
            pieces.append(body)
        cycle.ahead += len(body)
        if cycle.ahead > BODY_HIGH_WATER:
            self.flow.pause_reading()
        cycle.message_event.set()
