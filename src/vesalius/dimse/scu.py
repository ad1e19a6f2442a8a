"""pynetdicom as Vesalius's DICOM client (SCU): helpers for the associations Vesalius opens
with it (its logging switches are set with the rest of the logging, :mod:`vesalius.logs`).

Vesalius serves its DICOM ports with its own network layer (:mod:`vesalius.dimse.listener`);
the associations it opens to other AEs are pynetdicom's: C-MOVE sub-associations, storage
commitment reports on a new association, routes, the C-FIND and C-GET to remote PACS.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any

from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext

from vesalius.config import Settings
from vesalius.dicom.syntaxes import move_proposal
from vesalius.index.imaging import InstanceRecord

log = logging.getLogger(__name__)


def set_nodelay(event: Event) -> None:
    """Turn off Nagle's algorithm: DIMSE is request/response and stalls ~40 ms without it.

    An ``EVT_CONN_OPEN`` handler for the associations Vesalius opens.
    """
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # the peer may already be gone
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def tls_args_for(destination: Any, settings: Settings) -> tuple[Any, None] | None:
    """pynetdicom's ``tls_args`` for a peer marked ``tls = true`` (None: plain TCP)."""
    if not getattr(destination, "tls", False):
        return None
    from vesalius.tls import client_context

    return client_context(settings), None


def contexts_for(
    records: list[InstanceRecord], allow_lossy: bool = False
) -> list[PresentationContext]:
    """Presentation contexts to send *records* on (see :func:`move_proposal`), at most 128."""
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


def accepted_syntaxes(contexts: list[PresentationContext]) -> dict[str, set[str]]:
    """SOP class -> the transfer syntaxes the peer accepted for it."""
    accepted: dict[str, set[str]] = {}
    for cx in contexts:
        accepted.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
    return accepted
