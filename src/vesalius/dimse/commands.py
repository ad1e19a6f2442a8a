"""DIMSE command sets (PS3.7 section 9.3 and E.1): group 0000, always implicit VR little endian.

A command set is a handful of small elements, so it is read into a dict of raw values and
written from (element, value) pairs: no pydicom dataset on the hot path of every C-STORE.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Command fields
C_STORE_RQ = 0x0001
C_GET_RQ = 0x0010
C_FIND_RQ = 0x0020
C_MOVE_RQ = 0x0021
C_ECHO_RQ = 0x0030
N_EVENT_REPORT_RQ = 0x0100
N_ACTION_RQ = 0x0130
C_CANCEL_RQ = 0x0FFF
RESPONSE = 0x8000
C_STORE_RSP = C_STORE_RQ | RESPONSE

NO_DATASET = 0x0101
HAS_DATASET = 0x0000  # any other value means "a data set follows"; 0x0000 is conventional

# Elements of group 0000 (element number -> VR)
GROUP_LENGTH = 0x0000
AFFECTED_SOP_CLASS = 0x0002
REQUESTED_SOP_CLASS = 0x0003
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
MESSAGE_ID_RESPONDED = 0x0120
MOVE_DESTINATION = 0x0600
PRIORITY = 0x0700
DATASET_TYPE = 0x0800
STATUS = 0x0900
OFFENDING_ELEMENT = 0x0901
ERROR_COMMENT = 0x0902
AFFECTED_SOP_INSTANCE = 0x1000
REQUESTED_SOP_INSTANCE = 0x1001
EVENT_TYPE_ID = 0x1002
ACTION_TYPE_ID = 0x1008
REMAINING = 0x1020
COMPLETED = 0x1021
FAILED = 0x1022
WARNING = 0x1023
MOVE_ORIGINATOR_AE = 0x1030
MOVE_ORIGINATOR_ID = 0x1031

_US = {
    COMMAND_FIELD, MESSAGE_ID, MESSAGE_ID_RESPONDED, PRIORITY, DATASET_TYPE, STATUS,
    EVENT_TYPE_ID, ACTION_TYPE_ID, REMAINING, COMPLETED, FAILED, WARNING, MOVE_ORIGINATOR_ID,
}  # fmt: skip
_UI = {AFFECTED_SOP_CLASS, REQUESTED_SOP_CLASS, AFFECTED_SOP_INSTANCE, REQUESTED_SOP_INSTANCE}
_ELEMENT = struct.Struct("<HHI")
_MAX_COMMAND = 64 * 1024


class CommandError(Exception):
    """A command set that cannot be read."""


@dataclass
class Command:
    """A received command set: raw values by element number of group 0000."""

    values: dict[int, bytes]

    def us(self, element: int, default: int | None = None) -> int | None:
        raw = self.values.get(element)
        if raw is None or len(raw) < 2:
            return default
        return int.from_bytes(raw[:2], "little")

    def text(self, element: int) -> str:
        raw = self.values.get(element, b"")
        return raw.decode("ascii", "replace").rstrip("\x00 ").strip()

    @property
    def field(self) -> int:
        value = self.us(COMMAND_FIELD)
        if value is None:
            raise CommandError("the command set has no Command Field (0000,0100)")
        return value

    @property
    def message_id(self) -> int:
        return self.us(MESSAGE_ID, 0) or 0

    @property
    def has_dataset(self) -> bool:
        return self.us(DATASET_TYPE, NO_DATASET) != NO_DATASET


def decode(data: bytes) -> Command:
    """Read a command set; raises :class:`CommandError` when it is malformed."""
    if len(data) > _MAX_COMMAND:
        raise CommandError(f"a command set of {len(data)} bytes is too large")
    values: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if pos + 8 > end:
            raise CommandError("a command element header runs past the end")
        group, element, length = _ELEMENT.unpack_from(data, pos)
        pos += 8
        if group != 0 or pos + length > end:
            raise CommandError(f"element ({group:04X},{element:04X}) is not a command element")
        values[element] = data[pos : pos + length]
        pos += length
    return Command(values)


def _value(element: int, value: int | str | bytes) -> bytes:
    if element in _US:
        return struct.pack("<H", int(value))  # type: ignore[arg-type]
    raw = value if isinstance(value, bytes) else str(value).encode("ascii", "replace")
    if len(raw) % 2:
        # UIs are padded with NUL, text (AE, LO) with a space.
        pad = b"\x00" if element in _UI else b" "
        raw += pad
    return raw


def encode(pairs: list[tuple[int, int | str | bytes]]) -> bytes:
    """A command set from (element, value) pairs, with its group length first."""
    body = b"".join(
        _ELEMENT.pack(0, element, len(raw)) + raw
        for element, raw in ((e, _value(e, v)) for e, v in sorted(pairs))
    )
    return _ELEMENT.pack(0, GROUP_LENGTH, 4) + struct.pack("<I", len(body)) + body


def response(
    request: Command,
    status: int,
    *,
    dataset: bool = False,
    comment: str | None = None,
    extra: list[tuple[int, int | str | bytes]] | None = None,
) -> bytes:
    """The response to *request* with *status* (C-ECHO/STORE/FIND/GET/MOVE and N-ACTION)."""
    field = request.field | RESPONSE
    pairs: list[tuple[int, int | str | bytes]] = [
        (COMMAND_FIELD, field),
        (MESSAGE_ID_RESPONDED, request.message_id),
        (DATASET_TYPE, HAS_DATASET if dataset else NO_DATASET),
        (STATUS, status),
    ]
    sop_class = request.values.get(AFFECTED_SOP_CLASS) or request.values.get(REQUESTED_SOP_CLASS)
    if sop_class is not None:
        pairs.append((AFFECTED_SOP_CLASS, sop_class))
    instance = request.values.get(AFFECTED_SOP_INSTANCE) or request.values.get(
        REQUESTED_SOP_INSTANCE
    )
    if instance is not None:
        pairs.append((AFFECTED_SOP_INSTANCE, instance))
    if comment and status not in (0x0000, 0xFF00, 0xFF01):
        pairs.append((ERROR_COMMENT, comment[:64]))
    pairs.extend(extra or [])
    return encode(pairs)


def event_report(message_id: int, sop_class: str, sop_instance: str, event_type: int) -> bytes:
    """An N-EVENT-REPORT-RQ with a data set to follow (PS3.7 10.3.1)."""
    return encode(
        [
            (COMMAND_FIELD, N_EVENT_REPORT_RQ),
            (MESSAGE_ID, message_id),
            (DATASET_TYPE, HAS_DATASET),
            (AFFECTED_SOP_CLASS, sop_class),
            (AFFECTED_SOP_INSTANCE, sop_instance),
            (EVENT_TYPE_ID, event_type),
        ]
    )
