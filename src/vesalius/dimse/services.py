"""The DIMSE services of the asyncio network layer: the wire format in, archive calls, statuses out.

No archive rule lives here. Blocking work (the store's fsyncs and commit, SQL queries, reading a
stored file for conversion, the C-MOVE sub-association) runs in a thread pool, so the event loop
keeps reading and writing every association meanwhile.
"""

from __future__ import annotations

import asyncio
import io
import logging
import struct
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, BinaryIO

from pydicom import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dsutils import decode as decode_dataset
from pynetdicom.dsutils import encode as encode_dataset

from vesalius.archive import inline as inline_work
from vesalius.archive.service import Archive, StoreOutcome
from vesalius.auth.audit import AuditLog, dimse_event
from vesalius.auth.dimse_access import DimseAccess, DimseService
from vesalius.config import RemoteAE, Settings
from vesalius.dicom.find_response import AnswerEncoder, requested_character_set
from vesalius.dicom.syntaxes import TranscodeError, read_for
from vesalius.dicom.transcode import choose_syntax
from vesalius.dimse import commands
from vesalius.dimse.identifier import query_from
from vesalius.dimse.negotiation import FIND_MODELS, GET_MODELS, MOVE_MODELS
from vesalius.dimse.scu import accepted_syntaxes, contexts_for, set_nodelay, tls_args_for
from vesalius.errors import InvalidInstance, InvalidQuery, UidConflict
from vesalius.index.imaging import InstanceRecord
from vesalius.storage.spool import Spool

if TYPE_CHECKING:
    from vesalius.dimse.association import Association, Message

log = logging.getLogger(__name__)

SUCCESS, PENDING, CANCELLED = 0x0000, 0xFF00, 0xFE00
SUB_OPERATIONS_WARNING = 0xB000
UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702  # refused: out of resources
MOVE_DESTINATION_UNKNOWN = 0xA801
UNABLE_TO_PROCESS = 0xC001
CANNOT_UNDERSTAND = 0xC000
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
_WARNINGS = {0xB000, 0xB006, 0xB007}
FIND_WRITE = 256 * 1024  # C-FIND answers gathered into one write (C-CANCEL is read between)
_LONG_VRS = {
    b"OB",
    b"OW",
    b"OF",
    b"SQ",
    b"UT",
    b"UN",
    b"UC",
    b"UR",
    b"OD",
    b"OL",
    b"OV",
    b"SV",
    b"UV",
}


def part10_meta(sop_class: str, sop_instance: str, syntax: str, source_ae: str) -> bytes:
    """Preamble, ``DICM`` and the file meta group for a received data set (PS3.10 7.1)."""

    def element(tag: int, vr: bytes, value: bytes) -> bytes:
        if len(value) % 2:
            value += b"\x00" if vr == b"UI" else b" "
        group, elem = tag >> 16, tag & 0xFFFF
        if vr == b"OB":
            return struct.pack("<HH2s2xI", group, elem, vr, len(value)) + value
        return struct.pack("<HH2sH", group, elem, vr, len(value)) + value

    from vesalius.dimse.pdu import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION

    body = b"".join(
        (
            element(0x00020001, b"OB", b"\x00\x01"),
            element(0x00020002, b"UI", sop_class.encode()),
            element(0x00020003, b"UI", sop_instance.encode()),
            element(0x00020010, b"UI", syntax.encode()),
            element(0x00020012, b"UI", IMPLEMENTATION_CLASS_UID.encode()),
            element(0x00020013, b"SH", IMPLEMENTATION_VERSION.encode()),
            element(0x00020016, b"AE", source_ae.encode("ascii", "replace")[:16]),
        )
    )
    return b"\x00" * 128 + b"DICM" + element(0x00020000, b"UL", struct.pack("<I", len(body))) + body


def dataset_offset(fh: BinaryIO) -> int:
    """Where the data set starts in a stored Part 10 file (after preamble and meta group).

    Reads from the start of *fh* only as far as the meta group goes (usually under 1 KB).
    """
    head = fh.read(1024)
    pos = 132 if head[128:132] == b"DICM" else 0
    while True:
        if pos + 12 > len(head):
            more = fh.read(max(1024, pos + 12 - len(head)))
            if more:
                head += more
                continue
            if pos + 8 > len(head):
                break
        group, _elem = struct.unpack_from("<HH", head, pos)
        if group != 0x0002:
            break
        vr = head[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                break
            (length,) = struct.unpack_from("<I", head, pos + 8)
            pos += 12 + length
        else:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            pos += 8 + length
    return pos


class Services:
    """C-ECHO is answered by the association; these are C-STORE, C-FIND, C-GET and C-MOVE."""

    def __init__(
        self,
        settings: Settings,
        archive: Archive,
        audit: AuditLog | None,
        access: DimseAccess,
    ) -> None:
        self.settings = settings
        self.archive = archive
        self.audit = audit
        self.access = access
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dimse")

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def _run(self, function: Any, *args: Any) -> asyncio.Future[Any]:
        """*function* submitted to the pool now (not when the caller's task next runs, as a
        coroutine would be: a flush started in the background must start at once)."""
        return asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def _run_inline(self, inline: bool, function: Any, *args: Any) -> Any:
        """Run *function* on the loop when *inline* allows it (``archive.inline``)."""
        return await inline_work.of_running_loop().run(inline, self._run, function, *args)

    def _audit(self, assoc: Association, action: str, obj: str | None, study: str | None) -> None:
        if self.audit is not None:
            self.audit.record(dimse_event(SimpleNamespace(assoc=assoc), action, obj, study))

    def _refusal(self, assoc: Association, service: DimseService) -> tuple[int, str] | None:
        """The status and comment refusing *service* to this caller (None: go ahead)."""
        decision = self.access.check(
            assoc.requestor.ae_title,
            assoc.called_ae,
            service,
            address=assoc.requestor.address,
            certificate=assoc.requestor.certificate,
        )
        return None if decision.allowed else (decision.status, decision.reason)

    @staticmethod
    def _origin(assoc: Association) -> str:
        return f"dimse:{assoc.requestor.ae_title}@{assoc.requestor.address}"

    # -- C-STORE -----------------------------------------------------------------------------

    def open_store(self, assoc: Association, message: Message) -> Spool:
        """The spool file a C-STORE data set is written to as it arrives, as a Part 10 file."""
        command = message.command
        assert command is not None
        header = part10_meta(
            command.text(commands.AFFECTED_SOP_CLASS),
            command.text(commands.AFFECTED_SOP_INSTANCE),
            assoc.syntax(message.context_id),
            assoc.requestor.ae_title,
        )
        spool = self.archive.blobs.spool()
        spool.write(header)
        return spool

    async def _store(self, assoc: Association, spool: Spool) -> StoreOutcome:
        """Store *spool*: its CPU work on the loop, its disk flush on a thread meanwhile
        (unless a C-FIND of this loop is on the pool: then all of it on the pool).

        Handing a whole store to a thread costs 25-40 context switches (the GIL passes between
        the thread and the loop at every system call); storing it all on the loop holds the
        other associations for its fsync. So the loop parses and indexes, a thread waits for
        the disk, and the loop meanwhile reads and stores the other associations' instances
        (``archive.inline.await_steps``). An instance of any size is stored so: its data is
        already on the disk as it arrived, and its parse stops before the pixel data.
        """
        # The only association of this worker waits for the disk: flush its data at once.
        early = assoc.listener.active == 1
        return await inline_work.of_running_loop().run_split(
            True, self._run, self.archive.store_steps, spool, self._origin(assoc), None, early
        )

    async def store(self, assoc: Association, message: Message) -> None:
        command = message.command
        assert command is not None
        spool = message.spool
        status, comment = SUCCESS, None
        refused = self._refusal(assoc, DimseService.STORE)
        if refused is not None:
            spool.discard()
            status, comment = refused
            await assoc.send(
                message.context_id, commands.response(command, status, comment=comment)
            )
            return
        try:
            outcome = await self._store(assoc, spool)
        except UidConflict as exc:  # e.g. its series is archived under another study
            log.warning("C-STORE from %s refused: %s", self._origin(assoc), exc)
            status, comment = DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc)
        except InvalidInstance as exc:
            log.warning(
                "C-STORE from %s refused: %s (SOP Instance %s)",
                self._origin(assoc),
                exc,
                command.text(commands.AFFECTED_SOP_INSTANCE),
            )
            status, comment = CANNOT_UNDERSTAND, str(exc)
        except Exception:
            log.exception("C-STORE from %s failed", self._origin(assoc))
            status, comment = 0xA700, "the archive could not store the instance; see its log"
        else:
            self._audit(assoc, "store", outcome.sop_instance_uid, outcome.study_instance_uid)
        finally:
            spool.discard()
        await assoc.send(message.context_id, commands.response(command, status, comment=comment))

    # -- C-FIND, C-GET, C-MOVE ---------------------------------------------------------------

    async def query_retrieve(self, assoc: Association, message: Message) -> None:
        command = message.command
        assert command is not None
        sop_class = command.text(commands.AFFECTED_SOP_CLASS)
        syntax = assoc.syntax(message.context_id)
        service = (
            DimseService.GET
            if sop_class in GET_MODELS
            else DimseService.MOVE
            if sop_class in MOVE_MODELS
            else DimseService.FIND
        )
        refused = self._refusal(assoc, service)
        if refused is not None:
            await self._final(assoc, message, refused[0], comment=refused[1])
            return
        destination = None
        if sop_class in MOVE_MODELS:
            name = command.text(commands.MOVE_DESTINATION)
            destination = self.settings.find_remote_ae(name)
            if destination is None or not destination.is_destination:
                log.warning(
                    "C-MOVE from %s to unknown destination %r refused; add it as a [[remote_ae]]",
                    self._origin(assoc),
                    name,
                )
                await self._final(
                    assoc, message, MOVE_DESTINATION_UNKNOWN, comment=f"unknown destination {name}"
                )
                return
        try:
            identifier = decode_dataset(
                io.BytesIO(bytes(message.dataset)), syntax == ImplicitVRLittleEndian, True
            )
            if sop_class in FIND_MODELS:
                requested_character_set(identifier)
            query = query_from(identifier, sop_class)
        except InvalidQuery as exc:
            log.warning("%s from %s refused: %s", _name(sop_class), self._origin(assoc), exc)
            await self._final(assoc, message, UNABLE_TO_PROCESS, comment=str(exc))
            return
        except Exception as exc:
            log.warning("unreadable identifier from %s: %s", self._origin(assoc), exc)
            await self._final(assoc, message, CANNOT_UNDERSTAND, comment="unreadable identifier")
            return
        if sop_class in FIND_MODELS:
            await self._find(assoc, message, identifier, query)
        elif sop_class in GET_MODELS:
            records = await self._run(self.archive.instances_for, query.level, query.constraints)
            log.info("C-GET from %s: %d instances", self._origin(assoc), len(records))
            self._audit(assoc, "retrieve", "C-GET", _study_of(records))
            await self._retrieve(assoc, message, records, _GetSender(assoc, self))
        elif destination is not None:
            await self._move(assoc, message, query, destination)
        else:  # an accepted context of another SOP class carrying a Q/R command
            await self._final(assoc, message, 0xA900, comment="not a Query/Retrieve SOP class")

    async def _final(
        self,
        assoc: Association,
        message: Message,
        status: int,
        *,
        comment: str | None = None,
        counts: list[tuple[int, int | str | bytes]] | None = None,
        dataset: bytes | None = None,
    ) -> None:
        command = message.command
        assert command is not None
        rsp = commands.response(
            command, status, dataset=dataset is not None, comment=comment, extra=counts
        )
        await assoc.send(message.context_id, rsp, dataset=dataset)

    async def _find(
        self, assoc: Association, message: Message, identifier: Dataset, query: Any
    ) -> None:
        """Query and encode every answer in one worker job, then write the pending responses
        in as few writes as possible (a C-CANCEL is honoured between writes)."""
        command = message.command
        assert command is not None
        self._audit(assoc, "search", f"C-FIND {query.level.value}", None)
        implicit = assoc.syntax(message.context_id) == ImplicitVRLittleEndian
        encoder = AnswerEncoder(identifier, query.level.value, implicit=implicit)
        # On the loop only when alone: a query may match thousands of rows, and the other
        # associations' requests would wait for it.
        answers: list[bytes] = await self._run_inline(
            assoc.listener.active == 1, _find_answers, self.archive, query, encoder
        )
        pending = commands.response(command, PENDING, dataset=True)
        batch: list[tuple[bytes, bytes | None]] = []
        size = 0
        for answer in answers:
            batch.append((pending, answer))
            size += len(answer)
            if size >= FIND_WRITE:
                if assoc.is_cancelled(command.message_id):
                    await self._final(assoc, message, CANCELLED)
                    return
                await assoc.send_all(message.context_id, batch)
                batch, size = [], 0
        final = CANCELLED if assoc.is_cancelled(command.message_id) else SUCCESS
        if final == CANCELLED:
            batch = []
        batch.append((commands.response(command, final), None))
        await assoc.send_all(message.context_id, batch)

    async def _move(
        self, assoc: Association, message: Message, query: Any, destination: RemoteAE
    ) -> None:
        command = message.command
        assert command is not None
        name = destination.ae_title
        records = await self._run(self.archive.instances_for, query.level, query.constraints)
        sender = _MoveSender(assoc, self, destination, records, command.message_id)
        try:
            await self._run(sender.open)
        except Exception as exc:
            # A known destination that cannot be reached (down, or refusing the association or
            # every context): no sub-operation can be performed, as DCMTK's dcmqrscp answers;
            # 0xA801 is for a destination that is not configured.
            log.warning("C-MOVE to %s: cannot associate: %s", destination.name, exc)
            await self._final(
                assoc,
                message,
                UNABLE_TO_PERFORM_SUB_OPERATIONS,
                comment=f"cannot reach {name}: {exc}",  # response() keeps 64 characters
                counts=_counts(None, 0, len(records), 0),
            )
            return
        log.info("C-MOVE from %s to %s: %d instances", self._origin(assoc), name, len(records))
        self._audit(assoc, "retrieve", f"C-MOVE to {name}", _study_of(records))
        try:
            await self._retrieve(assoc, message, records, sender)
        finally:
            await self._run(sender.close)

    async def _retrieve(
        self, assoc: Association, message: Message, records: list[InstanceRecord], sender: Any
    ) -> None:
        """Send *records* one by one, with a pending response after each, then the final one."""
        command = message.command
        assert command is not None
        completed = failed = warned = 0
        failed_uids: list[str] = []
        total = len(records)
        for number, record in enumerate(records, 1):
            if assoc.is_cancelled(command.message_id):
                await self._final(
                    assoc, message, CANCELLED, counts=_counts(None, completed, failed, warned)
                )
                return
            following = records[number] if number < total else None
            if following is not None:  # its disk read overlaps this one's sending
                self.archive.prefetch(following)
            status = await sender.send(record, following)
            if status == SUCCESS:
                completed += 1
            elif status in _WARNINGS:
                warned += 1
            else:
                failed += 1
                failed_uids.append(record.sop_instance_uid)
            if number < total:
                pending = commands.response(
                    command, PENDING, extra=_counts(total - number, completed, failed, warned)
                )
                if sender.holds_pending:  # it goes out with the next C-STORE
                    assoc.hold(message.context_id, pending)
                else:
                    await assoc.send(message.context_id, pending)
        if failed or warned:
            failure = Dataset()
            failure.FailedSOPInstanceUIDList = failed_uids
            implicit = assoc.syntax(message.context_id) == ImplicitVRLittleEndian
            await self._final(
                assoc,
                message,
                SUB_OPERATIONS_WARNING,
                counts=_counts(None, completed, failed, warned),
                dataset=encode_dataset(failure, implicit, True),
            )
            return
        await self._final(assoc, message, SUCCESS, counts=_counts(None, completed, 0, 0))


def _counts(
    remaining: int | None, completed: int, failed: int, warned: int
) -> list[tuple[int, int | str | bytes]]:
    counts: list[tuple[int, int | str | bytes]] = [
        (commands.COMPLETED, completed),
        (commands.FAILED, failed),
        (commands.WARNING, warned),
    ]
    if remaining is not None:
        counts.append((commands.REMAINING, remaining))
    return counts


def _study_of(records: list[InstanceRecord]) -> str | None:
    return records[0].study_instance_uid if records else None


def _name(sop_class: str) -> str:
    if sop_class in GET_MODELS:
        return "C-GET"
    return "C-MOVE" if sop_class in MOVE_MODELS else "C-FIND"


class _GetSender:
    """C-GET sub-operations: C-STORE requests of ours on the requestor's association.

    While the requestor takes in one instance, the next one's file is read into its PDUs
    (``Association.prepare``): the requestor's response then only waits for a write.
    """

    holds_pending = True  # pending responses share a write with the next C-STORE

    def __init__(self, assoc: Association, services: Services) -> None:
        self.assoc = assoc
        self.services = services
        # (record, context ID, its PDUs or why they could not be read), read ahead
        self._ready: tuple[InstanceRecord, int, bytearray | OSError] | None = None

    async def send(self, record: InstanceRecord, following: InstanceRecord | None = None) -> int:
        contexts = self.assoc.storage_contexts(record.sop_class_uid)
        archive = self.services.archive

        def build(message_id: int) -> bytes:
            return commands.encode(
                [
                    (commands.COMMAND_FIELD, commands.C_STORE_RQ),
                    (commands.MESSAGE_ID, message_id),
                    (commands.PRIORITY, 0),
                    (commands.DATASET_TYPE, commands.HAS_DATASET),
                    (commands.AFFECTED_SOP_CLASS, record.sop_class_uid),
                    (commands.AFFECTED_SOP_INSTANCE, record.sop_instance_uid),
                ]
            )

        def read_ahead() -> None:
            if following is not None:
                self._read_ahead(following)

        try:
            if record.transfer_syntax_uid in contexts:
                context_id = contexts[record.transfer_syntax_uid]
                prepared = self._take(record, context_id)
                if prepared is not None:
                    response = await self.assoc.request(
                        context_id, build, read_ahead, prepared=prepared
                    )
                else:  # too large for one write: read as it is sent
                    with archive.open(record) as fh:
                        offset = dataset_offset(fh)
                        fh.seek(offset)
                        response = await self.assoc.request(
                            context_id,
                            build,
                            read_ahead,
                            source=fh,
                            source_length=record.size - offset,
                        )
            else:
                context_id, encoded = await self.services._run(
                    _converted, archive, record, contexts
                )
                response = await self.assoc.request(context_id, build, read_ahead, dataset=encoded)
        except (TranscodeError, OSError) as exc:
            log.warning("cannot send %s: %s", record.sop_instance_uid, exc)
            return 0xA702
        return response.us(commands.STATUS, 0xC000) or 0

    def _read(self, record: InstanceRecord, context_id: int) -> bytearray | None:
        """*record*'s stored data set as its PDUs; None when too large for one write."""
        with self.services.archive.open(record) as fh:
            offset = dataset_offset(fh)
            fh.seek(offset)
            return self.assoc.prepare(context_id, fh, record.size - offset)

    def _take(self, record: InstanceRecord, context_id: int) -> bytearray | None:
        """*record*'s PDUs, read ahead or now; raises ``OSError`` when its file fails."""
        ready, self._ready = self._ready, None
        if ready is None or ready[0] is not record or ready[1] != context_id:
            return self._read(record, context_id)
        if isinstance(ready[2], OSError):
            raise ready[2]
        return ready[2]

    def _read_ahead(self, record: InstanceRecord) -> None:
        """Read *record*'s file now, when it will be sent as stored (see the class)."""
        context_id = self.assoc.storage_contexts(record.sop_class_uid).get(
            record.transfer_syntax_uid
        )
        if context_id is None:
            return  # converted when its turn comes
        try:
            prepared = self._read(record, context_id)
        except OSError as exc:
            self._ready = (record, context_id, exc)
            return
        except Exception:  # read again at its turn, which reports what is wrong
            log.debug("reading %s ahead failed", record.sop_instance_uid, exc_info=True)
            return
        if prepared is not None:
            self._ready = (record, context_id, prepared)


def _find_answers(archive: Archive, query: Any, encoder: AnswerEncoder) -> list[bytes]:
    """The matches of *query*, each encoded as a C-FIND pending response's identifier."""
    answers = []
    for result in archive.find(query):
        encoded = encoder.encode(result)
        if encoded is None:
            log.warning("a C-FIND answer could not be encoded; skipped")
            continue
        answers.append(encoded)
    return answers


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


def _converted(
    archive: Archive, record: InstanceRecord, contexts: dict[str, int]
) -> tuple[int, bytes]:
    """A stored file converted for a peer that does not take its syntax: (context, bytes).

    Uncompressed little endian when accepted, else a compressed syntax encoded for it
    (:func:`vesalius.dicom.transcode.choose_syntax`).
    """
    target = choose_syntax(
        record.transfer_syntax_uid, contexts, allow_lossy=archive.settings.transcode_lossy
    )
    dataset = _payload(archive, record, {record.sop_class_uid: {target}})
    implicit = target == ImplicitVRLittleEndian
    encoded = encode_dataset(dataset, implicit, True)
    if encoded is None:
        raise TranscodeError(f"{record.sop_instance_uid} cannot be encoded for the requestor")
    return contexts[target], encoded


class _MoveSender:
    """C-MOVE sub-operations over a sub-association opened with pynetdicom as the SCU."""

    holds_pending = False  # the requestor hears of each sub-operation as it completes

    def __init__(
        self,
        assoc: Association,
        services: Services,
        destination: Any,
        records: list[InstanceRecord],
        message_id: int,
    ) -> None:
        self.assoc = assoc
        self.services = services
        self.destination = destination
        self.records = records
        self.message_id = message_id
        self.sub: Any = None

    def open(self) -> None:
        if not self.records:
            return
        ae = AE(ae_title=self.services.settings.ae_title)
        ae.requested_contexts = contexts_for(
            self.records, allow_lossy=self.services.settings.transcode_lossy
        )
        ae.dimse_timeout = self.services.settings.dimse_timeout
        ae.network_timeout = self.services.settings.network_timeout
        sub = ae.associate(
            self.destination.host,
            self.destination.port,
            ae_title=self.destination.ae_title,
            evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)],
            tls_args=tls_args_for(self.destination, self.services.settings),
        )
        if not sub.is_established:
            raise ConnectionError(f"{self.destination.ae_title} refused the association")
        self.sub = sub

    def close(self) -> None:
        if self.sub is not None and self.sub.is_established:
            self.sub.release()

    def _send_one(self, record: InstanceRecord) -> int:
        accepted = accepted_syntaxes(self.sub.accepted_contexts)
        try:
            payload = _payload(self.services.archive, record, accepted)
        except (TranscodeError, OSError) as exc:
            log.warning("cannot send %s: %s", record.sop_instance_uid, exc)
            return 0xA702
        status = self.sub.send_c_store(
            payload,
            originator_aet=self.assoc.requestor.ae_title,
            originator_id=self.message_id,
        )
        return int(status.Status) if "Status" in status else 0xA702

    async def send(self, record: InstanceRecord, following: InstanceRecord | None = None) -> int:
        if self.sub is None or not self.sub.is_established:
            return 0xA702
        result: int = await self.services._run(self._send_one, record)
        return result
