"""Part10Writer: a received Part 10 stream into a spool, given the preamble when it lacks one,
however the stream is cut into pieces."""

from __future__ import annotations

from pathlib import Path

import pytest

from vesalius.archive.parse import Part10Writer
from vesalius.storage.filesystem import FilesystemBlobStore

PREAMBLE = b"\x00" * 128 + b"DICM"
META = b"\x02\x00\x00\x00UL\x04\x00" + bytes(4)  # a stream that starts with its file meta
BODY = bytes(range(256)) * 40


def _written(tmp_path: Path, pieces: list[bytes | memoryview]) -> bytes:
    store = FilesystemBlobStore(tmp_path)
    with store.spool() as spool:
        writer = Part10Writer(spool)
        for piece in pieces:
            writer.write(piece)
        writer.close()
        data = spool.path.read_bytes()
        spool.discard()
    return data


def _cut(data: bytes, size: int) -> list[bytes | memoryview]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 7, 131, 132, 133, 4096, 1 << 20])
@pytest.mark.parametrize("has_preamble", [True, False])
def test_pieces_of_every_size(tmp_path: Path, size: int, has_preamble: bool) -> None:
    stream = (PREAMBLE if has_preamble else b"") + META + BODY
    assert _written(tmp_path, _cut(stream, size)) == PREAMBLE + META + BODY


def test_views_of_a_larger_buffer(tmp_path: Path) -> None:
    """A piece may be a memoryview (STOW-RS hands on views of the body it read)."""
    buffer = memoryview(b"junk" + META + BODY + b"junk")
    pieces = [buffer[4:1004], buffer[1004 : len(buffer) - 4]]
    assert _written(tmp_path, pieces) == PREAMBLE + META + BODY


def test_a_stream_shorter_than_the_preamble(tmp_path: Path) -> None:
    assert _written(tmp_path, [META[:3], META[3:]]) == PREAMBLE + META
    assert _written(tmp_path, [b"xyz"]) == b"xyz"  # not DICOM: left for the parser to refuse
