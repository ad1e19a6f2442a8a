"""PS3.4 C.2.2.2 matching rules, each with an expected result worked out by hand."""

import pytest

from vesalius.dicom.matching import (
    AnyOf,
    MatchingError,
    Range,
    Single,
    Wildcard,
    fold_text,
    matches,
    normalize_time,
    parse_constraint,
)


def check(keyword: str, vr: str, query: str, stored: str | list[str], fold: bool = False) -> bool:
    constraint = parse_constraint(keyword, vr, query)
    assert constraint is not None
    return matches(constraint, stored, fold=fold)


@pytest.mark.parametrize("value", [None, "", "*", "  "])
def test_universal_matching_gives_no_constraint(value: str | None) -> None:
    assert parse_constraint("PatientName", "PN", value) is None


def test_date_dash_alone_is_universal() -> None:
    assert parse_constraint("StudyDate", "DA", "-") is None


def test_single_value_is_exact_and_case_sensitive() -> None:
    assert check("PatientID", "LO", "ABC123", "ABC123")
    assert not check("PatientID", "LO", "ABC123", "abc123")
    assert not check("PatientID", "LO", "ABC", "ABC123")


def test_person_name_folding_ignores_case_and_accents_when_asked() -> None:
    assert check("PatientName", "PN", "muller^jose", "Müller^José", fold=True)
    assert not check("PatientName", "PN", "muller^jose", "Müller^José", fold=False)
    assert fold_text("ÉLODIE") == "elodie"
    assert fold_text("Ødegård^Łukasz") == "odegard^lukasz"
    assert fold_text("STRAßE") == "strasse"


def test_folding_applies_only_to_person_names() -> None:
    assert not check("StudyDescription", "LO", "chest", "CHEST", fold=True)


@pytest.mark.parametrize(
    ("query", "stored", "expected"),
    [
        ("DOE*", "DOE^JOHN", True),
        ("DOE*", "DOEBLER^ANN", True),
        ("*JOHN", "DOE^JOHN", True),
        ("*JOHN", "DOE^JOHNNY", False),
        ("D?E^JOHN", "DOE^JOHN", True),
        ("D?E^JOHN", "DE^JOHN", False),
        ("*^J*", "SMITH^JANE", True),
        ("*^J*", "SMITH", False),
        ("100%*", "100%_SURE", True),  # % and _ are literal characters in DICOM
        ("100%*", "1000", False),
    ],
)
def test_wildcards(query: str, stored: str, expected: bool) -> None:
    assert check("PatientName", "PN", query, stored) is expected


def test_wildcard_is_parsed_as_such() -> None:
    constraint = parse_constraint("PatientName", "PN", "DOE*")
    assert constraint is not None and constraint.matcher == Wildcard("DOE*")


@pytest.mark.parametrize(
    ("query", "stored", "expected"),
    [
        ("20200101-20201231", "20200615", True),
        ("20200101-20201231", "20200101", True),  # bounds are inclusive
        ("20200101-20201231", "20201231", True),
        ("20200101-20201231", "20210101", False),
        ("20200101-", "20991231", True),
        ("20200101-", "20191231", False),
        ("-20200101", "19000101", True),
        ("-20200101", "20200102", False),
        ("20200615", "20200615", True),
        ("2020.06.15", "20200615", True),  # the ACR-NEMA form is still accepted
    ],
)
def test_date_ranges(query: str, stored: str, expected: bool) -> None:
    assert check("StudyDate", "DA", query, stored) is expected


@pytest.mark.parametrize(
    ("query", "stored", "expected"),
    [
        ("0800-1200", "0930", True),
        ("0800-1200", "120030", True),  # 1200 as an upper bound covers the whole minute
        ("0800-1200", "1201", False),
        ("0800-1200", "075959", False),
        ("-0800", "0759", True),
        ("1000-", "235959.999", True),
        ("1000-", "0959", False),
    ],
)
def test_time_ranges(query: str, stored: str, expected: bool) -> None:
    assert check("StudyTime", "TM", query, stored) is expected


def test_time_normalisation() -> None:
    assert normalize_time("0830") == "083000.000000"
    assert normalize_time("08") == "080000.000000"
    assert normalize_time("12", upper=True) == "125959.999999"
    assert normalize_time("08:30:15.5") == "083015.500000"


def test_datetime_range() -> None:
    assert check("AcquisitionDateTime", "DT", "20200101-20200102", "20200102235959")
    assert not check("AcquisitionDateTime", "DT", "20200101-20200102", "20200103000000")
    assert check("AcquisitionDateTime", "DT", "20200101120000-", "20200101130000")


def test_uid_list_matching() -> None:
    constraint = parse_constraint("SOPInstanceUID", "UI", "1.2.3\\1.2.4")
    assert constraint is not None
    assert constraint.matcher == AnyOf((Single("1.2.3"), Single("1.2.4")))
    assert matches(constraint, "1.2.4")
    assert not matches(constraint, "1.2.5")


def test_uids_never_take_wildcards() -> None:
    constraint = parse_constraint("StudyInstanceUID", "UI", "1.2.*")
    assert constraint is not None and constraint.matcher == Single("1.2.*")
    assert not matches(constraint, "1.2.3")


def test_multi_valued_stored_attribute_matches_any_value() -> None:
    assert check("ModalitiesInStudy", "CS", "MR", ["CT", "MR"])
    assert check("ModalitiesInStudy", "CS", "CT\\PT", ["PT"])
    assert not check("ModalitiesInStudy", "CS", "US", ["CT", "MR"])


def test_empty_stored_value_does_not_match_a_value() -> None:
    assert not check("AccessionNumber", "SH", "A1", "")
    assert not check("AccessionNumber", "SH", "A*", [])
    constraint = parse_constraint("AccessionNumber", "SH", "A1")
    assert constraint is not None and not matches(constraint, None)


@pytest.mark.parametrize(
    ("vr", "value"),
    [("DA", "2020-13-45x"), ("DA", "2020"), ("TM", "25x"), ("DA", "abc-def")],
)
def test_malformed_values_are_refused(vr: str, value: str) -> None:
    with pytest.raises(MatchingError):
        parse_constraint("StudyDate" if vr == "DA" else "StudyTime", vr, value)


def test_range_parse() -> None:
    constraint = parse_constraint("StudyDate", "DA", "20200101-20201231")
    assert constraint is not None
    assert constraint.matcher == Range("20200101", "20201231")


def test_person_name_query_groups_match_on_the_alphabetic_group() -> None:
    constraint = parse_constraint("PatientName", "PN", "Yamada*=山田*=やまだ*")
    assert constraint is not None and constraint.matcher == Wildcard("Yamada*")
    assert matches(constraint, "Yamada^Tarou")
    assert parse_constraint("PatientName", "PN", "*=*") is None
    listed = parse_constraint("PatientName", "PN", "Wang=王\\Li=李")
    assert listed is not None and listed.matcher == AnyOf((Single("Wang"), Single("Li")))
    with pytest.raises(MatchingError, match="alphabetic group"):
        parse_constraint("PatientName", "PN", "=山田*")
