"""The fast parse (raw scan) never reads a file differently from the pydicom path.

For each file the fast path either declines (the caller then reads it with pydicom) or gives
exactly what the pydicom path gives: the same JSON, UIDs and transfer syntax, and a refusal only
where the pydicom path refuses too. Files: pydicom's own test files, generated instances of the
shapes the archive receives, and seeded random mutations of them.
"""

from __future__ import annotations

import io
import random
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit

from dicomgen import make_dataset, make_file, to_bytes
from vesalius.archive import parse
from vesalius.archive.parse import ParsedInstance, parse_file, parse_instance, with_preamble
from vesalius.dicom import rawscan
from vesalius.dicom.dicomjson import BULK_DATA_THRESHOLD
from vesalius.dicom.rawscan import NeedMore, Unusual
from vesalius.errors import InvalidInstance

Verdict = ParsedInstance | str


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def reference(data: bytes) -> Verdict:
    """What the pydicom path makes of *data*: the parsed instance, or the refusal."""
    try:
        return parse._parse(io.BytesIO(data), len(data))
    except InvalidInstance as exc:
        return f"refused: {exc}"
    except Exception as exc:  # the fast path must not accept what the pydicom path chokes on
        return f"error: {type(exc).__name__}"


def fast(data: bytes, complete: bool = True, size: int | None = None) -> Verdict | None:
    """What the fast path makes of *data*: None when it leaves the file to the pydicom path."""
    try:
        return parse._parse_fast(data, complete, len(data) if size is None else size)
    except (Unusual, NeedMore):
        return None
    except InvalidInstance:
        return "refused"


def check(data: bytes) -> bool:
    """Assert the fast path agrees with the pydicom path; whether it read the file itself."""
    data = with_preamble(data)
    expected = reference(data)
    got = fast(data)
    if got == "refused":
        assert isinstance(expected, str) and expected.startswith("refused"), expected
    elif got is not None:
        assert isinstance(expected, ParsedInstance), expected
        assert got.json == expected.json
        assert (got.uids, got.transfer_syntax_uid) == (
            expected.uids,
            expected.transfer_syntax_uid,
        )
    if not (isinstance(expected, str) and expected.startswith("error")):
        # the entry point gives the pydicom path's answer, refusals worded alike
        try:
            assert parse_instance(data) == expected
        except InvalidInstance as exc:
            assert expected == f"refused: {exc}"
    return isinstance(got, ParsedInstance)


def test_pydicom_test_files() -> None:
    paths = [p for p in sorted(get_testdata_files("*")) if Path(p).is_file()]
    read_fast = sum(check(Path(path).read_bytes()) for path in paths)
    assert len(paths) > 50
    assert read_fast >= 15  # the plain ones are read by the fast path


def sequence_item(**attributes: Any) -> Dataset:
    item = Dataset()
    for key, value in attributes.items():
        setattr(item, key, value)
    return item


def rich_dataset(syntax: str, undefined: bool, **extra: Any) -> Dataset:
    """An instance with the shapes real headers have: sequences (nested, empty items),
    private tags, many VRs, multiple and empty values."""
    ds = make_dataset(
        transfer_syntax=syntax,
        ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
        PixelSpacing=[0.48828125, 0.48828125],
        ImagePositionPatient=[-125.0, -125.5, 10.25],
        ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
        SliceThickness="1.25",
        AcquisitionDateTime="20240102101500.123456",
        ContentTime="101500.5",
        PatientAge="054Y",
        OtherPatientIDs="A\\B",
        InstitutionName="",
        ImageComments="free text, padded ",
        ReferencedFrameNumber=[1, 2],
        FrameIncrementPointer=0x00181063,
        **extra,
    )
    ds.add_new(0x00181310, "US", [0, 512, 512, 0])  # Acquisition Matrix
    ds.add_new(0x00189087, "FD", 1000.5)  # Diffusion b-value
    ds.add_new(0x00189219, "SL", -5)  # Tag Angle Second Axis
    ds.add_new(0x00080012, "DA", "20240102")
    ds.add_new(0x00081190, "UR", "http://example.org/x")
    ds.add_new(0x00400310, "ST", "comment")
    ds.add_new(0x00189346, "SQ", Sequence())  # an empty sequence
    ds.ReferencedImageSequence = Sequence(
        [
            sequence_item(ReferencedSOPClassUID="1.2.3", ReferencedSOPInstanceUID="1.2.3.4"),
            Dataset(),
            sequence_item(
                PurposeOfReferenceCodeSequence=Sequence(
                    [sequence_item(CodeValue="121311", CodeMeaning="Localizer")]
                )
            ),
        ]
    )
    ds.private_block(0x0009, "GEMS_IDEN_01", create=True).add_new(0x01, "LO", "SCANNER 1")
    ds.private_block(0x0019, "UNKNOWN CREATOR", create=True).add_new(0x10, "OB", b"\x01\x02")
    if undefined:
        ds["ReferencedImageSequence"].is_undefined_length = True
        for item in ds.ReferencedImageSequence:
            item.is_undefined_length_sequence_item = True
    return ds


SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("undefined", [False, True])
def test_rich_instances_are_read_fast_and_alike(syntax: str, undefined: bool) -> None:
    assert check(to_bytes(rich_dataset(syntax, undefined)))


@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize(
    "attributes",
    [
        {"SpecificCharacterSet": "ISO_IR 100", "PatientName": "Müller^Jörg"},
        {"SpecificCharacterSet": "ISO_IR 192", "PatientName": "Иванов^Пётр"},
        {"SpecificCharacterSet": "ISO_IR 144", "PatientName": "Иванов^Пётр"},  # declined
        {"PatientName": "Yamada^Tarou=山田^太郎"},  # ideographic: declined
        {"BitsAllocated": 8, "BitsStored": 8, "HighBit": 7},  # implicit: OB pixel data
        {"NumberOfFrames": 2},  # refused: one frame's worth of pixel data
        {"Rows": None},  # refused: no image description
        {"SOPInstanceUID": "1.2.abc"},  # refused
        {"StudyInstanceUID": ""},  # refused
        {"SeriesInstanceUID": ["1.2", "1.3"]},  # declined, then refused
    ],
)
def test_variants(syntax: str, attributes: dict[str, Any]) -> None:
    check(make_file(transfer_syntax=syntax, **attributes))


def test_plain_files_are_read_fast() -> None:
    for syntax in SYNTAXES:
        assert check(make_file(transfer_syntax=syntax))
        assert check(make_file(transfer_syntax=syntax, SpecificCharacterSet="ISO_IR 192"))


def test_encapsulated_pixel_data() -> None:
    ds = make_dataset(transfer_syntax=JPEGBaseline8Bit, BitsAllocated=8, BitsStored=8, HighBit=7)
    ds.PixelData = encapsulate([b"\xff\xd8" + bytes(100) + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=False, little_endian=True)
    assert check(buffer.getvalue())


def test_the_meta_header_naming_another_instance_is_refused_alike() -> None:
    data = make_file()
    sop = parse_instance(data).sop_instance_uid.encode()
    other = sop[:-1] + (b"1" if sop[-1:] != b"1" else b"2")
    at = data.index(sop)  # the meta header's copy comes first
    assert not check(data[:at] + other + data[at + len(sop) :])
    with pytest.raises(InvalidInstance, match="the meta header's SOP Instance UID"):
        parse_instance(data[:at] + other + data[at + len(sop) :])


def real_header(
    syntax: str,
    elements: tuple[tuple[int, str, Any], ...] = (),
    **attributes: Any,
) -> bytes:
    """pydicom's CT_small.dcm (a GE CT header: private tags, US or SS values) in *syntax*,
    with *attributes* and *elements* (tag, VR, value) set."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = syntax
    for key, value in attributes.items():
        setattr(ds, key, value)
    for tag, vr, value in elements:
        ds.add_new(tag, vr, value)
    buffer = io.BytesIO()
    implicit = syntax == ImplicitVRLittleEndian
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("syntax", "representation"),
    [(syntax, representation) for syntax in SYNTAXES for representation in (0, 1)]
    + [(ImplicitVRLittleEndian, None)],  # no Pixel Representation: left to pydicom
)
def test_a_real_header_and_its_pixel_values(syntax: str, representation: int | None) -> None:
    vr = "SS" if representation else "US"
    data = real_header(
        syntax,
        PixelRepresentation=representation,
        elements=((0x00280106, vr, 0), (0x00280120, vr, 100)),
    )
    read_fast = check(data)
    # US or SS read fast in implicit VR where the Pixel Representation decides it
    assert read_fast == (representation is not None or syntax == ExplicitVRLittleEndian)
    if read_fast and representation is not None:
        assert parse_instance(data).json["00280120"] == {"vr": vr, "Value": [100]}


def mutations(data: bytes, rng: random.Random, header_end: int) -> bytes:
    """*data* with one random change in its first *header_end* bytes (or cut short)."""
    out = bytearray(data)
    at = rng.randrange(132, header_end)
    kind = rng.randrange(6)
    if kind == 0:
        out[at] = rng.randrange(256)
    elif kind == 1:
        out[at] ^= 1 << rng.randrange(8)
    elif kind == 2:
        width = rng.choice([2, 4])
        value = rng.choice([0, 1, 0xFF, 0xFFFF, 0xFFFFFFFF, rng.randrange(1 << (8 * width))])
        out[at : at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    elif kind == 3:
        del out[at : at + rng.randrange(1, 9)]
    elif kind == 4:
        out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    else:
        return bytes(out[:at])
    return bytes(out)


def test_random_mutations() -> None:
    bases = []
    for syntax in SYNTAXES:
        for undefined in (False, True):
            ds = rich_dataset(syntax, undefined, SpecificCharacterSet="ISO_IR 100")
            bases.append(to_bytes(ds))
        bases.append(make_file(transfer_syntax=syntax))
        bases.append(real_header(syntax))
    rng = random.Random(20261203)
    read_fast = 0
    for i in range(600):
        base = bases[i % len(bases)]
        header_end = base.rfind(b"\xe0\x7f\x10\x00") + 12
        read_fast += check(mutations(base, rng, header_end))
    assert read_fast >= 40  # some mutations leave plain files (most damage a UID or cut it)


def test_a_head_that_ends_too_soon_asks_for_more_or_agrees() -> None:
    rng = random.Random(7)
    for syntax in SYNTAXES:
        data = to_bytes(rich_dataset(syntax, True))
        whole = fast(data)
        assert isinstance(whole, ParsedInstance)
        pixel_value = data.rfind(b"\xe0\x7f\x10\x00") + (
            8 if syntax != ExplicitVRLittleEndian else 12
        )
        for cut in sorted(rng.sample(range(pixel_value), 60)):
            with pytest.raises(NeedMore):
                parse._parse_fast(data[:cut], False, len(data))
        assert fast(data[:pixel_value], False, len(data)) == whole


def test_parse_file_reads_fast_and_alike(tmp_path: Path) -> None:
    ds = rich_dataset(ExplicitVRLittleEndian, True)
    ds.add_new(0x00291010, "OB", bytes(200_000))  # a header larger than the first read
    ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    for name, data in {
        "big.dcm": to_bytes(ds),
        "small.dcm": make_file(),
        "implicit.dcm": make_file(transfer_syntax=ImplicitVRLittleEndian),
    }.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert parse_file(path) == reference(data)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(make_file(rows=64, columns=64)[:-100])
    with pytest.raises(InvalidInstance, match="the file is truncated"):
        parse_file(truncated)


def test_implicit_private_tags_take_the_private_dictionary_vr() -> None:
    ds = make_dataset(transfer_syntax=ImplicitVRLittleEndian)
    block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    block.add_new(0x8B, "SS", 3)  # in pydicom's private dictionary as SS
    block.add_new(0xFF, "UL", 12345678)  # not in it: UN
    data = to_bytes(ds)
    assert check(data)
    parsed = parse_instance(data)
    assert parsed.json["0019108B"] == {"vr": "SS", "Value": [3]}
    assert parsed.json["001910FF"]["vr"] == "UN"


def test_a_length_overrunning_its_item_is_left_to_pydicom() -> None:
    data = to_bytes(rich_dataset(ExplicitVRLittleEndian, False))
    at = data.find(struct.pack("<HH", 0x0008, 0x1150) + b"UI")  # inside the first item
    damaged = data[: at + 6] + struct.pack("<H", 200) + data[at + 8 :]
    assert fast(damaged) is None
    check(damaged)


def scanned(data: bytes, walk: Any, complete: bool = True) -> Any:
    """The raw scan of *data* with the C walker *walk*, or with the Python loop alone (None):
    what it read, or the name of what it raised."""
    saved = rawscan._walk
    rawscan._walk = walk
    try:
        return rawscan.scan(
            data, complete=complete, threshold=BULK_DATA_THRESHOLD, bulk=parse._bulk_uri
        )
    except (Unusual, NeedMore) as exc:
        return type(exc).__name__
    finally:
        rawscan._walk = saved


def test_the_c_walker_is_built() -> None:
    # `make install` installs a C compiler; without one the scan is right but slower
    assert rawscan._walk is not None, "vesalius.dicom._rawwalk was not built: run make install"


@pytest.mark.skipif(rawscan._walk is None, reason="vesalius.dicom._rawwalk was not built")
def test_the_c_walker_reads_every_file_as_the_python_loop_does() -> None:
    """The C walker reads the plain elements only and leaves every decision to the Python
    scanner: with or without it, every file scans to the same result or the same refusal."""
    walk = rawscan._walk
    files = [Path(p).read_bytes() for p in sorted(get_testdata_files("*")) if Path(p).is_file()]
    bases = [to_bytes(rich_dataset(s, u)) for s in SYNTAXES for u in (False, True)]
    bases += [real_header(s) for s in SYNTAXES]
    rng = random.Random(20261205)
    mutated = []
    for i in range(1500):
        base = bases[i % len(bases)]
        mutated.append(mutations(base, rng, base.rfind(b"\xe0\x7f\x10\x00") + 12))
    read = 0
    for data in [*map(with_preamble, files), *bases, *mutated]:
        expected = scanned(data, None)
        assert scanned(data, walk) == expected
        read += isinstance(expected, rawscan.Scanned)
    assert read >= 100
    for base in bases:  # heads that end anywhere
        for cut in sorted(rng.sample(range(len(base)), 40)):
            assert scanned(base[:cut], walk, False) == scanned(base[:cut], None, False)


@pytest.mark.skipif(rawscan._walk is None, reason="vesalius.dicom._rawwalk was not built")
def test_the_c_walker_stays_inside_its_bounds() -> None:
    walk = rawscan._walk
    data = to_bytes(rich_dataset(ExplicitVRLittleEndian, False))
    start = rawscan._Scanner(data, True, 1024, parse._bulk_uri).meta(rawscan.PREAMBLE)[1]
    for pos, limit in ((-5, len(data)), (len(data) + 10, len(data)), (start, 10**12)):
        out: dict[str, Any] = {}
        walk(data, pos, limit, -1, out, {}, 10, True, False)  # no read past the data
    out = {}
    end, last = walk(data, start, start + 3, -1, out, {}, 10, True, False)
    assert (end, last, out) == (start, -1, {})  # not even one element header fits
    end, last = walk(data, start, len(data), -1, out, {}, 0, True, False)
    assert end > start and last > 0 and out  # a full key cache only stops the caching
    with pytest.raises(TypeError):
        walk("text", 0, 4, -1, {}, {}, 10, True, False)
