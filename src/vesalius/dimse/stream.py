"""The receiving end of a DICOM connection: a buffer the socket is read into, and read from.

asyncio's ``StreamReader`` copies every received chunk into its buffer (``feed_data``) and
again out of it (``readexactly``), and wakes the reading task for each; a 512 KB data set
then cost two copies into fresh memory before the spool's write, about a tenth of the
Python time of a stored instance with four associations. :class:`PduStream` is a buffered
protocol instead: the socket (or the TLS layer) receives straight into one reusable buffer,
small reads (PDU and item headers, commands) are copied out of it, and a C-STORE data set is
handed to its spool as views of that buffer (:meth:`PduStream.read_into`), never copied in
Python. When the buffer is full the socket is no longer read until the association takes what
it holds (TCP flow control slows the peer), so memory stays bounded whatever the peer sends.

It offers what :class:`~vesalius.dimse.association.Association` used of the stream pair:
``readexactly`` (raising ``IncompleteReadError`` when the connection ends first),
``set_exception`` (the timers fail a read that waits too long), and it is the protocol behind
the ``StreamWriter`` the association writes with.
"""

from __future__ import annotations

import asyncio
import mmap
from collections.abc import Callable
from typing import Any

BUFFER_SIZE = 1024 * 1024
# A large read is woken, and hands its sink, this much at a time (or what is left): the socket
# delivers loopback data 64 KB at a time, and a wake-up, a spool write and a hash update for
# each cost more than the waiting.
STEP = 256 * 1024
# Data left at the start of a buffer is moved to its front before a receive with less room
# than this behind it (a short move: the association takes what arrives as it arrives).
MIN_ROOM = 64 * 1024


class PduStream(asyncio.BufferedProtocol):
    """A buffered protocol with ``StreamReader``-like reads (see the module docstring).

    It does its own write flow control for ``StreamWriter.drain`` rather than inherit
    asyncio's ``FlowControlMixin``: that mixin is an ``asyncio.Protocol``, and uvloop hands
    the data of any ``Protocol`` to ``data_received`` (a no-op here), never to
    ``get_buffer``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int = BUFFER_SIZE) -> None:
        self._loop = loop
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._connection_lost = False
        # Anonymous memory: a page costs only once data reaches it (a zeroed bytearray would
        # touch all 256 pages at every association, C-ECHO included).
        self._buffer = mmap.mmap(-1, size)
        self._view = memoryview(self._buffer)
        self._start = 0  # received, not yet read: self._buffer[self._start:self._end]
        self._end = 0
        self._eof = False
        self._exception: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._wanted = 0  # bytes the waiting read needs before it is woken
        self._reading_paused = False
        self._over_ssl = False
        self._closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.BaseTransport | None = None

    # -- the transport's side ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._over_ssl = transport.get_extra_info("sslcontext") is not None

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self._buffer) - self._end < MIN_ROOM and self._start:
            held = self._end - self._start
            self._buffer.move(0, self._start, held)  # memmove: the ranges may overlap
            self._start, self._end = 0, held
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        if self._start == 0 and self._end == len(self._buffer) and not self._reading_paused:
            self._reading_paused = True  # no room left: the socket waits until we read
            self.transport.pause_reading()  # type: ignore[attr-defined]
        if self._end - self._start >= self._wanted:
            self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        # Keep a plain TCP connection open for writing (an A-ABORT may follow); TLS cannot.
        return not self._over_ssl

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection_lost = True
        for waiter in self._drain_waiters:  # a writer paused by a full socket gives up
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)
        if exc is not None and self._exception is None:
            self._exception = exc
        self._eof = True
        self._wake()
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _drain_helper(self) -> None:  # StreamWriter.drain
        if self._connection_lost:
            raise ConnectionResetError("Connection lost")
        if not self._writing_paused:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            self._drain_waiters.remove(waiter)

    def _get_close_waiter(self, stream: Any) -> asyncio.Future[None]:
        return self._closed  # StreamWriter.wait_closed

    # -- the association's side ----------------------------------------------------------------

    def set_exception(self, exc: BaseException) -> None:
        """Fail the read in progress, and every later one, with *exc*."""
        self._exception = exc
        self._wake()

    async def readexactly(self, n: int) -> bytes:
        """The next *n* bytes; ``IncompleteReadError`` when the connection ends first."""
        if self._exception is not None:
            raise self._exception
        if self._end - self._start >= n:  # the usual case: already received
            start = self._start
            self._start += n
            data = bytes(self._view[start : self._start])
            self._taken()
            return data
        gathered = bytearray()
        while len(gathered) < n:
            await self._wait(n - len(gathered), gathered, n)
            take = min(self._end - self._start, n - len(gathered))
            gathered += self._view[self._start : self._start + take]
            self._start += take
            self._taken()
        return bytes(gathered)

    async def read_into(self, sink: Callable[[memoryview], object], n: int) -> None:
        """Hand the next *n* bytes to *sink* as they arrive, as views of the buffer (valid only
        during the call); ``IncompleteReadError`` when the connection ends first."""
        if self._exception is not None:
            raise self._exception
        left = n
        while left > 0:
            if self._end - self._start < min(left, STEP):
                await self._wait(left, None, n)
            take = min(self._end - self._start, left)
            sink(self._view[self._start : self._start + take])
            self._start += take
            left -= take
            self._taken()

    async def _wait(self, needed: int, gathered: bytearray | None, expected: int) -> None:
        """Wait until *needed* bytes are received (at most a :data:`STEP` of them), or some
        when the connection has ended; raise if it ended with none, or if a timer fired."""
        self._wanted = min(needed, STEP, len(self._buffer))
        while self._end - self._start < self._wanted:
            if self._exception is not None:
                raise self._exception
            if self._eof:
                if self._end > self._start:
                    break  # what there is; the next read meets the end
                partial = bytes(gathered) if gathered is not None else b""
                raise asyncio.IncompleteReadError(partial, expected)
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._exception is not None:
            raise self._exception

    def _taken(self) -> None:
        if self._start == self._end:
            self._start = self._end = 0
        if self._reading_paused:  # something was read: there is room again
            self._reading_paused = False
            self.transport.resume_reading()  # type: ignore[attr-defined]

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
