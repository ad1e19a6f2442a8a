"""The multipart/related reader fed a STOW-RS body in pieces of every kind of size."""

from __future__ import annotations

import random

import pytest

from vesalius.web.dicomweb.multipart import MultipartError, MultipartReader, PartData

BOUNDARY = "b0undary"


def body_of(parts: list[bytes]) -> bytes:
    out = b"preamble\r\n"
    for part in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def tricky_parts(rng: random.Random) -> list[bytes]:
    """Bodies holding what looks like the start of a delimiter, at their ends too."""
    near = [b"\r", b"\r\n", b"\r\n-", b"\r\n--", b"\r\n--b0und", b"--" + BOUNDARY.encode()]
    parts = [b"", b"x", b"\r\n--b0undar"]
    for _ in range(6):
        size = rng.choice([1, 7, 100, 5000, 70_000])
        data = bytearray(rng.randbytes(size))
        for _ in range(3):
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.choice(near)
        part = bytes(data) + rng.choice([b"", *near])
        delimiter = f"\r\n--{BOUNDARY}".encode()
        if (part + delimiter).find(delimiter) == len(part):  # a body never holds one
            parts.append(part)
    return parts


def read_in_pieces(body: bytes, sizes: list[int]) -> tuple[list[bytes], bool]:
    reader = MultipartReader(BOUNDARY)
    got: list[bytes] = []
    start = 0
    step = 0
    while start < len(body):
        size = sizes[step % len(sizes)]
        step += 1
        got += [part.body for part in reader.feed(body[start : start + size])]
        start += size
    return got, reader.finished


@pytest.mark.parametrize("seed", range(8))
def test_any_split_of_the_body_gives_the_same_parts(seed: int) -> None:
    rng = random.Random(seed)
    parts = tricky_parts(rng)
    body = body_of(parts)
    whole, finished = read_in_pieces(body, [len(body)])
    assert whole == parts and finished
    jagged = [rng.randrange(1, 40) for _ in range(50)]
    for sizes in ([1], [2], [11], [12], [13], [64 * 1024], jagged):  # the delimiter is 12
        assert read_in_pieces(body, sizes) == (parts, True), sizes


def test_a_large_part_is_handed_over_as_views_of_the_chunks() -> None:
    """Inside a part's body, pieces are views of the chunk fed, not copies of it."""
    reader = MultipartReader(BOUNDARY)
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    reader.events(head + b"start")
    chunk = b"z" * 100_000
    events = reader.events(chunk)
    assert all(isinstance(e, PartData) for e in events)
    assert b"".join(bytes(e.data) for e in events) == b"start" + chunk[:-11]  # 11 held back
    piece = events[-1].data
    assert isinstance(piece, memoryview) and piece.obj is chunk
    end = reader.events(f"\r\n--{BOUNDARY}--\r\n".encode())
    assert reader.finished and reader.parts_seen == 1
    assert b"".join(bytes(e.data) for e in end if isinstance(e, PartData)) == b"z" * 11


def test_garbage_after_a_boundary_is_named() -> None:
    reader = MultipartReader(BOUNDARY)
    with pytest.raises(MultipartError, match="garbage after a multipart boundary"):
        reader.events(f"--{BOUNDARY}".encode() + b"x" * 2000)
