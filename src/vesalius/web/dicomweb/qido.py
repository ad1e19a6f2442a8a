"""QIDO-RS (PS3.18 10.6): searches for studies, series and instances.

Query parameters become a :class:`vesalius.archive.query.Query` through ``build_query``, the
same function C-FIND uses, and the archive's answers are shaped by :mod:`.formatter`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydicom.datadict import dictionary_VR, tag_for_keyword

from vesalius.archive.query import build_query
from vesalius.dicom import dicomjson
from vesalius.dicom.dicomjson import DicomJson
from vesalius.dicom.levels import Level
from vesalius.errors import InvalidQuery, NotFound
from vesalius.web.dicomweb import formatter
from vesalius.web.dicomweb.common import (
    DICOMWEB_TAG,
    archive_of,
    dicomweb_url,
    json_response,
    problem,
)

router = APIRouter(tags=[DICOMWEB_TAG])

CONTROL = frozenset(
    {"limit", "offset", "includefield", "fuzzymatching", "accept", "charset", "source"}
)
# Where a study is held, in each study-level answer: a private element of Vesalius's
# ("local", or the name of the [[remote_pacs]] whose mirror lists it).
SOURCE_CREATOR = "00090010"
SOURCE_TAG = "00091010"

_PARAMETERS_DOC: list[dict[str, Any]] = [
    {
        "name": "includefield",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "Extra attributes to return: keywords or tags, comma-separated, or 'all'.",
    },
    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer"}},
    {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer"}},
    {
        "name": "fuzzymatching",
        "in": "query",
        "required": False,
        "schema": {"type": "boolean"},
        "description": "Accepted; matching is always literal (a Warning header says so).",
    },
    {
        "name": "source",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": (
            "Studies only: 'local' (held here) or a remote PACS's name (mirrored, not held "
            "here until retrieved); both when left out. Each study names its source in the "
            "private element (0009,1010) of creator VESALIUS."
        ),
    },
]
_OPENAPI = {
    "parameters": _PARAMETERS_DOC,
    "responses": {"200": {"content": {"application/dicom+json": {}}}},
}
_DESCRIPTION = (
    "Any other query parameter is a matching key, named by keyword (PatientName) or tag "
    "(00100010), matched by the rules of PS3.4 C.2.2.2 exactly as C-FIND matches them. "
    "Unknown parameters are refused with 400."
)


class SearchParams:
    """The parsed query string of a search."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, str | None]] = []
        self.include: list[str] = []
        self.include_all = False
        self.limit: int | None = None
        self.offset = 0
        self.source: str | None = None
        self.warnings: list[str] = []


def _int_param(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise problem(400, f"{name}={value!r} is not a whole number") from None
    if number < 0:
        raise problem(400, f"{name} must not be negative (got {number})")
    return number


def parse_search(request: Request) -> SearchParams:
    """Read the query string; raises a 400 with the reason for anything unreadable."""
    params = SearchParams()
    values: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        if name in CONTROL or name.lower() in CONTROL:
            lowered = name.lower()
            if lowered == "limit":
                params.limit = _int_param("limit", value)
            elif lowered == "offset":
                params.offset = _int_param("offset", value)
            elif lowered == "source":
                params.source = value.strip() or None
            elif lowered == "includefield":
                for field in (f.strip() for f in value.split(",")):
                    if not field:
                        continue
                    if field.lower() == "all":
                        params.include_all = True
                        continue
                    keyword = formatter.keyword_or_tag(field.split(".")[0])
                    if keyword is None:
                        raise problem(
                            400, f"includefield {field!r} is not a DICOM keyword nor a tag"
                        )
                    params.include.append(keyword)
            elif lowered == "fuzzymatching":
                if value.lower() not in ("true", "false"):
                    raise problem(400, f"fuzzymatching={value!r}: use true or false")
                if value.lower() == "true":
                    params.warnings.append(
                        "The fuzzymatching parameter is not supported. "
                        "Only literal matching has been performed."
                    )
            continue
        path = name.split(".")
        keyword = formatter.keyword_or_tag(path[0])
        if keyword is None:
            raise problem(
                400,
                f"unknown query parameter {name!r}: use a DICOM keyword or tag, "
                "or one of includefield, limit, offset, fuzzymatching",
            )
        if len(path) > 1 or tag_for_keyword(keyword) is None:
            params.warnings.append(f"matching on {name} is not supported and was ignored")
            continue
        values.setdefault(keyword, []).append(value)
    for keyword, given in values.items():
        vr = dictionary_VR(keyword)
        if vr == "UI":  # UID list matching: comma- or backslash-separated (PS3.18 8.3.4.1)
            given = [v.replace(",", "\\") for v in given]
        joined = "\\".join(given)
        params.keys.append((keyword, joined))
    return params


def _generated(
    result: DicomJson, level: Level, base: str, wanted: set[str] | None, source: str = "local"
) -> dict[str, dict[str, Any]]:
    if source != "local":
        # mirrored from a remote PACS: not retrievable here until it has been retrieved
        return {
            "00080056": {"vr": "CS", "Value": ["OFFLINE"]},
            SOURCE_CREATOR: {"vr": "LO", "Value": ["VESALIUS"]},
            SOURCE_TAG: {"vr": "LO", "Value": [source]},
        }
    study = dicomjson.first_string(result, "StudyInstanceUID")
    series = dicomjson.first_string(result, "SeriesInstanceUID") if level.depth >= 2 else None
    sop = dicomjson.first_string(result, "SOPInstanceUID") if level.depth >= 3 else None
    out: dict[str, dict[str, Any]] = {}
    if wanted is None or "00081190" in wanted:
        out["00081190"] = {"vr": "UR", "Value": [formatter.retrieve_url(base, study, series, sop)]}
    if wanted is None or "00080056" in wanted:
        out["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
    if level is Level.STUDY:
        out[SOURCE_CREATOR] = {"vr": "LO", "Value": ["VESALIUS"]}
        out[SOURCE_TAG] = {"vr": "LO", "Value": [source]}
    return out


def search(
    request: Request,
    level: Level,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> Response:
    params = parse_search(request)
    keys = list(params.keys)
    if study_uid is not None:
        keys = [k for k in keys if k[0] != "StudyInstanceUID"] + [("StudyInstanceUID", study_uid)]
    if series_uid is not None:
        keys = [k for k in keys if k[0] != "SeriesInstanceUID"]
        keys.append(("SeriesInstanceUID", series_uid))
    wanted_keywords = formatter.default_attributes(
        level, study_uid is not None, series_uid is not None
    )
    wanted_keywords += [k for k, _ in params.keys]
    wanted_keywords += params.include
    query_keys = keys + [(k, None) for k in params.include if tag_for_keyword(k) is not None]
    try:
        query = build_query(level, query_keys, limit=params.limit, offset=params.offset)
    except InvalidQuery as exc:
        raise problem(400, str(exc)) from None
    if params.source is not None and (level is not Level.STUDY or study_uid is not None):
        raise problem(400, "source= applies to the study search (/studies) only")
    if level is Level.STUDY:
        mirror = request.app.state.container.mirror
        try:
            sourced = mirror.find_studies(archive_of(request), query, params.source)
        except NotFound as exc:
            raise problem(400, f"source={params.source!r}: {exc}") from None
    else:
        sourced = [(r, "local") for r in archive_of(request).find(query)]
    base = dicomweb_url(request)
    if params.include_all:
        tags: list[str] | None = None
    else:
        tags = sorted(
            {dicomjson.tag_key(k) if tag_for_keyword(k) is not None else k for k in wanted_keywords}
            | ({SOURCE_CREATOR, SOURCE_TAG} if level is Level.STUDY else set())
        )
    wanted = None if tags is None else set(tags)
    answers = []
    for result, source in sourced:
        answer = formatter.select(result, tags, _generated(result, level, base, wanted, source))
        if tags is None and level is Level.IMAGE:
            sop = dicomjson.first_string(result, "SOPInstanceUID")
            url = formatter.retrieve_url(
                base,
                dicomjson.first_string(result, "StudyInstanceUID"),
                dicomjson.first_string(result, "SeriesInstanceUID"),
                sop,
            )
            answer = formatter.expand_bulk(answer, url)
        answers.append(answer)
    headers = {}
    if params.warnings:
        host = request.url.hostname or "vesalius"
        headers["Warning"] = ", ".join(f'299 {host} "{w}"' for w in params.warnings)
    return json_response(answers, headers=headers)


async def _search(
    request: Request, level: Level, study: str | None = None, series: str | None = None
) -> Response:
    return await run_in_threadpool(search, request, level, study, series)


@router.get(
    "/studies", summary="Search for studies", description=_DESCRIPTION, openapi_extra=_OPENAPI
)
async def search_studies(request: Request) -> Response:
    return await _search(request, Level.STUDY)


@router.get(
    "/series", summary="Search for series", description=_DESCRIPTION, openapi_extra=_OPENAPI
)
async def search_series(request: Request) -> Response:
    return await _search(request, Level.SERIES)


@router.get(
    "/instances", summary="Search for instances", description=_DESCRIPTION, openapi_extra=_OPENAPI
)
async def search_instances(request: Request) -> Response:
    return await _search(request, Level.IMAGE)


@router.get(
    "/studies/{study}/series",
    summary="Search for a study's series",
    description=_DESCRIPTION,
    openapi_extra=_OPENAPI,
)
async def search_study_series(request: Request, study: str) -> Response:
    return await _search(request, Level.SERIES, study)


@router.get(
    "/studies/{study}/instances",
    summary="Search for a study's instances",
    description=_DESCRIPTION,
    openapi_extra=_OPENAPI,
)
async def search_study_instances(request: Request, study: str) -> Response:
    return await _search(request, Level.IMAGE, study)


@router.get(
    "/studies/{study}/series/{series}/instances",
    summary="Search for a series' instances",
    description=_DESCRIPTION,
    openapi_extra=_OPENAPI,
)
async def search_series_instances(request: Request, study: str, series: str) -> Response:
    return await _search(request, Level.IMAGE, study, series)
