"""uvicorn's HTTP protocol (httptools) with request bodies handed on without two copies.

uvicorn gathers each piece of a request body in a ``bytearray`` (``on_body``) and copies it
out again as ``bytes`` when the application asks for it (``receive``): two copies of every
body byte on the event loop, in fresh buffers that each cost page faults. When nothing is
waiting yet, :class:`BodyProtocol` keeps the piece httptools made as it is; ``receive``'s
``bytes(...)`` of a ``bytes`` object is that object again, so a body piece reaches the
application with no copy at all (pieces that arrive before the application asks are still
joined). Everything else is uvicorn's, its flow control too, at a higher mark (below).

Measured on the development machine (2 cores), 4 clients posting 25 parts of 525 KB per
request:

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
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

BODY_HIGH_WATER = 1024 * 1024  # bytes of a request body read ahead of the application


class BodyProtocol(HttpToolsProtocol):
    """uvicorn's :class:`HttpToolsProtocol` whose ``on_body`` keeps a body piece uncopied
    and reads up to :data:`BODY_HIGH_WATER` ahead; given to ``uvicorn.Config(http=...)``."""

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        if not cycle.body:
            cycle.body = body  # type: ignore[assignment]  # receive()'s bytes(body): this object
        else:  # the application has not taken the last piece yet: gather them as uvicorn does
            if isinstance(cycle.body, bytes):  # (appending to bytes would copy all each time)
                cycle.body = bytearray(cycle.body)
            cycle.body += body
        if len(cycle.body) > BODY_HIGH_WATER:
            self.flow.pause_reading()
        cycle.message_event.set()
