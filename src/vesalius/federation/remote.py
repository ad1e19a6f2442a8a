"""Remote PACS (``[[remote_pacs]]``) as sources of study records: listed over QIDO-RS, or over
C-FIND (pynetdicom as the SCU) when only ``ae_title``, ``host`` and ``port`` are given.

Everything a remote PACS answers is untrusted: an answer that is not DICOM JSON, a study
without a UID, a page that never ends, a timeout or a PACS that goes away mid-listing stops
the listing with a :class:`RemoteError` that says which PACS and what happened; nothing is
pushed from a listing that did not complete.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from vesalius import __version__
from vesalius.config import RemotePacs
from vesalius.federation.records import RecordError, StudyRecord, parse_record

PAGE = 1000
MAX_INSTANCES = 1_000_000
UIDS_PER_REQUEST = 40  # UIDs in one QIDO-RS query string (about 2.6 kB)
MAX_STUDIES = 10_000_000
INCLUDE = (
    "PatientID,PatientName,StudyInstanceUID,StudyDate,StudyTime,StudyDescription,"
    "ModalitiesInStudy,NumberOfStudyRelatedSeries,NumberOfStudyRelatedInstances"
)


FIND_KEYWORDS = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)


class RemoteError(Exception):
    """A remote PACS could not be listed; the message names it and says why."""


def _first(item: dict[str, Any], tag: str) -> Any:
    element = item.get(tag)
    if not isinstance(element, dict):
        return None
    values = element.get("Value")
    if not isinstance(values, list) or not values:
        return None
    return values[0]


def _person(value: Any) -> str | None:
    if isinstance(value, dict):
        alphabetic = value.get("Alphabetic")
        return alphabetic if isinstance(alphabetic, str) else None
    return value if isinstance(value, str) else None


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def record_from_dicom_json(item: Any, center: str | None, where: str) -> StudyRecord:
    """A QIDO-RS study answer as a record; raises :class:`RecordError` when it cannot be one."""
    if not isinstance(item, dict):
        raise RecordError(f"{where} is not a DICOM JSON object")
    modalities = item.get("00080061", {})
    values = modalities.get("Value") if isinstance(modalities, dict) else None
    modality = (
        "\\".join(v for v in values if isinstance(v, str)) if isinstance(values, list) else None
    )
    date = _first(item, "00080020")
    time = _first(item, "00080030")
    when = None
    if isinstance(date, str) and len(date.strip()) == 8:
        when = date.strip()
        if isinstance(time, str) and len(time.strip()) >= 4 and time.strip()[:4].isdigit():
            clock = time.strip().split(".")[0]
            when += (clock + "00")[:6] if len(clock) >= 4 else ""
    uid = _first(item, "0020000D")
    return parse_record(
        {
            "study_iuid": uid if isinstance(uid, str) else None,
            "patient_id": _text(_first(item, "00100020")),
            "patient_name": _person(_first(item, "00100010")),
            "study_datetime": when,
            "study_description": _text(_first(item, "00081030")),
            "study_modality": modality or None,
            "study_series": _number(_first(item, "00201206")),
            "study_instances": _number(_first(item, "00201208")),
            "center": center,
        },
        where,
    )


def _text(value: Any) -> str | None:
    return value[:64] if isinstance(value, str) else None


class QidoSource:
    """Lists a remote PACS's studies over QIDO-RS, a page at a time."""

    def __init__(self, pacs: RemotePacs, timeout_s: float = 60.0) -> None:
        if not pacs.dicomweb_url:
            raise RemoteError(f"remote PACS {pacs.name!r} has no dicomweb_url")
        self.pacs = pacs
        headers = {"Accept": "application/dicom+json", "User-Agent": f"Vesalius/{__version__}"}
        auth = None
        if pacs.token:
            headers["Authorization"] = f"Bearer {pacs.token}"
        elif pacs.username:
            auth = httpx.BasicAuth(pacs.username, pacs.password or "")
        self.client = httpx.Client(
            base_url=pacs.dicomweb_url.rstrip("/"), headers=headers, auth=auth, timeout=timeout_s
        )

    def close(self) -> None:
        self.client.close()

    def _search(self, path: str, params: list[tuple[str, str]], what: str) -> list[Any]:
        """One QIDO-RS request; its answer as a list (empty for 204), or a RemoteError."""
        name = self.pacs.name
        try:
            answer = self.client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise RemoteError(
                f"remote PACS {name!r} ({self.pacs.dicomweb_url}) cannot be reached: "
                f"{exc or type(exc).__name__}"
            ) from None
        if answer.status_code == 204:
            return []
        if answer.status_code != 200:
            raise RemoteError(
                f"remote PACS {name!r} answered {answer.status_code} to a {what}: "
                f"{answer.text[:200]}"
            )
        try:
            page = answer.json()
        except ValueError:
            raise RemoteError(
                f"remote PACS {name!r} answered a {what} with something that is not JSON"
            ) from None
        if not isinstance(page, list):
            raise RemoteError(f"remote PACS {name!r} answered a {what} with no list")
        return page

    def study_items(
        self, keywords: tuple[str, ...] | None = None, date_from: str | None = None
    ) -> Iterator[Any]:
        """Every study the PACS lists (from *date_from*, ``YYYYMMDD``, when given), as the
        DICOM JSON it answered, a page at a time; each item is still untrusted."""
        name = self.pacs.name
        offset = 0
        previous_first: Any = None
        while True:
            # includefield repeated, one attribute each: some servers (Orthanc) ignore a
            # comma-separated list
            params = [("limit", str(PAGE)), ("offset", str(offset))]
            params += [("includefield", k) for k in (keywords or tuple(INCLUDE.split(",")))]
            if date_from:
                params.append(("StudyDate", f"{date_from}-"))
            page = self._search("/studies", params, "study search")
            yield from page
            first = _first(page[0], "0020000D") if page and isinstance(page[0], dict) else None
            if offset and first is not None and first == previous_first:
                raise RemoteError(
                    f"remote PACS {name!r} ignores the offset of a study search (the same page "
                    "came back twice)"
                )
            previous_first = first
            offset += len(page)
            if len(page) < PAGE:
                return
            if offset > MAX_STUDIES:
                raise RemoteError(f"remote PACS {name!r} lists more than {MAX_STUDIES} studies")

    def series_items(self, study_uid: str, keywords: tuple[str, ...]) -> list[Any]:
        """The series of one study, as the DICOM JSON the PACS answered (untrusted)."""
        params = [("includefield", k) for k in keywords]
        return self._search(f"/studies/{study_uid}/series", params, "series search")

    def series_of_studies(self, study_uids: list[str], keywords: tuple[str, ...]) -> list[Any]:
        """The series of several studies, by UID list matching (PS3.18 8.3.4.1), a few dozen
        studies per request; the caller checks each study got its series (a server without
        list matching answers fewer)."""
        found: list[Any] = []
        for start in range(0, len(study_uids), UIDS_PER_REQUEST):
            chunk = study_uids[start : start + UIDS_PER_REQUEST]
            params = [("StudyInstanceUID", ",".join(chunk)), ("limit", str(MAX_INSTANCES))]
            params += [("includefield", k) for k in ("StudyInstanceUID", *keywords)]
            try:
                found += self._search("/series", params, "series search")
            except RemoteError as exc:
                if " answered 4" in str(exc):  # no list matching here: one study at a time
                    continue
                raise
        return found

    def instance_items(self, study_uid: str) -> list[Any]:
        """The instances of one study (SeriesInstanceUID, SOPInstanceUID; untrusted)."""
        params = [("includefield", "SeriesInstanceUID"), ("limit", str(MAX_INSTANCES))]
        return self._search(f"/studies/{study_uid}/instances", params, "instance search")

    def studies(self, center: str | None) -> Iterator[StudyRecord]:
        name = self.pacs.name
        for index, item in enumerate(self.study_items()):
            try:
                yield record_from_dicom_json(item, center, f"study {index}")
            except RecordError as exc:
                raise RemoteError(f"remote PACS {name!r} answered garbage: {exc}") from None


class FindSource:
    """Lists a remote PACS's studies with one study-level C-FIND (Study Root)."""

    def __init__(self, pacs: RemotePacs, calling_ae: str, timeout_s: float = 60.0) -> None:
        if not (pacs.ae_title and pacs.host and pacs.port):
            raise RemoteError(f"remote PACS {pacs.name!r} has no ae_title, host and port")
        self.pacs = pacs
        self.calling_ae = calling_ae
        self.timeout_s = timeout_s
        self._assoc: Any = None

    def close(self) -> None:
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.release()
        self._assoc = None

    @property
    def where(self) -> str:
        pacs = self.pacs
        return f"remote PACS {pacs.name!r} ({pacs.ae_title}@{pacs.host}:{pacs.port})"

    def _associate(self) -> Any:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        from vesalius.dimse.scu import set_nodelay

        pacs = self.pacs
        ae = AE(ae_title=self.calling_ae)
        ae.add_requested_context(FIND)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        assoc = ae.associate(
            pacs.host,
            pacs.port,
            ae_title=pacs.ae_title,
            evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)],  # no Nagle stall per message
        )
        if not assoc.is_established:
            raise RemoteError(f"{self.where} cannot be reached or refused the association")
        return assoc

    def _find(self, assoc: Any, level: str, keys: dict[str, Any]) -> Iterator[Any]:
        """One C-FIND at *level*; each pending answer as DICOM JSON (untrusted)."""
        from pydicom import Dataset
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        where = self.where
        query = Dataset()
        query.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(query, keyword, value)
        count = 0
        for status, identifier in assoc.send_c_find(query, FIND):
            if status is None or "Status" not in status:
                raise RemoteError(f"{where} stopped answering the C-FIND (timed out or gone)")
            code = int(status.Status)
            if code in (0xFF00, 0xFF01):
                if identifier is None:
                    raise RemoteError(f"{where} sent a pending answer without a dataset")
                try:
                    item = identifier.to_json_dict()
                except Exception as exc:
                    raise RemoteError(f"{where} answered garbage: {exc}") from None
                yield item
                count += 1
                if count > MAX_STUDIES:
                    raise RemoteError(f"{where} lists more than {MAX_STUDIES} studies")
            elif code == 0x0000:
                return
            else:
                raise RemoteError(f"{where} ended the C-FIND with status 0x{code:04X}")

    def study_items(
        self, keywords: tuple[str, ...] | None = None, date_from: str | None = None
    ) -> Iterator[Any]:
        """Every study of one study-level C-FIND (from *date_from* when given), as DICOM
        JSON (untrusted), over an association of its own."""
        keys = {k: "" for k in (keywords or FIND_KEYWORDS)}
        keys["StudyInstanceUID"] = ""
        if date_from:
            keys["StudyDate"] = f"{date_from}-"
        assoc = self._associate()
        try:
            yield from self._find(assoc, "STUDY", keys)
        finally:
            if assoc.is_established:
                assoc.release()

    def series_items(self, study_uid: str, keywords: tuple[str, ...]) -> list[Any]:
        """The series of one study (one C-FIND on an association kept for the next ones)."""
        if self._assoc is None or not self._assoc.is_established:
            self._assoc = self._associate()
        keys = {k: "" for k in keywords}
        keys["StudyInstanceUID"] = study_uid
        return list(self._find(self._assoc, "SERIES", keys))

    def series_of_studies(self, study_uids: list[str], keywords: tuple[str, ...]) -> list[Any]:
        """The series of several studies: C-FINDs with UID list matching, 100 at a time (one
        C-FIND per study costs a round trip each)."""
        if self._assoc is None or not self._assoc.is_established:
            self._assoc = self._associate()
        found: list[Any] = []
        for start in range(0, len(study_uids), 100):
            keys: dict[str, Any] = {k: "" for k in keywords}
            keys["StudyInstanceUID"] = study_uids[start : start + 100]
            found += list(self._find(self._assoc, "SERIES", keys))
        return found

    def studies(self, center: str | None) -> Iterator[StudyRecord]:
        for count, item in enumerate(self.study_items()):
            try:
                yield record_from_dicom_json(item, center, f"study {count}")
            except RecordError as exc:
                raise RemoteError(f"{self.where} answered garbage: {exc}") from None
