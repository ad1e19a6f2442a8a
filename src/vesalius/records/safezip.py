"""Checks that make an uploaded zip archive safe to keep, list and unpack.

Refused: more members than allowed; members that expand beyond the total limit or with a
compression ratio only a bomb has; names that are absolute (``/x``, ``C:x``) or climb out
(``../x``); symbolic links and encrypted members. The sizes a zip declares can lie, so a
verifying check also decompresses every member and counts what comes out.
"""

from __future__ import annotations

import re
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from vesalius.records.errors import UnsafeContent

RATIO_FLOOR = 1024 * 1024  # smaller members may compress well without being a bomb
_CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


@dataclass(frozen=True)
class ZipLimits:
    max_uncompressed: int
    max_members: int
    max_ratio: float


def unsafe_name_reason(name: str) -> str | None:
    """Why a member name is unsafe to unpack, or None when it is fine.

    Examples
    --------
    >>> unsafe_name_reason("../etc/passwd")
    "climbs out of the archive with '..'"
    >>> unsafe_name_reason("mesh/frame01.vtk") is None
    True
    """
    if not name or "\x00" in name:
        return "has an empty name or a NUL character"
    normal = name.replace("\\", "/")
    if normal.startswith("/") or _DRIVE.match(normal):
        return "is an absolute path"
    if ".." in normal.split("/"):
        return "climbs out of the archive with '..'"
    return None


def check_zip(
    fh: IO[bytes], limits: ZipLimits, what: str, *, verify: bool = True
) -> list[zipfile.ZipInfo]:
    """Check the zip in *fh* (seekable) and return its members.

    Raises
    ------
    UnsafeContent
        Naming *what* and the member at fault.
    """
    try:
        archive = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise UnsafeContent(f"{what} is not a readable zip archive: {exc}") from None
    with archive:
        members = archive.infolist()
        if len(members) > limits.max_members:
            raise UnsafeContent(
                f"{what} has {len(members)} members; at most {limits.max_members} are accepted"
            )
        total = 0
        for info in members:
            _check_member(info, what, limits)
            total += info.file_size
            if total > limits.max_uncompressed:
                raise UnsafeContent(
                    f"{what} expands to more than {limits.max_uncompressed} bytes "
                    "(zip bomb?); refused"
                )
        if verify:
            actual = 0
            for info in members:
                if info.is_dir():
                    continue
                for chunk in read_member(archive, info, what):
                    actual += len(chunk)
                    if actual > limits.max_uncompressed:
                        raise UnsafeContent(
                            f"{what} expands to more than {limits.max_uncompressed} bytes "
                            "(zip bomb?); refused"
                        )
        return members


def _check_member(info: zipfile.ZipInfo, what: str, limits: ZipLimits) -> None:
    for name in {info.filename, info.orig_filename}:
        reason = unsafe_name_reason(name)
        if reason is not None:
            raise UnsafeContent(f"{what}: member {name!r} {reason}; refused")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnsafeContent(f"{what}: member {info.filename!r} is a symbolic link; refused")
    if info.flag_bits & 0x1:
        raise UnsafeContent(f"{what}: member {info.filename!r} is encrypted; refused")
    if info.compress_type not in _METHODS:
        raise UnsafeContent(f"{what}: member {info.filename!r} uses an unknown compression method")
    if info.file_size >= RATIO_FLOOR and info.file_size > limits.max_ratio * max(
        info.compress_size, 1
    ):
        ratio = info.file_size / max(info.compress_size, 1)
        raise UnsafeContent(
            f"{what}: member {info.filename!r} expands {ratio:.0f} times "
            f"(at most {limits.max_ratio:g} accepted; zip bomb?); refused"
        )


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> Iterator[bytes]:
    """The bytes of a member in chunks, refusing one that expands past its declared size."""
    produced = 0
    try:
        with archive.open(info) as member:
            while chunk := member.read(_CHUNK):
                produced += len(chunk)
                if produced > info.file_size:
                    raise UnsafeContent(
                        f"{what}: member {info.filename!r} expands beyond its declared size; "
                        "refused"
                    )
                yield chunk
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as exc:
        raise UnsafeContent(f"{what}: member {info.filename!r} is damaged: {exc}") from None
    except RuntimeError as exc:  # encrypted members slip through as RuntimeError
        raise UnsafeContent(f"{what}: member {info.filename!r}: {exc}") from None
