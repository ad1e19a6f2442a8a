"""Reading ``Accept`` and ``Content-Type`` headers as DICOMweb uses them (PS3.18 8.7).

Viewers send the same thing in many spellings: quoted and unquoted ``type``, ``transfer-syntax``
with ``*`` or a UID, several media ranges separated by commas, ``q`` weights. This module turns
them into a list of :class:`MediaRange` and leaves the decision to the route.

Examples
--------
>>> [r.type for r in parse_accept('multipart/related; type="application/dicom", */*')]
['application/dicom', '*/*']
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

ANY_SYNTAX = "*"

# The media type of a compressed frame given as stored (PS3.18 Table 8.7.3-2).
FRAME_MEDIA_TYPES: dict[str, str] = {
    JPEGBaseline8Bit: "image/jpeg",
    JPEGExtended12Bit: "image/jpeg",
    JPEGLossless: "image/jpeg",
    JPEGLosslessSV1: "image/jpeg",
    JPEGLSLossless: "image/jls",
    JPEGLSNearLossless: "image/jls",
    JPEG2000Lossless: "image/jp2",
    JPEG2000: "image/jp2",
    "1.2.840.10008.1.2.4.201": "image/jph",
    "1.2.840.10008.1.2.4.202": "image/jph",
    "1.2.840.10008.1.2.4.203": "image/jph",
    RLELossless: "image/dicom-rle",
}


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header, unwrapped from ``multipart/related; type=...``."""

    type: str
    transfer_syntax: str | None = None
    multipart: bool = False
    quality: float = 1.0
    params: dict[str, str] = field(default_factory=dict, compare=False)

    def allows(self, media_type: str) -> bool:
        """Whether this range covers *media_type* (wildcards ``*/*`` and ``image/*``)."""
        if self.type in ("*/*", "*"):
            return True
        major, _, minor = self.type.partition("/")
        want_major, _, want_minor = media_type.partition("/")
        return major == want_major and minor in ("*", want_minor)


def _split(value: str, sep: str) -> list[str]:
    """Split on *sep* outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_params(items: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        name, _, value = item.partition("=")
        params[name.strip().lower()] = value.strip().strip('"').strip()
    return params


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """The media type (lower case) and parameters of a Content-Type value."""
    pieces = _split(value or "", ";")
    if not pieces:
        return "", {}
    return pieces[0].lower(), parse_params(pieces[1:])


def parse_accept(value: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, best first; ``*/*`` when there is none."""
    if not value or not value.strip():
        return [MediaRange("*/*")]
    ranges: list[MediaRange] = []
    for entry in _split(value, ","):
        media_type, params = parse_content_type(entry)
        try:
            quality = float(params.pop("q", "1") or 1)
        except ValueError:
            quality = 1.0
        syntax = params.get("transfer-syntax") or None
        if media_type == "multipart/related":
            inner = (params.get("type") or "*/*").lower()
            ranges.append(MediaRange(inner, syntax, True, quality, params))
        else:
            ranges.append(MediaRange(media_type, syntax, False, quality, params))
    ranges.sort(key=lambda r: -r.quality)
    return [r for r in ranges if r.quality > 0]


def dicom_syntaxes(ranges: list[MediaRange]) -> set[str] | None:
    """Transfer syntaxes acceptable for ``application/dicom`` parts (PS3.18 8.7.3.5.2).

    A range without ``transfer-syntax`` means explicit VR little endian; ``*`` means any (as
    stored). ``None`` when no range accepts ``application/dicom`` at all.
    """
    accepted: set[str] = set()
    found = False
    for media in ranges:
        if media.allows("application/dicom"):
            found = True
            accepted.add(media.transfer_syntax or ExplicitVRLittleEndian)
    return accepted if found else None
