"""The HTTP protocol `vesalius serve` runs (:mod:`vesalius.web.http_protocol`), for real:
uvicorn on an ephemeral port, raw sockets as clients, bodies cut every way HTTP allows."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from httpserver import serving
from vesalius.web.http_protocol import BODY_HIGH_WATER, JOIN_BELOW


async def _digest_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers ``<bytes received> <sha256 of them>`` for every request body; on ``/ahead``,
    after waiting a moment before reading, how many bytes the server had read ahead; on
    ``/slow``, reading slowly, the most it had read ahead at a time; on ``/pieces``, how many
    pieces the body came in."""
    assert scope["type"] == "http"
    hasher = hashlib.sha256()
    size = 0
    ahead = 0
    pieces = 0
    if scope["path"] == "/ahead":
        await asyncio.sleep(0.5)  # the body arrives meanwhile: how much is read ahead?
        ahead = receive.__self__.ahead  # the request's PieceCycle
    while True:
        if scope["path"] == "/slow":  # slower than the client: the most read ahead at a time
            await asyncio.sleep(0.002)
            ahead = max(ahead, receive.__self__.ahead)
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body = message.get("body", b"")
        assert isinstance(body, bytes)  # the ASGI spec: a byte string
        hasher.update(body)
        size += len(body)
        pieces += 1
        if not message.get("more_body", False):
            break
    answer = f"{size} {hasher.hexdigest()}"
    answer += f" {ahead}" if scope["path"] in ("/ahead", "/slow") else ""
    answer += f" {pieces}" if scope["path"] == "/pieces" else ""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": answer.encode()})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with serving(_digest_app) as url:
        yield int(url.rsplit(":", 1)[1])


@contextmanager
def _connection(port: int) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        yield sock


def _answers(sock: socket.socket, count: int) -> list[str]:
    """Read *count* responses; their bodies."""
    data = b""
    bodies: list[str] = []
    while len(bodies) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode()
            assert head.startswith("HTTP/1.1 200"), head
            length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
            end = head_end + 4 + length
            if len(data) >= end:
                bodies.append(data[head_end + 4 : end].decode())
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    return bodies


def _expected(body: bytes) -> str:
    return f"{len(body)} {hashlib.sha256(body).hexdigest()}"


def _head(length: int | None, path: str = "/x") -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return f"POST {path} HTTP/1.1\r\nHost: test\r\n{framing}\r\n\r\n".encode()


def _chunked(pieces: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_large_body_in_one_send(port: int) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)
    with _connection(port) as sock:
        sock.sendall(_head(len(body)) + body)
        assert _answers(sock, 1) == [_expected(body)]


def test_body_sent_in_small_pieces_with_pauses(port: int) -> None:
    body = os.urandom(200_003)
    with _connection(port) as sock:
        sock.sendall(_head(len(body)))
        for start in range(0, len(body), 7_919):
            sock.sendall(body[start : start + 7_919])
            time.sleep(0.001)
        assert _answers(sock, 1) == [_expected(body)]


def test_many_tiny_chunks_gathered_before_the_application_reads(port: int) -> None:
    """Thousands of body pieces parsed from one read reach ``on_body`` before the
    application takes any: they are joined into pieces of up to :data:`JOIN_BELOW` (not by
    copying all so far each time), and arrive whole, in order and in a few pieces, not one
    per chunk."""
    pieces = [bytes([i % 251]) * (1 + i % 5) for i in range(20_000)]
    with _connection(port) as sock:
        sock.sendall(_head(None, "/pieces") + _chunked(pieces))
        digest, _, received = _answers(sock, 1)[0].rpartition(" ")
    assert digest == _expected(b"".join(pieces))
    assert int(received) <= 20  # 60 KB: under JOIN_BELOW, so in as many pieces as reads
    assert sum(len(p) for p in pieces) < JOIN_BELOW


def test_pipelined_requests_keep_their_own_bodies(port: int) -> None:
    bodies = [os.urandom(n) for n in (0, 1, 70_000, 300_000)]
    with _connection(port) as sock:
        sock.sendall(b"".join(_head(len(b)) + b for b in bodies))
        assert _answers(sock, len(bodies)) == [_expected(b) for b in bodies]


def test_a_client_gone_mid_body_leaves_the_server_serving(port: int) -> None:
    with _connection(port) as sock:
        sock.sendall(_head(1_000_000) + os.urandom(100_000))
    body = os.urandom(50_000)
    with _connection(port) as sock:
        sock.sendall(_head(len(body)) + body)
        assert _answers(sock, 1) == [_expected(body)]


def test_a_body_is_read_ahead_of_a_slow_application_only_so_far(port: int) -> None:
    """While the application is busy, the body is read on to :data:`BODY_HIGH_WATER` (plus
    the read that passed it) and no further: the rest waits in the socket."""
    body = os.urandom(16 * BODY_HIGH_WATER)
    with _connection(port) as sock:
        sock.sendall(_head(len(body), "/ahead") + body)
        digest, _, ahead = _answers(sock, 1)[0].rpartition(" ")
    assert digest == _expected(body)
    assert BODY_HIGH_WATER < int(ahead) <= BODY_HIGH_WATER + 1024 * 1024


def test_expect_100_continue_is_answered_before_the_body_is_sent(port: int) -> None:
    """A client that asks first (``Expect: 100-continue``) is told to go on when the
    application reads, and its body then arrives whole."""
    body = os.urandom(400_000)
    head = _head(len(body)).replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")
    with _connection(port) as sock:
        sock.sendall(head)
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            chunk = sock.recv(1)
            assert chunk, "the server closed the connection"
            interim += chunk
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert _answers(sock, 1) == [_expected(body)]


def test_a_slow_application_never_has_more_than_the_mark_read_ahead(port: int) -> None:
    """Chunks larger than the joining limit but smaller than a read come several to a read;
    the application takes one at a time, and the reading stays stopped until what waits is
    back under :data:`BODY_HIGH_WATER`, so the queue does not grow read after read."""
    pieces = [os.urandom(100_000) for _ in range(160)]  # 16 MB in 100 KB chunks
    with _connection(port) as sock:
        sock.sendall(_head(None, "/slow") + _chunked(pieces))
        digest, _, ahead = _answers(sock, 1)[0].rpartition(" ")
    assert digest == _expected(b"".join(pieces))
    assert int(ahead) <= BODY_HIGH_WATER + 1024 * 1024
