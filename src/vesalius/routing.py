"""Forwarding rules (``[[route]]``) and study completeness, as a shipped plugin.

A route matches an instance with the archive's C-FIND rules (:mod:`vesalius.dicom.matching`)
on its attributes and ``CallingAE`` (the origin), and forwards it to a ``[[remote_ae]]`` by
C-STORE or to a ``[[dicomweb_server]]`` by STOW-RS. Every forward is a job
(``route.forward``): it retries with backoff when the peer refuses or is away, and ends dead
with the peer's answer. ``on = "stable"`` forwards the whole study once it is stable.

Forward jobs are made from the change feed, not from events: the ``route.catchup`` job reads
the changes past each route's watermark, enqueues the forwards they call for and moves the
watermark in one transaction. A thread of each process looks at the feed's newest number
every half second and catches up when it moved; the job also runs every few seconds on one node
and at start-up. So a crash between a store's commit and its forward loses nothing, and a change
becomes a forward job once.

A study is stable when no instance arrived for ``stable_after_s``; the periodic job
``studies.stability`` declares it (a ``study_stable`` change in the feed and a
``StudyStable`` event). It is declared earlier, with reason "complete", when it says it is
complete: every series holds as many instances as it announces (Images in Acquisition), or a
storage commitment request named only instances that are all archived
(:mod:`vesalius.dimse.commitment`).
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_dict

from vesalius import jobs
from vesalius.dicom import dicomjson
from vesalius.dicom.dicomjson import DicomJson
from vesalius.dicom.matching import Constraint, MatchingError, matches, parse_constraint
from vesalius.errors import NotFound
from vesalius.events import StudyStable
from vesalius.index import changes, imaging
from vesalius.index import routes as route_state
from vesalius.index.changes import ChangeKind, utcnow

log = logging.getLogger(__name__)

FORWARD = "route.forward"
STABILITY = "studies.stability"
CALLING_AE = "CallingAE"


@dataclass(frozen=True)
class CompiledRoute:
    name: str
    to: str
    on: str
    constraints: tuple[Constraint, ...]
    calling_ae: Constraint | None


def _constraint(keyword: str, value: str) -> Constraint | None:
    if keyword == CALLING_AE:
        return parse_constraint(keyword, "AE", value)
    if keyword not in keyword_dict:
        raise MatchingError(f"{keyword!r} is not a DICOM keyword (e.g. Modality, StudyDescription)")
    tag = keyword_dict[keyword]
    vr = dictionary_VR(tag)
    if vr == "SQ":
        raise MatchingError(f"{keyword} is a sequence; routes match single attributes")
    return parse_constraint(keyword, vr.split(" or ")[0], value)


def check_routes(settings: Any) -> list[str]:
    """What is wrong with the ``[[route]]`` and ``[[dicomweb_server]]`` settings (empty: ok)."""
    problems = []
    names = [r.name for r in settings.route]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"route names must be unique; {duplicate!r} is repeated")
    servers = {s.name for s in settings.dicomweb_server}
    peers = {ae.name: ae for ae in settings.remote_ae}
    for route in settings.route:
        if route.to in peers:
            peer = peers[route.to]
            if not peer.host or not peer.port:
                problems.append(
                    f"route {route.name!r} sends to remote_ae {route.to!r}, which has no "
                    "host and port"
                )
        elif route.to not in servers:
            known = sorted(peers) + sorted(servers)
            problems.append(
                f"route {route.name!r} sends to {route.to!r}, which is neither a remote_ae nor "
                f"a dicomweb_server (known: {', '.join(known) or 'none'})"
            )
        for keyword, value in route.match.items():
            try:
                _constraint(keyword, value)
            except MatchingError as exc:
                problems.append(f"route {route.name!r}: match {keyword} = {value!r}: {exc}")
    return problems


def compile_routes(settings: Any) -> list[CompiledRoute]:
    compiled = []
    for route in settings.route:
        constraints = []
        calling = None
        for keyword, value in route.match.items():
            constraint = _constraint(keyword, value)
            if constraint is None:
                continue
            if keyword == CALLING_AE:
                calling = constraint
            else:
                constraints.append(constraint)
        compiled.append(CompiledRoute(route.name, route.to, route.on, tuple(constraints), calling))
    return compiled


def _values(data: DicomJson, keyword: str) -> list[str]:
    from vesalius.dicom.dicomjson import tag_key

    element = data.get(tag_key(keyword))
    if not element:
        return []
    out = []
    for value in element.get("Value", []):
        if isinstance(value, dict):  # person name
            value = value.get("Alphabetic", "")
        out.append(str(value))
    return out


def route_matches(
    route: CompiledRoute, data: DicomJson, origin: str | None, *, fold_pn: bool = True
) -> bool:
    """Whether an instance (its DICOM JSON and calling AE) is for this route."""
    if route.calling_ae is not None and not matches(route.calling_ae, origin or ""):
        return False
    return all(matches(c, _values(data, c.keyword), fold=fold_pn) for c in route.constraints)


# -- forwarding ----------------------------------------------------------------------------------


class ForwardError(Exception):
    """The peer refused or could not be reached; the message has its answer."""


def _send_dimse(container: Any, peer: Any, records: list[Any]) -> None:
    from pydicom import dcmread
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE, _config, evt

    from vesalius.dimse.scu import set_nodelay, tls_args_for

    ae = AE(ae_title=container.settings.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    contexts = {(r.sop_class_uid, r.transfer_syntax_uid) for r in records}
    for sop_class in sorted({c for c, _ in contexts}):
        syntaxes = sorted({ts for c, ts in contexts if c == sop_class})
        for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if ts not in syntaxes:
                syntaxes.append(ts)
        ae.add_requested_context(sop_class, syntaxes[:8])
    # A peer marked `tls = true` gets a TLS association, as C-MOVE does.
    tls_args = tls_args_for(peer, container.settings)
    assoc = ae.associate(
        peer.host,
        peer.port,
        ae_title=peer.ae_title,
        tls_args=tls_args,
        evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)],  # no Nagle stall after each message
    )
    if not assoc.is_established:
        raise ForwardError(
            f"{peer.ae_title} at {peer.host}:{peer.port} "
            + ("rejected the association" if assoc.is_rejected else "could not be reached")
        )
    # A stored file the peer takes in its own syntax is sent as it is on disk, in chunks of
    # the peer's PDU size: neither parsed nor held whole in memory.
    _config.STORE_SEND_CHUNKED_DATASET = True
    accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    try:
        for record in records:
            path = container.archive.blobs.local_path(record.blob_key)
            if path is not None and (record.sop_class_uid, record.transfer_syntax_uid) in accepted:
                status = assoc.send_c_store(path)
            else:
                with container.archive.open(record) as fh:
                    status = assoc.send_c_store(dcmread(fh))
            code = int(status.Status) if "Status" in status else None
            if code is None:
                raise ForwardError(f"{peer.ae_title} did not answer the C-STORE")
            if code not in (0x0000, 0xB000, 0xB006, 0xB007):
                comment = status.get("ErrorComment", "")
                raise ForwardError(
                    f"{peer.ae_title} answered 0x{code:04X} for {record.sop_instance_uid}"
                    + (f": {comment}" if comment else "")
                )
    finally:
        assoc.release()


def _send_stow(container: Any, server: Any, records: list[Any]) -> None:
    import httpx

    boundary = uuid.uuid4().hex
    parts = []
    for record in records:
        with container.archive.open(record) as fh:
            parts.append(
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + fh.read()
                + b"\r\n"
            )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    auth = None
    if server.token:
        headers["Authorization"] = f"Bearer {server.token}"
    elif server.username:
        auth = (server.username, server.password or "")
    try:
        answer = httpx.post(
            f"{server.url}/studies", content=body, headers=headers, auth=auth, timeout=60
        )
    except httpx.HTTPError as exc:
        raise ForwardError(f"{server.url} could not be reached: {exc}") from exc
    if answer.status_code not in (200, 202):
        raise ForwardError(f"{server.url} answered {answer.status_code}: {answer.text[:300]}")


def forward(payload: dict[str, Any], context: jobs.JobContext) -> None:
    """The ``route.forward`` job: send an instance (or a whole study) to the route's peer."""
    container = context.container
    settings = container.settings
    route = next((r for r in settings.route if r.name == payload["route"]), None)
    if route is None:
        raise ForwardError(f"route {payload['route']!r} is no longer in the settings")
    if "instances" in payload:  # a batch from the change feed; one association for all
        records = []
        for study, sop in payload["instances"]:
            try:
                records += container.archive.instances_of(study, None, sop)
            except NotFound:
                log.info("route %s: %s was deleted before it was forwarded", route.name, sop)
        if not records:
            return
    else:
        records = container.archive.instances_of(payload["study"], None, payload.get("sop"))
    peer = next((ae for ae in settings.remote_ae if ae.name == route.to), None)
    if peer is not None:
        _send_dimse(container, peer, records)
    else:
        server = next(s for s in settings.dicomweb_server if s.name == route.to)
        _send_stow(container, server, records)
    log.info(
        "route %s: %d instance(s) of %d study(ies) sent to %s",
        route.name,
        len(records),
        len({r.study_instance_uid for r in records}),
        route.to,
    )


def settle(payload: dict[str, Any], context: jobs.JobContext) -> None:
    """The ``studies.stability`` job: declare idle studies stable and announce them."""
    container = context.container
    idle_since = utcnow() - timedelta(seconds=container.settings.stable_after_s)
    settled = container.db.run_write(lambda s: imaging.settle_studies(s, idle_since))
    for study in settled:
        container.events.publish(
            StudyStable(study.study_instance_uid, study.patient_id or None, study.num_instances)
        )
    # Earlier when a study says it is complete: as many instances as its series announce.
    with container.db.read() as session:
        complete = imaging.announced_complete(session)
    if complete:
        container.archive.declare_complete(complete)


# -- from the change feed to forward jobs --------------------------------------------------------

CATCHUP = "route.catchup"
CATCHUP_EVERY_S = 5
BATCH = 500
FORWARD_BATCH = 50  # instances per forward job (one association; a STOW-RS body in memory)
_INSTANCE_KINDS = {ChangeKind.INSTANCE_STORED.value, ChangeKind.INSTANCE_REPLACED.value}


def _catch_up_batch(session: Any, routes: list[CompiledRoute], fold: bool) -> int:
    """Turn the changes past the routes' watermarks into forward jobs, and move the
    watermarks, in one transaction; returns how many changes were read."""
    names = [r.name for r in routes]
    marks = route_state.lock_watermarks(session, names)
    batch = changes.changes_since(session, min(marks.values()), BATCH)
    if not batch:
        return 0
    data = route_state.instance_data(
        session, [c.sop_uid for c in batch if c.kind in _INSTANCE_KINDS and c.sop_uid]
    )
    instances: dict[str, list[tuple[str | None, str | None]]] = {r.name: [] for r in routes}
    first_seq: dict[str, int] = {}
    for change in batch:
        for route in routes:
            if change.seq <= marks[route.name]:
                continue
            if route.on == "instance" and change.kind in _INSTANCE_KINDS:
                row = data.get(change.sop_uid or "")
                if row is None or row[1] == "reindex":  # deleted since, or a rebuild
                    continue
                if route_matches(route, dicomjson.loads(row[0]), row[1], fold_pn=fold):
                    instances[route.name].append((change.study_uid, change.sop_uid))
                    first_seq.setdefault(route.name, change.seq)
            elif route.on == "stable" and change.kind == ChangeKind.STUDY_STABLE.value:
                first = imaging.first_instance_json(session, change.study_uid or "")
                if (
                    first is not None
                    and route.calling_ae is None
                    and route_matches(route, first, None, fold_pn=fold)
                ):
                    jobs.enqueue(
                        session,
                        FORWARD,
                        {"route": route.name, "study": change.study_uid},
                        dedupe_key=f"route:{route.name}:{change.study_uid}"[:191],
                    )
    for name, found in instances.items():
        for start in range(0, len(found), FORWARD_BATCH):
            chunk = found[start : start + FORWARD_BATCH]
            jobs.enqueue(
                session,
                FORWARD,
                {"route": name, "instances": chunk},
                dedupe_key=f"route:{name}:from:{first_seq[name]}:{start}"[:191],
            )
    route_state.move_watermarks(session, names, batch[-1].seq)
    return len(batch)


def catch_up_all(container: Any, routes: list[CompiledRoute]) -> None:
    """Read the feed past the routes' watermarks up to its end, a batch per transaction."""
    fold = container.settings.case_insensitive_pn
    while container.db.run_write(lambda s: _catch_up_batch(s, routes, fold)) >= BATCH:
        pass


class _Catcher:
    """Catches up soon after this process's (or another node's) stores: a thread that looks at
    the feed's newest number every ``POLL_S`` (one small read) and makes a pass when it moved.

    No event subscription: the stores' hot path does not wake anything, and a burst of stores
    costs about two transactions a second, not one per instance.
    """

    POLL_S = 0.5

    def __init__(self, container: Any, routes: list[CompiledRoute]) -> None:
        self.container = container
        self.routes = routes
        self.stop_event = threading.Event()
        self.seen = -1
        self.thread = threading.Thread(target=self._run, name="route-catchup", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def poll(self) -> None:
        with self.container.db.read() as session:
            latest = changes.latest_seq(session)
        if latest != self.seen:
            catch_up_all(self.container, self.routes)
            self.seen = latest

    def _run(self) -> None:
        while not self.stop_event.wait(self.POLL_S):
            try:
                self.poll()
            except Exception:
                log.exception("routing could not read the change feed; the periodic job retries")


def catch_up(payload: dict[str, Any], context: jobs.JobContext) -> None:
    """The ``route.catchup`` job: forward what the feed holds past each route's watermark.

    It runs every few seconds on one node, and at start-up (a crash between a store's commit
    and its forward is caught up here); each process's :class:`_Catcher` is quicker.
    """
    routes = compile_routes(context.container.settings)
    if routes:
        catch_up_all(context.container, routes)


jobs.register(FORWARD, forward, max_attempts=8, lease_s=600)
jobs.register(STABILITY, settle, max_attempts=3, lease_s=120)
jobs.register(CATCHUP, catch_up, max_attempts=3, lease_s=300)
jobs.schedule(STABILITY, every_s=2, payload={})
jobs.schedule(CATCHUP, every_s=CATCHUP_EVERY_S, payload={})


def setup(plugin: Any) -> None:
    """Give new routes their watermark and start this process's catch-up thread."""
    container = plugin.container
    routes = compile_routes(container.settings)
    if not routes:
        return
    container.db.run_write(
        lambda session: route_state.ensure_watermarks(session, [r.name for r in routes])
    )

    catcher = _Catcher(container, routes)
    container.closers.append(catcher.stop)
    catcher.start()
