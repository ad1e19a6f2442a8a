"""Matching constraints turned into SQL on the index columns.

The rules themselves live in :mod:`vesalius.dicom.matching`; this module only knows which
column holds which attribute, and the SQL spelling of each rule (LIKE escaping, folded person
names, normalised dates and times) that works the same on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, exists, false, or_, select
from sqlalchemy.orm import InstrumentedAttribute, aliased

from vesalius.dicom.levels import Level
from vesalius.dicom.matching import (
    AnyOf,
    Constraint,
    Range,
    Single,
    Wildcard,
    fold_text,
)
from vesalius.index.models import Instance, Patient, Series, Study

_ESCAPE = "!"


@dataclass(frozen=True)
class IndexedColumn:
    """Where an attribute is kept as a column, and its folded twin for person names."""

    level: Level
    column: InstrumentedAttribute[str | None] | InstrumentedAttribute[str]
    folded: InstrumentedAttribute[str | None] | None = None


COLUMNS: dict[str, IndexedColumn] = {
    "PatientName": IndexedColumn(Level.PATIENT, Patient.patient_name, Patient.patient_name_folded),
    "PatientID": IndexedColumn(Level.PATIENT, Patient.patient_id),
    "PatientBirthDate": IndexedColumn(Level.PATIENT, Patient.patient_birth_date),
    "PatientSex": IndexedColumn(Level.PATIENT, Patient.patient_sex),
    "StudyInstanceUID": IndexedColumn(Level.STUDY, Study.study_instance_uid),
    "StudyDate": IndexedColumn(Level.STUDY, Study.study_date),
    "StudyTime": IndexedColumn(Level.STUDY, Study.study_time),
    "AccessionNumber": IndexedColumn(Level.STUDY, Study.accession_number),
    "StudyID": IndexedColumn(Level.STUDY, Study.study_id),
    "StudyDescription": IndexedColumn(Level.STUDY, Study.study_description),
    "ReferringPhysicianName": IndexedColumn(
        Level.STUDY, Study.referring_physician_name, Study.referring_physician_name_folded
    ),
    "SeriesInstanceUID": IndexedColumn(Level.SERIES, Series.series_instance_uid),
    "Modality": IndexedColumn(Level.SERIES, Series.modality),
    "SeriesNumber": IndexedColumn(Level.SERIES, Series.series_number),
    "SeriesDescription": IndexedColumn(Level.SERIES, Series.series_description),
    "BodyPartExamined": IndexedColumn(Level.SERIES, Series.body_part_examined),
    "SeriesDate": IndexedColumn(Level.SERIES, Series.series_date),
    "SeriesTime": IndexedColumn(Level.SERIES, Series.series_time),
    "SOPInstanceUID": IndexedColumn(Level.IMAGE, Instance.sop_instance_uid),
    "SOPClassUID": IndexedColumn(Level.IMAGE, Instance.sop_class_uid),
    "InstanceNumber": IndexedColumn(Level.IMAGE, Instance.instance_number),
}

# Attributes matched through the series of a study rather than a column of their own.
STUDY_FROM_SERIES = {"ModalitiesInStudy": Series.modality}
STUDY_FROM_INSTANCES = {"SOPClassesInStudy": Instance.sop_class_uid}


def is_indexed(keyword: str) -> bool:
    return keyword in COLUMNS or keyword in STUDY_FROM_SERIES or keyword in STUDY_FROM_INSTANCES


def like_pattern(pattern: str) -> str:
    """A DICOM wildcard pattern as a LIKE pattern escaped with ``!``.

    Examples
    --------
    >>> like_pattern("DOE_*^J?")
    'DOE!_%^J_'
    """
    out = []
    for ch in pattern:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in ("%", "_", _ESCAPE):
            out.append(_ESCAPE + ch)
        else:
            out.append(ch)
    return "".join(out)


def condition(constraint: Constraint, *, fold_pn: bool) -> ColumnElement[bool]:
    """The SQL condition for a constraint on an indexed attribute."""
    # The subqueries use their own aliases, correlated to the outer Study only, so that they
    # mean the same in a study query (find) and in an instance query joined to its series
    # (retrieve).
    if constraint.keyword in STUDY_FROM_SERIES:
        series = aliased(Series)
        column = getattr(series, STUDY_FROM_SERIES[constraint.keyword].key)
        inner = matcher_sql(constraint.matcher, column, fold=False)
        return exists(select(series.id).where(series.study_pk == Study.id, inner).correlate(Study))
    if constraint.keyword in STUDY_FROM_INSTANCES:
        series, instance = aliased(Series), aliased(Instance)
        column = getattr(instance, STUDY_FROM_INSTANCES[constraint.keyword].key)
        inner = matcher_sql(constraint.matcher, column, fold=False)
        return exists(
            select(instance.id)
            .join(series, instance.series_pk == series.id)
            .where(series.study_pk == Study.id, inner)
            .correlate(Study)
        )
    indexed = COLUMNS[constraint.keyword]
    if fold_pn and indexed.folded is not None:
        return matcher_sql(constraint.matcher, indexed.folded, fold=True)
    return matcher_sql(constraint.matcher, indexed.column, fold=False)


def matcher_sql(matcher: object, column: object, *, fold: bool) -> ColumnElement[bool]:
    """The SQL spelling of one matching rule on *column* (its folded twin when *fold*).

    Also used for tables outside the imaging index (the central index's study records).
    """
    col = column  # an InstrumentedAttribute; typed loosely to keep SQLAlchemy's generics quiet
    if isinstance(matcher, AnyOf):
        singles = [m.value for m in matcher.options if isinstance(m, Single)]
        parts: list[ColumnElement[bool]] = []
        if singles:
            parts.append(col.in_([fold_text(v) if fold else v for v in singles]))  # type: ignore[attr-defined]
        parts += [
            matcher_sql(m, column, fold=fold) for m in matcher.options if isinstance(m, Wildcard)
        ]
        return or_(*parts) if parts else false()
    if isinstance(matcher, Single):
        value = fold_text(matcher.value) if fold else matcher.value
        return col == value  # type: ignore[no-any-return,operator]
    if isinstance(matcher, Wildcard):
        pattern = fold_text(matcher.pattern) if fold else matcher.pattern
        if pattern.strip("*") == "":
            return col.is_not(None)  # type: ignore[attr-defined,no-any-return]
        return col.like(like_pattern(pattern), escape=_ESCAPE)  # type: ignore[attr-defined,no-any-return]
    assert isinstance(matcher, Range)
    bounds = [col.is_not(None), col != ""]  # type: ignore[attr-defined,operator]
    if matcher.low is not None:
        bounds.append(col >= matcher.low)  # type: ignore[operator]
    if matcher.high is not None:
        bounds.append(col <= matcher.high)  # type: ignore[operator]
    return and_(*bounds)
