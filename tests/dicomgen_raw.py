"""Raw explicit-VR byte surgery on test files: VRs pydicom would never write."""

from __future__ import annotations

import struct


def with_vr(data: bytes, tag: int, old_vr: bytes, new_vr: bytes) -> bytes:
    """*data* with the explicit VR of element *tag* replaced by *new_vr* (2 bytes, any bytes).

    Both VRs must use the short (2-byte length) header, so the element keeps its length.
    """
    header = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + old_vr
    at = data.find(header, 132)
    if at < 0:
        raise ValueError(f"no element {tag:08X} with VR {old_vr!r}")
    return data[: at + 4] + new_vr + data[at + 6 :]
