"""Queries in the archive's terms: a level, constraints, and the answer as DICOM JSON.

C-FIND and QIDO-RS both build a :class:`Query` with :func:`build_query` and read the answers
of :func:`run_query`; what differs between them is only the wire format. C-GET, C-MOVE, WADO
and delete turn the same kind of query into instances with :func:`select_instances`, through the
same lookup, so what is found is exactly what is retrieved or deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.datadict import tag_for_keyword
from sqlalchemy.orm import Session

from vesalius.dicom import dicomjson
from vesalius.dicom.dicomjson import DicomJson
from vesalius.dicom.dictionary import dictionary_entry
from vesalius.dicom.levels import COMPUTED_ATTRIBUTES, QUERY_CONTROL_ATTRIBUTES, Level, level_of
from vesalius.dicom.matching import Constraint, MatchingError, Single, matches, parse_constraint
from vesalius.errors import InvalidQuery
from vesalius.index import imaging
from vesalius.index.imaging import InstanceRecord
from vesalius.index.lookup import is_indexed

# Keys clients commonly send at the study level meaning the study-level twin.
_STUDY_LEVEL_ALIASES = {"Modality": "ModalitiesInStudy"}


@dataclass
class Query:
    """What to look for: a level and the constraints on its attributes and those above."""

    level: Level
    constraints: list[Constraint] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0
    want_sop_classes: bool = False


def build_query(
    level: Level,
    keys: Iterable[tuple[str, str | None]],
    *,
    limit: int | None = None,
    offset: int = 0,
) -> Query:
    """A query at *level* from (keyword, value) pairs; empty values are return keys only.

    Keys of levels below *level* cannot constrain it and are ignored, except ``Modality`` at
    the study level, which is read as ``ModalitiesInStudy`` as most archives do.

    Raises
    ------
    InvalidQuery
        For an unknown keyword or a value the matching rules cannot read.
    """
    query = Query(level=level, limit=limit, offset=offset)
    for keyword, value in keys:
        if level is Level.STUDY and keyword in _STUDY_LEVEL_ALIASES:
            keyword = _STUDY_LEVEL_ALIASES[keyword]
        if keyword == "SOPClassesInStudy":
            query.want_sop_classes = True
        if keyword in QUERY_CONTROL_ATTRIBUTES:
            continue
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise InvalidQuery(f"{keyword!r} is not a DICOM attribute keyword")
        if level_of(keyword).depth > level.depth:
            continue
        entry = dictionary_entry(tag)
        vr = entry[1] if entry is not None else "UN"
        if vr == "SQ":
            continue  # sequence matching is not supported: a return key only
        try:
            constraint = parse_constraint(keyword, vr, value)
        except MatchingError as exc:
            raise InvalidQuery(f"{keyword}: {exc}") from None
        if constraint is not None:
            query.constraints.append(constraint)
    return query


def _matching(
    session: Session, query: Query, *, fold_pn: bool
) -> tuple[list[imaging.Match], list[DicomJson]]:
    """The one lookup: the entities *query* selects, and each one's DICOM JSON.

    Constraints on indexed attributes are SQL; the others are matched here on the stored
    JSON, after which the limit and offset apply.
    """
    other = [c for c in query.constraints if not is_indexed(c.keyword)]
    in_sql = not other
    found = imaging.find(
        session,
        query.level,
        query.constraints,  # the index applies those it holds
        fold_pn=fold_pn,
        limit=query.limit if in_sql else None,
        offset=query.offset if in_sql else 0,
    )
    results = [_merge(match) for match in found]
    if other:
        kept = [
            (m, r) for m, r in zip(found, results, strict=True) if _matches_all(r, other, fold_pn)
        ]
        end = None if query.limit is None else query.offset + query.limit
        kept = kept[query.offset : end]
        found, results = [m for m, _ in kept], [r for _, r in kept]
    return found, results


def select_instances(session: Session, query: Query, *, fold_pn: bool) -> list[InstanceRecord]:
    """Every instance under the entities *query* selects: what C-FIND and QIDO-RS find is
    exactly what C-GET, C-MOVE, WADO and delete act on."""
    if all(is_indexed(c.keyword) for c in query.constraints) and query.limit is None:
        # The same SQL conditions as find, joined down to the instances in one statement.
        return imaging.instances_matching(session, query.level, query.constraints, fold_pn=fold_pn)
    found, _ = _matching(session, query, fold_pn=fold_pn)
    return imaging.instances_under(session, query.level, [m.pk for m in found])


def uid_query(study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> Query:
    """The query for one study, series or instance by its UIDs (taken literally: a backslash
    or a ``*`` in a UID from a URL is not a list or a wildcard)."""
    keys = [("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid)]
    keys.append(("SOPInstanceUID", sop_uid))
    level = Level.IMAGE if sop_uid is not None else Level.SERIES if series_uid else Level.STUDY
    return Query(
        level=level,
        constraints=[Constraint(k, "UI", Single(v)) for k, v in keys if v is not None],
    )


def run_query(session: Session, query: Query, *, fold_pn: bool) -> list[DicomJson]:
    """The entities matching *query*, each as DICOM JSON of its level and the levels above."""
    found, results = _matching(session, query, fold_pn=fold_pn)
    if query.want_sop_classes and query.level is Level.STUDY:
        pks = [int(m.counts["_study_pk"]) for m in found]
        classes = imaging.sop_classes_in_studies(session, pks)
        by_uid = {
            dicomjson.first_string(m.study or {}, "StudyInstanceUID"): classes[
                int(m.counts["_study_pk"])
            ]
            for m in found
        }
        for result in results:
            uid = dicomjson.first_string(result, "StudyInstanceUID")
            result[dicomjson.tag_key("SOPClassesInStudy")] = dicomjson.element(
                "SOPClassesInStudy", sorted(by_uid.get(uid, []))
            )
    return results


# (keyword, JSON key, VR, depth) of the computed attributes, looked up once: a dictionary
# lookup per attribute and match showed as a fifth of a C-FIND's CPU time.
_COMPUTED = [
    (keyword, dicomjson.tag_key(keyword), dicomjson.element(keyword, None)["vr"], level.depth)
    for keyword, level in COMPUTED_ATTRIBUTES.items()
]


def _merge(match: imaging.Match) -> DicomJson:
    merged: DicomJson = {}
    for part in (match.patient, match.study, match.series, match.instance):
        if part:
            merged.update(part)
    depth = match.level.depth
    counts = match.counts
    for keyword, key, vr, level_depth in _COMPUTED:
        if keyword in counts and level_depth <= depth:
            value = counts[keyword]
            values = value if isinstance(value, list) else [value]
            # as dicomjson.element writes it (none of these is a person name)
            merged[key] = {"vr": vr, "Value": values} if values else {"vr": vr}
    return merged


def _matches_all(result: DicomJson, constraints: list[Constraint], fold_pn: bool) -> bool:
    for constraint in constraints:
        values = dicomjson.value_strings(result.get(dicomjson.tag_key(constraint.keyword)))
        if not matches(constraint, values, fold=fold_pn):
            return False
    return True
