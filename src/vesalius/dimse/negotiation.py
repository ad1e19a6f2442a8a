"""What the archive accepts in an association: abstract syntaxes, transfer syntaxes, roles.

One table, built once per server: every storage SOP class (sent to us, or sent by us to a C-GET
requestor that takes the SCP role), the Query/Retrieve models, Storage Commitment and
Verification.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from vesalius.dicom.syntaxes import ACCEPTED_TRANSFER_SYNTAXES
from vesalius.dimse.pdu import (
    ABSTRACT_SYNTAX_NOT_SUPPORTED,
    ACCEPTANCE,
    TRANSFER_SYNTAXES_NOT_SUPPORTED,
    AcceptedContext,
    AssociateRequest,
    ProposedContext,
)

FIND_MODELS = {
    str(PatientRootQueryRetrieveInformationModelFind),
    str(StudyRootQueryRetrieveInformationModelFind),
}
GET_MODELS = {
    str(PatientRootQueryRetrieveInformationModelGet),
    str(StudyRootQueryRetrieveInformationModelGet),
}
MOVE_MODELS = {
    str(PatientRootQueryRetrieveInformationModelMove),
    str(StudyRootQueryRetrieveInformationModelMove),
}
PATIENT_ROOT = {
    str(PatientRootQueryRetrieveInformationModelFind),
    str(PatientRootQueryRetrieveInformationModelGet),
    str(PatientRootQueryRetrieveInformationModelMove),
}
VERIFICATION = str(Verification)
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"  # Storage Commitment Push Model (PS3.4 J)
STORAGE_CLASSES = frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)
# Commands and identifiers are small: any little endian syntax does for them.
_PLAIN = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@dataclass(frozen=True)
class Supported:
    """Abstract syntax -> transfer syntaxes accepted for it."""

    syntaxes: dict[str, tuple[str, ...]]  # in order of preference

    @classmethod
    def archive(cls, extra: dict[str, list[str]] | None = None) -> Supported:
        table: dict[str, tuple[str, ...]] = {
            VERIFICATION: tuple(_PLAIN),
            STORAGE_COMMITMENT: tuple(_PLAIN),
        }
        for model in FIND_MODELS | GET_MODELS | MOVE_MODELS:
            table[model] = tuple(_PLAIN)
        storage = tuple(ACCEPTED_TRANSFER_SYNTAXES)
        for sop_class in STORAGE_CLASSES:
            table[sop_class] = storage
        for uid, syntaxes in (extra or {}).items():
            table[uid] = tuple(syntaxes)
        return cls(table)


@dataclass
class Negotiated:
    contexts: list[AcceptedContext]
    roles: dict[str, tuple[bool, bool]]  # role selection replies

    def accepted(self) -> dict[int, AcceptedContext]:
        return {cx.id: cx for cx in self.contexts if cx.result == ACCEPTANCE}


def _refused(proposed: ProposedContext, result: int) -> AcceptedContext:
    # The answer carries a transfer syntax sub-item even when refused (PS3.8 9.3.3.2: present,
    # not significant); some peers do not parse the item without one.
    syntax = proposed.transfer_syntaxes[0] if proposed.transfer_syntaxes else ImplicitVRLittleEndian
    return AcceptedContext(
        proposed.id,
        result,
        proposed.abstract_syntax,
        str(syntax),
    )


def negotiate(request: AssociateRequest, supported: Supported) -> Negotiated:
    """Accept each proposed context we support, with our most preferred syntax proposed in it.

    Our order (uncompressed little endian first, as pynetdicom and DCMTK's storescp choose)
    lets a sender that proposes a file's own syntax in a context of its own send it unchanged:
    the archive stores what it receives. Proposed SCP/SCU roles are accepted as proposed for storage
    classes, which is what a C-GET requestor needs to receive its instances.
    """
    contexts: list[AcceptedContext] = []
    for proposed in request.contexts:
        accepted = supported.syntaxes.get(proposed.abstract_syntax)
        if accepted is None:
            contexts.append(_refused(proposed, ABSTRACT_SYNTAX_NOT_SUPPORTED))
            continue
        choice = next((ts for ts in accepted if ts in proposed.transfer_syntaxes), "")
        if choice:
            contexts.append(
                AcceptedContext(proposed.id, ACCEPTANCE, proposed.abstract_syntax, choice)
            )
        else:
            contexts.append(_refused(proposed, TRANSFER_SYNTAXES_NOT_SUPPORTED))
    roles = {
        uid: proposed
        for uid, proposed in request.roles.items()
        if uid in STORAGE_CLASSES and uid in supported.syntaxes
    }
    return Negotiated(contexts, roles)
