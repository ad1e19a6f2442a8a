"""Matching constraints turned into SQL on the index columns.

The rules themselves live in :mod:`vesalius.dicom.matching`; this module only knows which
column holds which attribute, and the SQL spelling of each rule (LIKE escaping, folded person
names, normalised dates and times) that works the same on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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


# The shape of a condition: everything of its SQL but its values. Conditions of one shape
# differ only in their values, so a statement built once per shape serves them all with the
# values as parameters (``imaging.find``); building the SQL expression, and SQLAlchemy deriving
# its cache key, cost more than running the query.
Shape = tuple[Any, ...]


def condition(constraint: Constraint, *, fold_pn: bool) -> ColumnElement[bool]:
    """The SQL condition for a constraint on an indexed attribute."""
    shape, values = condition_plan(constraint, fold_pn=fold_pn)
    return condition_sql(shape, iter(values))


def condition_plan(constraint: Constraint, *, fold_pn: bool) -> tuple[Shape, list[str]]:
    """The shape of :func:`condition`'s SQL for *constraint*, and the values it binds in order."""
    indexed = COLUMNS.get(constraint.keyword)
    fold = fold_pn and indexed is not None and indexed.folded is not None
    shape, values = matcher_plan(constraint.matcher, fold=fold)
    return (constraint.keyword, fold, shape), values


def condition_sql(shape: Shape, values: Iterator[Any]) -> ColumnElement[bool]:
    """The SQL condition of *shape*, taking its values (literals or bind parameters) in order."""
    keyword, fold, matcher_shape = shape
    # The subqueries use their own aliases, correlated to the outer Study only, so that they
    # mean the same in a study query (find) and in an instance query joined to its series
    # (retrieve).
    if keyword in STUDY_FROM_SERIES:
        series = aliased(Series)
        column = getattr(series, STUDY_FROM_SERIES[keyword].key)
        inner = plan_sql(matcher_shape, column, values)
        return exists(select(series.id).where(series.study_pk == Study.id, inner).correlate(Study))
    if keyword in STUDY_FROM_INSTANCES:
        series, instance = aliased(Series), aliased(Instance)
        column = getattr(instance, STUDY_FROM_INSTANCES[keyword].key)
        inner = plan_sql(matcher_shape, column, values)
        return exists(
            select(instance.id)
            .join(series, instance.series_pk == series.id)
            .where(series.study_pk == Study.id, inner)
            .correlate(Study)
        )
    indexed = COLUMNS[keyword]
    return plan_sql(matcher_shape, indexed.folded if fold else indexed.column, values)


def matcher_sql(matcher: object, column: object, *, fold: bool) -> ColumnElement[bool]:
    """The SQL spelling of one matching rule on *column* (its folded twin when *fold*).

    Also used for tables outside the imaging index (the central index's study records).
    """
    shape, values = matcher_plan(matcher, fold=fold)
    return plan_sql(shape, column, iter(values))


def matcher_plan(matcher: object, *, fold: bool) -> tuple[Shape, list[str]]:
    """The shape of a matching rule's SQL and the values it compares with, in order."""
    if isinstance(matcher, AnyOf):
        values = [fold_text(m.value) if fold else m.value for m in matcher.options
                  if isinstance(m, Single)]  # fmt: skip
        singles = len(values)
        wildcards: list[Shape] = []
        for option in matcher.options:
            if isinstance(option, Wildcard):
                shape, more = matcher_plan(option, fold=fold)
                wildcards.append(shape)
                values += more
        return ("any", singles, tuple(wildcards)), values
    if isinstance(matcher, Single):
        return ("equal",), [fold_text(matcher.value) if fold else matcher.value]
    if isinstance(matcher, Wildcard):
        pattern = fold_text(matcher.pattern) if fold else matcher.pattern
        if pattern.strip("*") == "":
            return ("present",), []
        return ("like",), [like_pattern(pattern)]
    assert isinstance(matcher, Range)
    bounds = [value for value in (matcher.low, matcher.high) if value is not None]
    return ("range", matcher.low is not None, matcher.high is not None), bounds


def plan_sql(shape: Shape, column: object, values: Iterator[Any]) -> ColumnElement[bool]:
    """The SQL of a matching rule of *shape* on *column*, taking its values in order."""
    col = column  # an InstrumentedAttribute; typed loosely to keep SQLAlchemy's generics quiet
    kind = shape[0]
    if kind == "any":
        _, singles, wildcards = shape
        parts: list[ColumnElement[bool]] = []
        if singles:
            parts.append(col.in_([next(values) for _ in range(singles)]))  # type: ignore[attr-defined]
        parts += [plan_sql(wildcard, column, values) for wildcard in wildcards]
        return or_(*parts) if parts else false()
    if kind == "equal":
        return col == next(values)  # type: ignore[no-any-return,operator]
    if kind == "present":
        return col.is_not(None)  # type: ignore[attr-defined,no-any-return]
    if kind == "like":
        return col.like(next(values), escape=_ESCAPE)  # type: ignore[attr-defined,no-any-return]
    _, has_low, has_high = shape
    bounds = [col.is_not(None), col != ""]  # type: ignore[attr-defined,operator]
    if has_low:
        bounds.append(col >= next(values))  # type: ignore[operator]
    if has_high:
        bounds.append(col <= next(values))  # type: ignore[operator]
    return and_(*bounds)
