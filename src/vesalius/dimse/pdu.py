"""The DICOM upper layer's protocol data units (PS3.8 section 9.3): decode and encode.

Pure functions over bytes, so that the network layer stays a loop of reads and writes and every
rule about the bytes on the wire can be tested without a socket. Anything malformed raises
:class:`PduError` with the A-ABORT reason that answers it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# PDU types
ASSOCIATE_RQ = 0x01
ASSOCIATE_AC = 0x02
ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
RELEASE_RQ = 0x05
RELEASE_RP = 0x06
ABORT = 0x07
PDU_TYPES = {ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT}

HEADER = struct.Struct(">BxI")  # type, reserved, length
PDV_HEADER = struct.Struct(">IBB")  # item length, presentation context ID, control header

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# A-ABORT reasons (source 2, service provider)
ABORT_NOT_SPECIFIED = 0
ABORT_UNRECOGNIZED_PDU = 1
ABORT_UNEXPECTED_PDU = 2
ABORT_UNRECOGNIZED_PARAMETER = 4
ABORT_UNEXPECTED_PARAMETER = 5
ABORT_INVALID_PARAMETER = 6

# A-ASSOCIATE-RJ (result, source, reason)
REJECT_APPLICATION_CONTEXT = (1, 1, 2)
REJECT_CALLING_AE = (1, 1, 3)
REJECT_CALLED_AE = (1, 1, 7)
REJECT_NO_REASON = (1, 1, 1)
REJECT_PROTOCOL_VERSION = (1, 2, 2)
REJECT_TOO_MANY = (2, 3, 2)  # transient, presentation, local limit exceeded

# Presentation context results
ACCEPTANCE = 0
ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
TRANSFER_SYNTAXES_NOT_SUPPORTED = 4

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1407.1"
IMPLEMENTATION_VERSION = "VESALIUS_010"


class PduError(Exception):
    """A PDU that breaks the protocol; *reason* is the A-ABORT reason to answer with."""

    def __init__(self, message: str, reason: int = ABORT_INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class ProposedContext:
    id: int
    abstract_syntax: str
    transfer_syntaxes: list[str]


@dataclass
class AssociateRequest:
    """What a requestor proposes in an A-ASSOCIATE-RQ."""

    protocol_version: int
    called_ae: str
    calling_ae: str
    application_context: str
    contexts: list[ProposedContext]
    max_pdu: int = 0  # 0: no limit
    implementation_class_uid: str = ""
    implementation_version: str = ""
    # SOP class -> (SCU role, SCP role) as proposed in SCP/SCU Role Selection items
    roles: dict[str, tuple[bool, bool]] = field(default_factory=dict)


@dataclass
class AcceptedContext:
    id: int
    result: int
    abstract_syntax: str
    transfer_syntax: str = ""  # empty when not accepted


def _uid(raw: bytes) -> str:
    return raw.decode("ascii", "replace").rstrip("\x00 ").strip()


def _items(data: bytes, start: int, end: int, wide: bool = True) -> list[tuple[int, bytes]]:
    """(type, value) of the items in ``data[start:end]``; *wide*: 1 reserved byte, 2-byte length."""
    items: list[tuple[int, bytes]] = []
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise PduError("an item header runs past the end of its PDU")
        item_type = data[pos]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if pos + 4 + length > end:
            raise PduError(
                f"item 0x{item_type:02X} declares {length} bytes past the end of its PDU"
            )
        items.append((item_type, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return items


def decode_associate_rq(body: bytes) -> AssociateRequest:
    """Decode the variable part of an A-ASSOCIATE-RQ (the PDU without its 6-byte header)."""
    if len(body) < 68:
        raise PduError("A-ASSOCIATE-RQ shorter than its fixed fields")
    (version,) = struct.unpack_from(">H", body, 0)
    request = AssociateRequest(
        protocol_version=version,
        called_ae=body[4:20].decode("ascii", "replace").strip(),
        calling_ae=body[20:36].decode("ascii", "replace").strip(),
        application_context="",
        contexts=[],
    )
    for item_type, value in _items(body, 68, len(body)):
        if item_type == 0x10:
            request.application_context = _uid(value)
        elif item_type == 0x20:
            request.contexts.append(_decode_context(value))
        elif item_type == 0x50:
            _decode_user_information(value, request)
        else:
            raise PduError(
                f"unknown item 0x{item_type:02X} in A-ASSOCIATE-RQ", ABORT_UNRECOGNIZED_PARAMETER
            )
    if not request.application_context:
        raise PduError("A-ASSOCIATE-RQ without an application context")
    return request


def _decode_context(value: bytes) -> ProposedContext:
    if len(value) < 4:
        raise PduError("presentation context item too short")
    context = ProposedContext(id=value[0], abstract_syntax="", transfer_syntaxes=[])
    for sub_type, sub_value in _items(value, 4, len(value)):
        if sub_type == 0x30:
            context.abstract_syntax = _uid(sub_value)
        elif sub_type == 0x40:
            context.transfer_syntaxes.append(_uid(sub_value))
        else:
            raise PduError(f"unknown sub-item 0x{sub_type:02X} in a presentation context")
    if context.id % 2 == 0:
        raise PduError(f"presentation context ID {context.id} is even")
    return context


def _decode_user_information(value: bytes, request: AssociateRequest) -> None:
    for sub_type, sub_value in _items(value, 0, len(value)):
        if sub_type == 0x51:
            if len(sub_value) != 4:
                raise PduError("maximum length sub-item is not 4 bytes long")
            (request.max_pdu,) = struct.unpack(">I", sub_value)
        elif sub_type == 0x52:
            request.implementation_class_uid = _uid(sub_value)
        elif sub_type == 0x55:
            request.implementation_version = _uid(sub_value)
        elif sub_type == 0x54:
            if len(sub_value) < 4:
                raise PduError("role selection sub-item too short")
            (uid_length,) = struct.unpack_from(">H", sub_value, 0)
            if 2 + uid_length + 2 > len(sub_value):
                raise PduError("role selection sub-item shorter than its UID")
            uid = _uid(sub_value[2 : 2 + uid_length])
            scu, scp = sub_value[2 + uid_length], sub_value[3 + uid_length]
            request.roles[uid] = (bool(scu), bool(scp))
        # Asynchronous operations (0x53), extended negotiation (0x56, 0x57) and user identity
        # (0x58) are not negotiated: leaving them out of the answer declines them.


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return HEADER.pack(pdu_type, len(body)) + body


def _ae(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16)


def encode_associate_ac(
    request: AssociateRequest,
    contexts: list[AcceptedContext],
    max_pdu: int,
    roles: dict[str, tuple[bool, bool]],
) -> bytes:
    """The A-ASSOCIATE-AC answering *request* (called and calling AE echoed as received)."""
    parts = [
        struct.pack(">H2x", 1),
        _ae(request.called_ae),
        _ae(request.calling_ae),
        b"\x00" * 32,
        _item(0x10, APPLICATION_CONTEXT.encode()),
    ]
    for cx in contexts:
        syntax = _item(0x40, cx.transfer_syntax.encode()) if cx.transfer_syntax else b""
        parts.append(_item(0x21, bytes((cx.id, 0, cx.result, 0)) + syntax))
    user = [
        _item(0x51, struct.pack(">I", max_pdu)),
        _item(0x52, IMPLEMENTATION_CLASS_UID.encode()),
    ]
    for uid, (scu, scp) in roles.items():
        raw = uid.encode()
        user.append(_item(0x54, struct.pack(">H", len(raw)) + raw + bytes((scu, scp))))
    user.append(_item(0x55, IMPLEMENTATION_VERSION.encode()))
    parts.append(_item(0x50, b"".join(user)))
    return _pdu(ASSOCIATE_AC, b"".join(parts))


def encode_associate_rj(result: int, source: int, reason: int) -> bytes:
    return _pdu(ASSOCIATE_RJ, bytes((0, result, source, reason)))


def encode_abort(reason: int = ABORT_NOT_SPECIFIED, source: int = 2) -> bytes:
    return _pdu(ABORT, bytes((0, 0, source, reason)))


RELEASE_RP_PDU = _pdu(RELEASE_RP, b"\x00\x00\x00\x00")
RELEASE_RQ_PDU = _pdu(RELEASE_RQ, b"\x00\x00\x00\x00")


def pdata_header(context_id: int, control: int, fragment_length: int) -> bytes:
    """The P-DATA-TF header and PDV item header for one fragment of *fragment_length* bytes."""
    return HEADER.pack(P_DATA_TF, fragment_length + 6) + PDV_HEADER.pack(
        fragment_length + 2, context_id, control
    )
