"""The network layer against broken and hostile peers, at the PDU level, over real sockets.

Each case sends bytes no DICOM library would send, then checks the standard answer (A-ABORT or
A-ASSOCIATE-RJ with its reason), that nothing was stored or left in the spool, and that the
server still serves a well-behaved client afterwards.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from dicomgen import make_dataset
from vesalius.container import build
from vesalius.dimse.server import DicomServer

ECHO_CONTEXT = 1
STORE_CONTEXT = 3


def item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BxH", kind, len(value)) + value


def pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BxI", kind, len(body)) + body


def associate_rq(calling: str = "FUZZ", called: str = "VESALIUS", extra: bytes = b"") -> bytes:
    contexts = b"".join(
        item(0x20, bytes((cid, 0, 0, 0)) + item(0x30, sop.encode()) + item(0x40, ts.encode()))
        for cid, sop, ts in (
            (ECHO_CONTEXT, Verification, ImplicitVRLittleEndian),
            (STORE_CONTEXT, CTImageStorage, ExplicitVRLittleEndian),
        )
    )
    user = item(0x50, item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.3.4"))
    body = (
        struct.pack(">H2x", 1)
        + called.encode().ljust(16)
        + calling.encode().ljust(16)
        + b"\x00" * 32
        + item(0x10, b"1.2.840.10008.3.1.1.1")
        + contexts
        + user
        + extra
    )
    return pdu(0x01, body)


def pdv(context: int, control: int, data: bytes) -> bytes:
    return struct.pack(">IBB", len(data) + 2, context, control) + data


def command(pairs: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack("<HHI", 0, e, len(v)) + v for e, v in pairs)
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def echo_rq() -> bytes:
    cmd = command(
        [
            (0x0002, Verification.encode() + b"\x00" * (len(Verification) % 2)),
            (0x0100, struct.pack("<H", 0x0030)),
            (0x0110, struct.pack("<H", 1)),
            (0x0800, struct.pack("<H", 0x0101)),
        ]
    )
    return pdu(0x04, pdv(ECHO_CONTEXT, 0x03, cmd))


def store_rq(sop_uid: str) -> bytes:
    def ui(value: str) -> bytes:
        raw = value.encode()
        return raw + b"\x00" * (len(raw) % 2)

    cmd = command(
        [
            (0x0002, ui(CTImageStorage)),
            (0x0100, struct.pack("<H", 0x0001)),
            (0x0110, struct.pack("<H", 7)),
            (0x0700, struct.pack("<H", 0)),
            (0x0800, struct.pack("<H", 0x0000)),
            (0x1000, ui(sop_uid)),
        ]
    )
    return pdu(0x04, pdv(STORE_CONTEXT, 0x03, cmd))


class Peer:
    """A raw TCP peer that reads whole PDUs back."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> tuple[int, bytes] | None:
        """The next PDU (type, body), or None when the server closed the connection."""
        header = self._exactly(6)
        if header is None:
            return None
        kind, length = struct.unpack(">BxI", header)
        body = self._exactly(length)
        return (kind, body or b"")

    def _exactly(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except (ConnectionResetError, TimeoutError):
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server(make_settings: Any) -> Iterator[Any]:
    settings = make_settings(acse_timeout=1.0, network_timeout=2.0, max_associations=3)
    container = build(settings, migrate=True)
    dicom = DicomServer(settings, container.archive, container.audit, container.auth)
    host, port = dicom.start()
    try:
        yield host, port, container
    finally:
        dicom.stop()
        container.close()


def still_serves(host: str, port: int) -> None:
    ae = AE(ae_title="CHECK")
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title="VESALIUS")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def nothing_left(container: Any) -> None:
    totals = container.archive.totals()
    assert totals.instances == 0
    spool_dir = Path(container.settings.effective_storage_dir) / ".tmp"
    leftovers = list(spool_dir.iterdir()) if spool_dir.exists() else []
    assert leftovers == []


def expect_abort(peer: Peer, reason: int | None = None) -> None:
    answer = peer.receive()
    assert answer is not None, "the server closed without an A-ABORT"
    kind, body = answer
    assert kind == 0x07, f"expected A-ABORT, got PDU type 0x{kind:02X}"
    if reason is not None:
        assert body[3] == reason
    assert peer.receive() is None  # and then closes


def established(host: str, port: int) -> Peer:
    peer = Peer(host, port)
    peer.send(associate_rq())
    answer = peer.receive()
    assert answer is not None and answer[0] == 0x02
    return peer


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (pdu(0x09, b"\x00" * 4), 1),  # unknown PDU type
        (pdu(0x04, pdv(1, 3, b"\x00" * 8)), 2),  # P-DATA before an association
        (pdu(0x05, b"\x00" * 4), 2),  # A-RELEASE-RQ before an association
        (pdu(0x01, b""), 6),  # an empty A-ASSOCIATE-RQ
        (struct.pack(">BxI", 0x01, 0xFFFFFFF0), 6),  # a 4 GiB A-ASSOCIATE-RQ
        (associate_rq(extra=b"\x99\x00\x00\x02ab"), 4),  # an unknown item
        (associate_rq(extra=b"\x20\x00\xff\xff"), 6),  # an item longer than the PDU
    ],
    ids=[
        "unknown-type",
        "pdata-first",
        "release-first",
        "empty-rq",
        "huge-rq",
        "unknown-item",
        "item-past-end",
    ],
)
def test_a_broken_start_is_aborted(server: Any, data: bytes, reason: int) -> None:
    host, port, container = server
    peer = Peer(host, port)
    peer.send(data)
    expect_abort(peer, reason)
    still_serves(host, port)
    nothing_left(container)


def test_wrong_application_context_and_too_many_associations_are_rejected(server: Any) -> None:
    host, port, _ = server
    peer = Peer(host, port)
    peer.send(associate_rq().replace(b"1.2.840.10008.3.1.1.1", b"1.2.840.10008.3.1.1.9"))
    answer = peer.receive()
    assert answer is not None and answer[0] == 0x03
    assert answer[1][1:4] == bytes((1, 1, 2))  # permanent, service user, context not supported
    peers = [established(host, port) for _ in range(3)]  # max_associations = 3
    extra = Peer(host, port)
    extra.send(associate_rq())
    answer = extra.receive()
    assert answer is not None and answer[0] == 0x03
    assert answer[1][1:4] == bytes((2, 3, 2))  # transient, provider, local limit exceeded
    for peer in peers:
        peer.close()
    time.sleep(0.2)
    still_serves(host, port)


@pytest.mark.parametrize(
    "data",
    [
        associate_rq(),  # a second A-ASSOCIATE-RQ
        pdu(0x04, pdv(5, 3, b"\x00" * 8)),  # a PDV for a context that was not accepted
        pdu(0x04, struct.pack(">IBB", 500, 1, 3) + b"\x00" * 8),  # a PDV longer than its PDU
        pdu(0x04, pdv(1, 0x02, b"\x00" * 8)),  # a data set before its command
        pdu(0x04, pdv(1, 0x03, b"\x00\x00\x00\x00\xff\xff")),  # a command set that cannot be read
        pdu(0x02, b"\x00" * 68),  # an A-ASSOCIATE-AC from the requestor
    ],
    ids=["second-rq", "unknown-context", "pdv-past-pdu", "data-first", "bad-command", "ac"],
)
def test_a_broken_pdu_in_an_association_is_aborted(server: Any, data: bytes) -> None:
    host, port, container = server
    peer = established(host, port)
    peer.send(data)
    expect_abort(peer)
    still_serves(host, port)
    nothing_left(container)


def test_a_disconnect_in_the_middle_of_an_instance_leaves_nothing(server: Any) -> None:
    host, port, container = server
    ds = make_dataset()
    from pynetdicom.dsutils import encode

    encoded = encode(ds, False, True)
    assert encoded is not None
    peer = established(host, port)
    peer.send(store_rq(str(ds.SOPInstanceUID)))
    peer.send(pdu(0x04, pdv(STORE_CONTEXT, 0x00, encoded[: len(encoded) // 2])))
    time.sleep(0.2)
    peer.close()
    time.sleep(0.5)
    still_serves(host, port)
    nothing_left(container)


def test_a_silent_peer_is_dropped_after_the_timeouts(server: Any) -> None:
    host, port, _ = server
    silent = Peer(host, port, timeout=10)
    started = time.monotonic()
    assert silent.receive() is None  # ARTIM (acse_timeout = 1 s) closes it
    assert time.monotonic() - started < 5
    idle = established(host, port)
    started = time.monotonic()
    answer = idle.receive()  # network_timeout = 2 s: A-ABORT or a plain close
    assert answer is None or answer[0] == 0x07
    assert time.monotonic() - started < 6
    still_serves(host, port)


def test_each_read_has_its_own_timeout_and_a_stall_mid_pdu_is_aborted(server: Any) -> None:
    """Reads that each finish in time keep an association alive past one timeout (2 s here);
    a PDU that stalls is aborted about one timeout after its last byte, not sooner."""
    host, port, _ = server
    peer = established(host, port)
    started = time.monotonic()
    for _ in range(3):  # the last echo comes 2.4 s in: past the first read's deadline
        time.sleep(1.2)
        peer.send(echo_rq())
        answer = peer.receive()
        assert answer is not None and answer[0] == 0x04, "a timely read was timed out"
    stalled = time.monotonic()
    # a P-DATA-TF with a command fragment of 98 bytes, of which 10 come
    peer.send(pdu(0x04, pdv(ECHO_CONTEXT, 0x01, b"\x00" * 98))[:22])
    answer = peer.receive()
    assert answer is None or answer[0] == 0x07
    waited = time.monotonic() - stalled
    assert time.monotonic() - started > 3.6
    assert 1.5 < waited < 5, f"aborted {waited:.1f} s after the stall, the timeout is 2 s"
    still_serves(host, port)


def test_seeded_mutations_never_stop_the_server(server: Any) -> None:
    """200 seeded mutations of a valid association and C-ECHO: the server answers each with a
    PDU or a close, and still serves afterwards."""
    host, port, container = server
    rng = random.Random(8)
    valid = associate_rq() + echo_rq() + pdu(0x05, b"\x00" * 4)
    for _ in range(200):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 6)):
            choice = rng.random()
            position = rng.randrange(len(data))
            if choice < 0.6:
                data[position] = rng.randrange(256)
            elif choice < 0.8:
                del data[position : position + rng.randint(1, 16)]
            else:
                data[position:position] = rng.randbytes(rng.randint(1, 16))
        peer = Peer(host, port, timeout=5)
        try:
            peer.send(bytes(data))
            peer.sock.shutdown(socket.SHUT_WR)  # the server sees the end at once
            while peer.receive() is not None:
                pass
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            peer.close()
    still_serves(host, port)
    nothing_left(container)
