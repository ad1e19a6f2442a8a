"""DIMSE event handlers: the wire format in, one archive call, the wire format out.

No archive rule lives here; each handler maps the archive's answers and errors to statuses.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

from pydicom import Dataset
from pydicom.multival import MultiValue
from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)

from vesalius.archive.query import Query, build_query
from vesalius.archive.service import Archive
from vesalius.auth.audit import AuditLog, dimse_event
from vesalius.auth.dimse_access import DimseAccess, DimseService
from vesalius.config import Settings
from vesalius.dicom.find_response import find_response, requested_character_set
from vesalius.dicom.levels import Level, Model
from vesalius.dicom.syntaxes import TranscodeError, move_proposal, read_for
from vesalius.errors import InvalidInstance, InvalidQuery, UidConflict
from vesalius.index.imaging import InstanceRecord

log = logging.getLogger(__name__)

PATIENT_ROOT = {
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
}

# DIMSE statuses used here (PS3.4 B.2.3, C.4.1.1.4, PS3.7 C).
SUCCESS = 0x0000
PENDING = 0xFF00
CANCELLED = 0xFE00
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC001

_NOT_SENT = "not sent"


def set_nodelay(event: Event) -> None:
    """Turn off Nagle's algorithm: DIMSE is request/response and stalls ~40 ms without it."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # the peer may already be gone
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _status(code: int, comment: str | None = None) -> Dataset:
    status = Dataset()
    status.Status = code
    if comment:
        status.ErrorComment = comment[:64]
    return status


def _peer(event: Event) -> str:
    info = event.assoc.requestor
    return f"dimse:{info.ae_title.strip()}@{info.address}"


def _refusal(event: Event, access: DimseAccess | None, service: DimseService) -> Dataset | None:
    """The refusal status of a request the calling AE may not make (``None``: go ahead)."""
    if access is None:
        return None
    info = event.assoc.requestor
    acceptor = event.assoc.acceptor
    decision = access.check(
        str(info.ae_title),
        str(acceptor.ae_title),
        service,
        address=str(info.address),
        certificate=_certificate(event),
    )
    return None if decision.allowed else _status(decision.status, decision.reason)


def _certificate(event: Event) -> str | None:
    """The subject CN of the caller's verified TLS certificate (TLS port only)."""
    import ssl

    from vesalius.tls import peer_identity

    sock = getattr(event.assoc.dul.socket, "socket", None)
    return peer_identity(sock.getpeercert()) if isinstance(sock, ssl.SSLSocket) else None


def _answer_with(event: Event, status: Dataset) -> None:
    """Make pynetdicom's next response on this association carry *status* (and its comment).

    pynetdicom lets a C-GET or C-MOVE handler end a request before its sub-operations only
    with fixed statuses; this rewrites the one response it then sends.
    """
    dimse = event.assoc.dimse

    def send_msg(primitive: Any, context_id: int) -> None:
        del dimse.send_msg  # back to the class's method
        primitive.Status = int(status.Status)
        primitive.ErrorComment = status.get("ErrorComment")
        dimse.send_msg(primitive, context_id)

    dimse.send_msg = send_msg


def handle_store(
    event: Event,
    archive: Archive,
    audit: AuditLog | None = None,
    access: DimseAccess | None = None,
) -> Dataset:
    """C-STORE: archive the dataset exactly as it arrived."""
    refused = _refusal(event, access, DimseService.STORE)
    if refused is not None:
        return refused
    request = event.request
    data = event.encoded_dataset(include_meta=True)
    try:
        outcome = archive.store(data, origin=_peer(event))
    except UidConflict as exc:  # e.g. its series is archived under another study
        log.warning("C-STORE from %s refused: %s", _peer(event), exc)
        return _status(DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc))
    except InvalidInstance as exc:
        log.warning(
            "C-STORE from %s refused: %s (SOP Instance %s)",
            _peer(event),
            exc,
            request.AffectedSOPInstanceUID,
        )
        return _status(CANNOT_UNDERSTAND, str(exc))
    if outcome.sop_class_uid != request.AffectedSOPClassUID:
        log.warning(
            "C-STORE from %s: dataset SOP class %s differs from the request's %s",
            _peer(event),
            outcome.sop_class_uid,
            request.AffectedSOPClassUID,
        )
    if audit is not None:
        audit.record(
            dimse_event(event, "store", outcome.sop_instance_uid, outcome.study_instance_uid)
        )
    return _status(SUCCESS)


def identifier_keys(identifier: Dataset) -> list[tuple[str, str | None]]:
    """(keyword, value) pairs of a query identifier, values as text ("" for return keys)."""
    keys: list[tuple[str, str | None]] = []
    for elem in identifier:
        if elem.tag.is_private or not elem.keyword or elem.tag.group == 0x0002:
            continue
        if elem.VR == "SQ":
            keys.append((elem.keyword, None))
            continue
        value = elem.value
        if value is None or value == "":
            keys.append((elem.keyword, None))
        elif isinstance(value, MultiValue | list):
            keys.append((elem.keyword, "\\".join(str(v) for v in value)))
        else:
            keys.append((elem.keyword, str(value)))
    return keys


def _query_from(identifier: Dataset, sop_class: str) -> Query:
    model = Model.PATIENT_ROOT if sop_class in PATIENT_ROOT else Model.STUDY_ROOT
    raw_level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    try:
        level = Level(raw_level)
    except ValueError:
        raise InvalidQuery(
            f"QueryRetrieveLevel {raw_level!r} is not one of PATIENT, STUDY, SERIES, IMAGE"
        ) from None
    if level not in model.levels():
        raise InvalidQuery(f"level {level.value} is not part of the {model.value} model")
    return build_query(level, identifier_keys(identifier))


def handle_find(
    event: Event,
    archive: Archive,
    audit: AuditLog | None = None,
    access: DimseAccess | None = None,
) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """C-FIND in the Patient Root and Study Root models, at every level."""
    refused = _refusal(event, access, DimseService.FIND)
    if refused is not None:
        yield refused, None
        return
    identifier = event.identifier
    try:
        requested_character_set(identifier)
        query = _query_from(identifier, event.request.AffectedSOPClassUID)
    except InvalidQuery as exc:
        log.warning("C-FIND from %s refused: %s", _peer(event), exc)
        yield _status(UNABLE_TO_PROCESS, str(exc)), None
        return
    if audit is not None:
        audit.record(dimse_event(event, "search", f"C-FIND {query.level.value}", None))
    for result in archive.find(query):
        if event.is_cancelled:
            yield CANCELLED, None
            return
        yield PENDING, find_response(identifier, result, query.level.value)


def _retrieve_records(event: Event, archive: Archive) -> list[InstanceRecord]:
    query = _query_from(event.identifier, event.request.AffectedSOPClassUID)
    return archive.instances_for(query.level, query.constraints)


def _accepted(contexts: list[PresentationContext]) -> dict[str, set[str]]:
    accepted: dict[str, set[str]] = {}
    for cx in contexts:
        accepted.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
    return accepted


def _payload(archive: Archive, record: InstanceRecord, accepted: dict[str, set[str]]) -> Dataset:
    """The stored dataset, converted only when the peer does not take its syntax."""
    syntaxes = accepted.get(record.sop_class_uid, set())
    with archive.open(record) as fh:
        return read_for(
            fh.read(),
            record.transfer_syntax_uid,
            syntaxes,
            allow_lossy=archive.settings.transcode_lossy,
        )


def _send_all(
    archive: Archive, records: list[InstanceRecord], event: Event, contexts: Any
) -> Iterator[tuple[int, Any]]:
    for record in records:
        if event.is_cancelled:
            yield CANCELLED, None
            return
        try:
            payload = _payload(archive, record, _accepted(contexts()))
        except (TranscodeError, OSError) as exc:
            log.warning("cannot send %s: %s", record.sop_instance_uid, exc)
            # pynetdicom counts a pending result that is not a dataset as a failed sub-operation.
            yield PENDING, _NOT_SENT
            continue
        yield PENDING, payload


def handle_get(
    event: Event,
    archive: Archive,
    audit: AuditLog | None = None,
    access: DimseAccess | None = None,
) -> Iterator[Any]:
    """C-GET: send the matching instances back on the same association.

    A malformed identifier raises before the sub-operation count, which pynetdicom answers
    with a single failure status (0xC413).
    """
    refused = _refusal(event, access, DimseService.GET)
    if refused is not None:
        _answer_with(event, refused)
        yield 0
        return
    try:
        records = _retrieve_records(event, archive)
    except InvalidQuery as exc:
        log.warning("C-GET from %s refused: %s", _peer(event), exc)
        raise
    log.info("C-GET from %s: %d instances", _peer(event), len(records))
    if audit is not None:
        audit.record(dimse_event(event, "retrieve", "C-GET", _studies(records)))
    yield len(records)
    yield from _send_all(archive, records, event, lambda: event.assoc.accepted_contexts)


def handle_move(
    event: Event,
    archive: Archive,
    settings: Settings,
    audit: AuditLog | None = None,
    access: DimseAccess | None = None,
) -> Iterator[Any]:
    """C-MOVE: send the matching instances to a configured remote AE."""
    refused = _refusal(event, access, DimseService.MOVE)
    if refused is not None:
        _answer_with(event, refused)
        yield None, None
        return
    raw = event.move_destination
    name = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
    destination = settings.find_remote_ae(name.strip())
    if destination is None or not destination.is_destination:
        log.warning(
            "C-MOVE from %s to unknown destination %r refused; add it as a [[remote_ae]]",
            _peer(event),
            name,
        )
        yield None, None
        return
    try:
        records = _retrieve_records(event, archive)
    except InvalidQuery as exc:
        log.warning("C-MOVE from %s refused: %s", _peer(event), exc)
        yield destination.host, destination.port
        raise  # before the sub-operation count: one failure status (0xC513)
    holder: dict[str, Any] = {}

    def _remember(sub_event: Event) -> None:
        holder["assoc"] = sub_event.assoc

    contexts = _contexts_for(records, settings.transcode_lossy)
    yield (
        destination.host,
        destination.port,
        {
            "contexts": contexts,
            "evt_handlers": [(evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_ESTABLISHED, _remember)],
            "tls_args": tls_args_for(destination, settings),
        },
    )
    log.info("C-MOVE from %s to %s: %d instances", _peer(event), destination.name, len(records))
    if audit is not None:
        audit.record(dimse_event(event, "retrieve", f"C-MOVE to {name}", _studies(records)))
    yield len(records)
    yield from _send_all(
        archive, records, event, lambda: holder["assoc"].accepted_contexts if holder else []
    )


def tls_args_for(destination: Any, settings: Settings) -> tuple[Any, None] | None:
    """pynetdicom's ``tls_args`` for a peer marked ``tls = true`` (None: plain TCP)."""
    if not getattr(destination, "tls", False):
        return None
    from vesalius.tls import client_context

    return client_context(settings), None


def _studies(records: list[InstanceRecord]) -> str | None:
    """The study of a retrieve (the first one when it spans several)."""
    return records[0].study_instance_uid if records else None


def _contexts_for(
    records: list[InstanceRecord], allow_lossy: bool = False
) -> list[PresentationContext]:
    """Presentation contexts for a C-MOVE sub-association (see :func:`move_proposal`)."""
    from pynetdicom import build_context

    wanted: dict[str, set[str]] = {}
    for record in records:
        wanted.setdefault(record.sop_class_uid, set()).add(record.transfer_syntax_uid)
    contexts = [
        build_context(sop_class, syntaxes)
        for sop_class, syntaxes in move_proposal(wanted, allow_lossy=allow_lossy)
    ]
    if len(contexts) > 128:
        log.warning("C-MOVE needs %d presentation contexts; only 128 are proposed", len(contexts))
    return contexts[:128]
