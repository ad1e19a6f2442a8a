"""The DICOM connection's receive buffer (PduStream) on a real loopback TCP connection, on
asyncio's event loop and on uvloop's (the DICOM port's loop where it is installed)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from vesalius.dimse.listener import new_event_loop
from vesalius.dimse.stream import BUFFER_SIZE, STEP, PduStream

Run = Callable[[Coroutine[Any, Any, None]], None]

SIZE = 64 * 1024  # a small buffer, so that everything below crosses its edges


async def connected(size: int = SIZE) -> tuple[PduStream, socket.socket]:
    """A PduStream reading the server end of a loopback connection, and the client's socket."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    server.setblocking(False)
    stream = PduStream(loop, size)
    await loop.connect_accepted_socket(lambda: stream, server)
    return stream, client


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Runs a scenario to its end on a new event loop of the parameter's kind."""
    factory = asyncio.new_event_loop if request.param == "asyncio" else new_event_loop
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        assert isinstance(new_event_loop(), uvloop.Loop)  # the port's loop is uvloop's

    def run(scenario: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(scenario)

    return run


def send_later(client: socket.socket, data: bytes, close: bool = True) -> threading.Thread:
    def send() -> None:
        client.sendall(data)
        if close:
            client.close()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_reads_cross_the_buffer_edges_and_a_large_read_streams_through_it(run: Run) -> None:
    """Headers, a read larger than the buffer, and views handed to a sink, in order."""
    data = os.urandom(5 * SIZE + 123)

    async def scenario() -> None:
        stream, client = await connected()
        sender = send_later(client, data)
        head = await stream.readexactly(6)
        digest = hashlib.sha256()
        received = 0

        def sink(view: memoryview) -> None:
            nonlocal received
            assert len(view) <= SIZE  # a view of the buffer, never more than it holds
            digest.update(view)
            received += len(view)

        await stream.read_into(sink, 3 * SIZE)
        rest = await stream.readexactly(len(data) - 6 - 3 * SIZE)  # larger than the buffer
        assert head == data[:6]
        assert received == 3 * SIZE
        assert digest.digest() == hashlib.sha256(data[6 : 6 + 3 * SIZE]).digest()
        assert rest == data[6 + 3 * SIZE :]
        sender.join(10)

    run(scenario())


def test_a_full_buffer_stops_reading_the_socket_until_it_is_read(run: Run) -> None:
    """A peer that sends far more than is read fills the buffer, not the memory."""
    data = os.urandom(64 * SIZE)

    async def scenario() -> None:
        stream, client = await connected()
        sender = send_later(client, data)
        for _ in range(200):  # until the buffer is full and reading paused
            await asyncio.sleep(0.01)
            if not stream.transport.is_reading():  # type: ignore[union-attr]
                break
        assert not stream.transport.is_reading()  # type: ignore[union-attr]
        assert stream._end - stream._start == SIZE  # what it holds: the buffer, no more
        got = bytearray()
        await stream.read_into(got.extend, len(data))
        assert bytes(got) == data
        sender.join(10)

    run(scenario())


def test_the_end_of_the_connection_mid_read_is_an_incomplete_read(run: Run) -> None:
    async def scenario() -> None:
        stream, client = await connected()
        send_later(client, b"abcdef")
        with pytest.raises(asyncio.IncompleteReadError) as caught:
            await stream.readexactly(10)
        assert caught.value.partial == b"abcdef" and caught.value.expected == 10
        with pytest.raises(asyncio.IncompleteReadError):
            await stream.read_into(lambda view: None, 1)

    run(scenario())


def test_a_timer_fails_the_waiting_read_and_every_later_one(run: Run) -> None:
    async def scenario() -> None:
        stream, client = await connected()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, stream.set_exception, TimeoutError())
        with pytest.raises(TimeoutError):
            await stream.readexactly(1)
        client.sendall(b"late")
        with pytest.raises(TimeoutError):
            await stream.read_into(lambda view: None, 4)
        client.close()

    run(scenario())


def test_a_large_read_is_handed_over_in_steps_not_as_each_packet_arrives(run: Run) -> None:
    """Data trickling in 16 KB at a time reaches the sink in steps of at least STEP bytes."""
    data = os.urandom(2 * STEP + 5000)

    def trickle(client: socket.socket) -> None:
        for start in range(0, len(data), 16 * 1024):
            client.sendall(data[start : start + 16 * 1024])
            time.sleep(0.001)
        client.close()

    async def scenario() -> None:
        stream, client = await connected(BUFFER_SIZE)
        sender = threading.Thread(target=trickle, args=(client,), daemon=True)
        sender.start()
        sizes: list[int] = []
        got = bytearray()

        def sink(view: memoryview) -> None:
            sizes.append(len(view))
            got.extend(view)

        await stream.read_into(sink, len(data))
        assert bytes(got) == data
        assert len(sizes) <= 3 and all(size >= STEP for size in sizes[:-1])
        sender.join(10)

    run(scenario())


def test_a_writer_waits_while_the_peer_does_not_read_and_goes_on_when_it_does(run: Run) -> None:
    """drain() holds the writer while the socket's send buffer is full (the peer reads
    nothing), returns once the peer reads, and fails once the connection is closed."""
    chunk = os.urandom(1024 * 1024)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        stream, client = await connected()
        writer = asyncio.StreamWriter(stream.transport, stream, None, loop)  # type: ignore[arg-type]
        sent = 0
        drained = True
        while drained:  # write until drain() waits: the kernel's buffers are full
            writer.write(chunk)
            sent += len(chunk)
            try:
                await asyncio.wait_for(writer.drain(), 0.2)
            except TimeoutError:
                drained = False
            assert sent < 256 * len(chunk), "drain() never waited"
        assert stream._writing_paused

        def read_all() -> int:
            got = 0
            while got < sent:
                got += len(client.recv(1024 * 1024))
            return got

        reader = loop.run_in_executor(None, read_all)
        await asyncio.wait_for(writer.drain(), 10)  # the peer reads: the writer goes on
        assert await reader == sent
        writer.close()
        await writer.wait_closed()
        client.close()
        with pytest.raises(ConnectionResetError):
            await writer.drain()

    run(scenario())
