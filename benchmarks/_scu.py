"""A minimal blocking DICOM SCU that times C-FIND on one open association.

``findscu`` measures a whole process (start, associate, query, release): on this machine
starting it alone takes ~20 ms, more than either server spends on the query. pynetdicom's
``Association`` adds its own reactor thread and polling (~3 ms per C-ECHO here). So the
server's own latency is timed with this client: pynetdicom's PDU and DIMSE codecs, one
blocking socket with Nagle off, and the clock around send-request to final-response.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Mapping
from io import BytesIO

from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import C_FIND_RQ
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
MAX_PDU = 131072
_PENDING = (0xFF00, 0xFF01)


class ScuError(RuntimeError):
    """The peer refused or broke the association."""


class FindAssociation:
    """One association proposing Study Root C-FIND in implicit VR little endian."""

    def __init__(self, host: str, port: int, called: str, calling: str, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.message_id = 0
        request = A_ASSOCIATE()
        request.application_context_name = APPLICATION_CONTEXT
        request.calling_ae_title = calling
        request.called_ae_title = called
        context = build_context(STUDY_ROOT_FIND, [IMPLICIT_LE])
        context.context_id = 1
        request.presentation_context_definition_list = [context]
        length = MaximumLengthNotification()
        length.maximum_length_received = MAX_PDU
        implementation = ImplementationClassUIDNotification()
        implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.7433.1.1"
        request.user_information = [length, implementation]
        pdu = A_ASSOCIATE_RQ()
        pdu.from_primitive(request)
        self.sock.sendall(pdu.encode())
        kind, body = self._read_pdu()
        if kind != 0x02:
            raise ScuError(f"association not accepted (PDU type 0x{kind:02X})")
        at, accepted = 68, False  # the A-ASSOCIATE-AC's items follow its fixed fields
        while at + 4 <= len(body):
            item, item_length = body[at], struct.unpack_from(">H", body, at + 2)[0]
            if item == 0x21:  # presentation context: ID, reserved, result
                accepted = body[at + 4] == 1 and body[at + 6] == 0
            at += 4 + item_length
        if not accepted:
            raise ScuError("the peer did not accept Study Root C-FIND in implicit VR LE")

    def _read_exactly(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(n)
            if not chunk:
                raise ScuError("the peer closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _read_pdu(self) -> tuple[int, bytes]:
        kind, length = struct.unpack(">BxI", self._read_exactly(6))
        return kind, self._read_exactly(length)

    def request(self, keys: Mapping[str, str]) -> bytes:
        """The P-DATA of a C-FIND request with *keys*, encoded once and sent many times."""
        identifier = Dataset()
        for keyword, value in keys.items():
            setattr(identifier, keyword, value)
        primitive = C_FIND()
        primitive.MessageID = 1
        primitive.AffectedSOPClassUID = STUDY_ROOT_FIND
        primitive.Priority = 2
        primitive.Identifier = BytesIO(encode(identifier, True, True))
        message = C_FIND_RQ()
        message.primitive_to_message(primitive)
        out = bytearray()
        for data in message.encode_msg(1, MAX_PDU):
            pdu = P_DATA_TF()
            pdu.from_primitive(data)
            out += pdu.encode()
        return bytes(out)

    def find(self, request: bytes) -> int:
        """Send one encoded C-FIND request and read every answer; returns the pending count.

        The message ID of every request is 1: each is answered before the next is sent.
        """
        self.sock.sendall(request)
        matches = 0
        command = bytearray()
        while True:
            kind, body = self._read_pdu()
            if kind != 0x04:
                raise ScuError(f"PDU type 0x{kind:02X} while waiting for C-FIND responses")
            at = 0
            while at < len(body):
                (item_length,) = struct.unpack_from(">I", body, at)
                control = body[at + 5]
                if control & 1:
                    command += body[at + 6 : at + 4 + item_length]
                    if control & 2:
                        status = _status(command)
                        command.clear()
                        if status not in _PENDING:
                            if status != 0x0000:
                                raise ScuError(f"C-FIND ended with status 0x{status:04X}")
                            return matches
                        matches += 1
                at += 4 + item_length

    def timed_finds(self, keys: Mapping[str, str], repeats: int) -> tuple[list[float], set[int]]:
        """*repeats* C-FINDs: each one's milliseconds, and the match counts seen."""
        times, counts = [], set()
        request = self.request(keys)
        for _ in range(repeats):
            start = time.perf_counter()
            counts.add(self.find(request))
            times.append((time.perf_counter() - start) * 1000)
        return times, counts

    def release(self) -> None:
        try:
            self.sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
            self._read_pdu()
        except (OSError, ScuError):
            pass
        finally:
            self.sock.close()


def _status(command: bytes | bytearray) -> int:
    """Status (0000,0900) of a command set (implicit VR little endian, group 0000 only)."""
    at = 0
    while at + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHI", command, at)
        if (group, element) == (0x0000, 0x0900) and length == 2:
            return int(struct.unpack_from("<H", command, at + 8)[0])
        at += 8 + length
    raise ScuError("a response command without a Status")
