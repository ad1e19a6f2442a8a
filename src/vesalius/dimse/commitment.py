"""Storage Commitment Push Model SCP (PS3.4 Annex J): a modality asks whether its instances
are safely archived, and gets the answer from the index.

The modality sends an N-ACTION (Action Type ID 1) to the well-known instance with a Transaction
UID and a Referenced SOP Sequence. The archive answers the N-ACTION at once, then reports with
an N-EVENT-REPORT: Event Type 1 when every instance is archived, 2 when some are not (they are
listed in the Failed SOP Sequence with Failure Reason 0x0112, no such object instance). Which
instances are archived is the archive's answer (:meth:`Archive.commitment`: rows committed,
SOP Class as given), nowhere else.

The report goes on the same association while it is open. When the modality has released it
(or it was lost, or the report was not answered or was refused), the report becomes a durable job
(``dimse.commitment_report``) that opens a new association to the modality's AE, looked up in
``[[remote_ae]]`` as C-MOVE destinations are, proposing the SCP role for the SOP class
(PS3.4 J.3.3: the SCP of Storage Commitment is then the association requestor); it retries
with backoff and ends dead with the reason when the modality cannot be reached.

A request whose instances are all present also declares their studies complete
(:meth:`Archive.declare_complete`: ``StudyStable`` with reason "complete", before
``stable_after_s``).
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import TYPE_CHECKING, Any

from pydicom import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom.dsutils import decode as decode_dataset
from pynetdicom.dsutils import encode as encode_dataset

from vesalius import jobs
from vesalius.auth.dimse_access import DimseService
from vesalius.dimse import commands

if TYPE_CHECKING:
    from vesalius.dimse.association import Association, Message
    from vesalius.dimse.services import Services

log = logging.getLogger(__name__)

SOP_CLASS = "1.2.840.10008.1.20.1"  # Storage Commitment Push Model
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_COMMITMENT = 1  # Action Type ID
ALL_COMMITTED, SOME_FAILED = 1, 2  # Event Type IDs
NO_SUCH_OBJECT_INSTANCE = 0x0112  # Failure Reason
REPORT_JOB = "dimse.commitment_report"

# N-ACTION statuses (PS3.7 10.1.4.1.10)
SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
NO_SUCH_SOP_INSTANCE = 0x0112
INVALID_ARGUMENT = 0x0115
MISSING_ATTRIBUTE = 0x0120
NO_SUCH_ACTION = 0x0123

Reference = tuple[str, str]  # (SOP Class UID, SOP Instance UID)


class RequestError(Exception):
    """An N-ACTION that cannot be acted on; *status* is the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def read_request(dataset: Dataset) -> tuple[str, list[Reference]]:
    """The Transaction UID and the referenced instances of an N-ACTION's data set."""
    transaction = str(dataset.get("TransactionUID", "") or "").strip()
    if not transaction:
        raise RequestError(MISSING_ATTRIBUTE, "no Transaction UID (0008,1195)")
    items = dataset.get("ReferencedSOPSequence")
    if not items:
        raise RequestError(MISSING_ATTRIBUTE, "no Referenced SOP Sequence (0008,1199)")
    references = []
    for item in items:
        sop_class = str(item.get("ReferencedSOPClassUID", "") or "").strip()
        sop_uid = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
        if not sop_class or not sop_uid:
            raise RequestError(
                MISSING_ATTRIBUTE, "an item of the Referenced SOP Sequence without its UIDs"
            )
        references.append((sop_class, sop_uid))
    return transaction, references


def report(
    transaction: str, present: list[Reference], missing: list[Reference], ae_title: str
) -> tuple[int, Dataset]:
    """The Event Type ID and the data set of the N-EVENT-REPORT (PS3.4 J.3.3.1)."""
    ds = Dataset()
    ds.TransactionUID = transaction
    ds.RetrieveAETitle = ae_title
    if present:
        ds.ReferencedSOPSequence = [_item(c, u) for c, u in present]
    if missing:
        failed = []
        for sop_class, sop_uid in missing:
            item = _item(sop_class, sop_uid)
            item.FailureReason = NO_SUCH_OBJECT_INSTANCE
            failed.append(item)
        ds.FailedSOPSequence = failed
    return (SOME_FAILED if missing else ALL_COMMITTED), ds


def _item(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    return item


def answer(archive: Any, references: list[Reference]) -> tuple[list[Reference], list[Reference]]:
    """Present and missing instances; when none is missing their studies are complete."""
    present, missing = archive.commitment(references)
    if present and not missing:
        try:
            archive.declare_complete(archive.studies_of([uid for _, uid in present]))
        except Exception:  # completeness is derived: never fails the answer
            log.exception("could not declare the committed studies complete")
    return present, missing


# -- the N-ACTION, and the report on the same association -----------------------------------------


async def n_action(services: Services, assoc: Association, message: Message) -> None:
    """An N-ACTION-RQ: answer it, then send the report (here, or as a job on a new association)."""
    command = message.command
    assert command is not None
    caller = f"dimse:{assoc.requestor.ae_title}@{assoc.requestor.address}"

    async def respond(status: int, comment: str | None = None) -> None:
        extra: list[tuple[int, int | str | bytes]] = []
        if status == SUCCESS:
            extra.append((commands.ACTION_TYPE_ID, REQUEST_COMMITMENT))
        await assoc.send(
            message.context_id, commands.response(command, status, comment=comment, extra=extra)
        )

    sop_class = command.text(commands.REQUESTED_SOP_CLASS)
    instance = command.text(commands.REQUESTED_SOP_INSTANCE)
    if sop_class != SOP_CLASS:
        await respond(0x0118, "not a Storage Commitment SOP class")  # no such SOP class
        return
    refused = services._refusal(assoc, DimseService.STORE)
    if refused is not None:
        await respond(*refused)
        return
    if instance != WELL_KNOWN_INSTANCE:
        await respond(NO_SUCH_SOP_INSTANCE, f"the instance is {WELL_KNOWN_INSTANCE}")
        return
    if command.us(commands.ACTION_TYPE_ID) != REQUEST_COMMITMENT:
        await respond(NO_SUCH_ACTION, "only Action Type 1 (request storage commitment)")
        return
    implicit = assoc.syntax(message.context_id) == ImplicitVRLittleEndian
    try:
        dataset = decode_dataset(io.BytesIO(bytes(message.dataset)), implicit, True)
        transaction, references = read_request(dataset)
    except RequestError as exc:
        log.warning("storage commitment from %s refused: %s", caller, exc)
        await respond(exc.status, str(exc))
        return
    except Exception as exc:
        log.warning("unreadable storage commitment request from %s: %s", caller, exc)
        await respond(INVALID_ARGUMENT, "unreadable N-ACTION data set")
        return
    try:
        present, missing = await services._run(answer, services.archive, references)
    except Exception:
        log.exception("storage commitment from %s failed", caller)
        await respond(PROCESSING_FAILURE, "the archive could not look the instances up")
        return
    await respond(SUCCESS)
    log.info(
        "storage commitment %s from %s: %d present, %d missing",
        transaction,
        caller,
        len(present),
        len(missing),
    )
    services._audit(assoc, "commitment", f"N-ACTION {transaction}", None)
    payload = {
        "ae_title": assoc.requestor.ae_title,
        "transaction": transaction,
        "present": present,
        "missing": missing,
    }
    event_type, ds = report(transaction, present, missing, services.settings.ae_title)
    encoded = encode_dataset(ds, implicit, True)
    try:
        rsp = await assoc.request(
            message.context_id,
            lambda message_id: commands.event_report(
                message_id, SOP_CLASS, WELL_KNOWN_INSTANCE, event_type
            ),
            dataset=encoded,
        )
    except asyncio.CancelledError:  # the association went away (or the server stops)
        _later(services, payload, "the association closed")
        raise
    except Exception as exc:
        await services._run(_later, services, payload, str(exc))
        return
    status = rsp.us(commands.STATUS, 0xC000)
    if status != SUCCESS:
        # A modality that takes reports only on its own SCP (many do) refuses them here, often
        # with 0x0110 "no handler": the report is not delivered, so it goes on a new association.
        await services._run(
            _later, services, payload, f"it answered the report with 0x{status or 0:04X}"
        )


def _later(services: Services, payload: dict[str, Any], why: str) -> None:
    """Queue the report for a new association (the requester's one is gone: *why*)."""
    log.info(
        "storage commitment report %s to %s: %s; sent on a new association",
        payload["transaction"],
        payload["ae_title"],
        why,
    )
    jobs.enqueue(
        services.archive.db,
        REPORT_JOB,
        payload,
        dedupe_key=f"commitment:{payload['transaction']}"[:191],
    )


# -- the report on a new association (a job) --------------------------------------------------


class ReportError(Exception):
    """The modality could not be reached, refused the association or the report."""


def send_report(settings: Any, payload: dict[str, Any]) -> None:
    """Send a storage commitment report to the requester's AE on a new association."""
    from pynetdicom import AE, build_role, evt

    from vesalius.dimse.scu import set_nodelay, tls_args_for

    title = payload["ae_title"]
    peer = settings.find_remote_ae(title)
    if peer is None or not peer.is_destination:
        raise ReportError(
            f"the storage commitment requester {title!r} is not a [[remote_ae]] with a host "
            "and port, so its report cannot be sent on a new association"
        )
    present = [tuple(r) for r in payload["present"]]
    missing = [tuple(r) for r in payload["missing"]]
    event_type, ds = report(payload["transaction"], present, missing, settings.ae_title)
    ae = AE(ae_title=settings.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.dimse_timeout
    ae.add_requested_context(SOP_CLASS)
    # PS3.4 J.3.3: on an association of its own, the SCP proposes the SCP role.
    role = build_role(SOP_CLASS, scu_role=False, scp_role=True)
    assoc = ae.associate(
        peer.host,
        peer.port,
        ae_title=peer.ae_title,
        ext_neg=[role],
        evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)],
        tls_args=tls_args_for(peer, settings),
    )
    if not assoc.is_established:
        raise ReportError(
            f"{peer.ae_title} at {peer.host}:{peer.port} "
            + ("rejected the association" if assoc.is_rejected else "could not be reached")
        )
    try:
        status = assoc.send_n_event_report(ds, event_type, SOP_CLASS, WELL_KNOWN_INSTANCE)[0]
    finally:
        if assoc.is_established:
            assoc.release()
    code = int(status.Status) if status is not None and "Status" in status else None
    if code is None:
        raise ReportError(f"{peer.ae_title} did not answer the storage commitment report")
    if code != SUCCESS:
        raise ReportError(f"{peer.ae_title} answered the report with 0x{code:04X}")
    log.info(
        "storage commitment report %s sent to %s (%d present, %d missing)",
        payload["transaction"],
        peer.ae_title,
        len(present),
        len(missing),
    )


def _report_job(payload: dict[str, Any], context: jobs.JobContext) -> None:
    send_report(context.container.settings, payload)


jobs.register(REPORT_JOB, _report_job, max_attempts=8, lease_s=300)
