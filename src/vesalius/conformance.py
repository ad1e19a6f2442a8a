"""The DICOM conformance statement (PS3.2), generated from the tables the code itself runs on.

Nothing here is written by hand: the SOP classes come from the association negotiation table,
the transfer syntaxes from :mod:`vesalius.dicom.syntaxes` and :mod:`vesalius.dicom.transcode`,
the character sets from :mod:`vesalius.dicom.find_response`, the DICOMweb resources from the
HTTP routes, the security rules from the settings and the permission table. ``/api/conformance``
serves :func:`statement`; ``vesalius conformance`` prints :func:`markdown`, and
``docs/conformance.md`` is that output for the default settings (a test keeps it equal).
"""

from __future__ import annotations

from typing import Any

from pydicom.uid import UID

from vesalius import __version__
from vesalius.config import Settings


def _name(uid: str) -> str:
    return UID(uid).name


def _uids(uids: Any) -> list[dict[str, str]]:
    return [{"name": _name(u), "uid": str(u)} for u in sorted(uids, key=lambda u: (_name(u), u))]


def dicomweb_resources() -> list[dict[str, Any]]:
    """Each DICOMweb path template with its methods and summary, from the routes themselves."""
    from vesalius.web import dicomweb

    table = dicomweb.resources()
    return [{"path": path, "methods": table[path]} for path in sorted(table)]


def library_versions() -> str:
    """The libraries whose tables (UID names, storage SOP classes) the statement lists."""
    import pydicom
    import pynetdicom

    return f"pydicom {pydicom.__version__}, pynetdicom {pynetdicom.__version__}"


def statement(settings: Settings) -> dict[str, Any]:
    """The conformance statement as plain data (JSON-ready), for these settings."""
    from vesalius.auth.permissions import DIMSE_RULES
    from vesalius.dicom.find_response import DEFINED_TERMS, UTF8
    from vesalius.dicom.syntaxes import ACCEPTED_TRANSFER_SYNTAXES, UNCOMPRESSED
    from vesalius.dicom.transcode import LOSSLESS_TARGETS, LOSSY_TARGETS
    from vesalius.dimse import negotiation
    from vesalius.dimse.pdu import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION

    supported = negotiation.Supported.archive().syntaxes
    storage = sorted(negotiation.STORAGE_CLASSES)
    query_retrieve = sorted(
        negotiation.FIND_MODELS | negotiation.GET_MODELS | negotiation.MOVE_MODELS
    )
    services = {
        **{m: "C-FIND" for m in negotiation.FIND_MODELS},
        **{m: "C-GET" for m in negotiation.GET_MODELS},
        **{m: "C-MOVE" for m in negotiation.MOVE_MODELS},
    }
    tls_port = getattr(settings, "dicom_tls_port", None)
    return {
        "implementation": {
            "name": "Vesalius",
            "tables_from": library_versions(),
            "version": __version__,
            "class_uid": IMPLEMENTATION_CLASS_UID,
            "version_name": IMPLEMENTATION_VERSION,
        },
        "application_entity": {
            "ae_title": settings.ae_title,
            "port": settings.dicom_port,
            "tls_port": tls_port,
            "max_pdu_size": settings.max_pdu_size,
            "max_associations": settings.max_associations,
            "accepts_unknown_calling_aes": settings.accept_unknown_aes,
        },
        "sop_classes_scp": [
            {
                "name": _name(negotiation.VERIFICATION),
                "uid": negotiation.VERIFICATION,
                "service": "C-ECHO",
                "transfer_syntaxes": list(supported[negotiation.VERIFICATION]),
            },
            *[
                {
                    "name": _name(m),
                    "uid": m,
                    "service": services[m],
                    "transfer_syntaxes": list(supported[m]),
                }
                for m in query_retrieve
            ],
            *[{**item, "service": "C-STORE"} for item in _uids(storage)],
            {
                "name": _name(negotiation.STORAGE_COMMITMENT),
                "uid": negotiation.STORAGE_COMMITMENT,
                "service": "N-ACTION, N-EVENT-REPORT (Push Model; the report on the same "
                "association while it is open, else on a new one to the [[remote_ae]] with the "
                "SCP role proposed)",
                "transfer_syntaxes": list(supported[negotiation.STORAGE_COMMITMENT]),
            },
        ],
        "sop_classes_scu": [
            {**item, "service": "C-STORE (C-GET and C-MOVE sub-operations)"}
            for item in _uids(storage)
        ],
        "transfer_syntaxes": {
            "accepted_for_storage": _uids(ACCEPTED_TRANSFER_SYNTAXES),
            "sent_uncompressed": _uids(UNCOMPRESSED[:2]),
            "encoded_lossless": [
                {"name": _name(s), "uid": s} for s in LOSSLESS_TARGETS
            ],  # in order of preference
            "encoded_lossy": [{"name": _name(s), "uid": s} for s in LOSSY_TARGETS],
            "lossy_encoding_enabled": settings.transcode_lossy,
            "stored_as": settings.storage_transfer_syntax or "as received",
            "rule": (
                "Instances are stored as received. On retrieve they are sent as stored when the "
                "requester accepts it, else in uncompressed little endian, else encoded in the "
                "first accepted syntax of the lossless list (the lossy list only when enabled)."
            ),
        },
        "character_sets": {
            "defined_terms": sorted(DEFINED_TERMS),
            "default": "ISO_IR 6 (the default repertoire)",
            "c_find": (
                "Answers keep all person-name groups and use the request's Specific Character "
                f"Set when it can carry every value, else {UTF8}. An undefined term is refused "
                "(0xC001). Person names match on their alphabetic group."
            ),
        },
        "dicomweb": {
            "root": "/dicom-web",
            "resources": dicomweb_resources(),
        },
        "security": {
            "dimse_access": {
                "unlisted_calling_aes_may": [str(s) for s in settings.unknown_ae_services],
                "services": {
                    str(service): str(rule.permission) for service, rule in DIMSE_RULES.items()
                },
                "rule": (
                    "A calling AE listed as a [[remote_ae]] with a role or user may use the "
                    "services that role's permissions allow; every access is audited."
                ),
            },
            "http": (
                "Every DICOMweb and API request needs a session or an API token (Bearer, or "
                "the password of HTTP Basic), checked against the permission table, and is "
                "audited."
            ),
            "tls": (
                {"port": tls_port, "profile": "BCP 195 (TLS 1.2 or 1.3)"}
                if tls_port
                else "not configured (dicom_tls_port)"
            ),
        },
    }


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def markdown(data: dict[str, Any]) -> str:
    """The statement as a Markdown document (``docs/conformance.md``)."""
    impl, ae = data["implementation"], data["application_entity"]
    ts = data["transfer_syntaxes"]
    out: list[str] = [
        "# Vesalius DICOM conformance statement",
        "",
        "Generated by `vesalius conformance` from the code's own tables (default settings);",
        "do not edit by hand. The running server gives the same, for its settings, at",
        "`/api/conformance`.",
        "",
        f"Tables from {impl['tables_from']}.",
        "",
        "## Implementation",
        "",
        *_table(
            [
                ["Implementation Class UID", impl["class_uid"]],
                ["Implementation Version Name", impl["version_name"]],
                ["AE title", ae["ae_title"]],
                ["Port", str(ae["port"])],
                ["TLS port", str(ae["tls_port"] or "not configured")],
                ["Maximum PDU size", str(ae["max_pdu_size"])],
                ["Concurrent associations", str(ae["max_associations"])],
                [
                    "Accepts unknown calling AE titles",
                    "yes" if ae["accepts_unknown_calling_aes"] else "no",
                ],
            ],
            ["", ""],
        ),
        "",
        "## SOP classes as SCP",
        "",
        *_table(
            [
                [c["name"], f"`{c['uid']}`", c["service"]]
                for c in data["sop_classes_scp"]
                if c["service"] != "C-STORE"
            ],
            ["SOP class", "UID", "service"],
        ),
        "",
        "Storage (C-STORE SCP), every transfer syntax of the next section:",
        "",
        *_table(
            [
                [c["name"], f"`{c['uid']}`"]
                for c in data["sop_classes_scp"]
                if c["service"] == "C-STORE"
            ],
            ["SOP class", "UID"],
        ),
        "",
        "## SOP classes as SCU",
        "",
        "The same storage SOP classes, as C-STORE SCU in C-GET and C-MOVE sub-operations.",
        "",
        "## Transfer syntaxes",
        "",
        "Accepted for storage, and stored "
        + (
            "exactly as received"
            if ts["stored_as"] == "as received"
            else f"re-encoded losslessly as `{ts['stored_as']}` (images)"
        )
        + ":",
        "",
        *_table(
            [[t["name"], f"`{t['uid']}`"] for t in ts["accepted_for_storage"]], ["name", "UID"]
        ),
        "",
        ts["rule"],
        "",
        "Encoded on retrieve, lossless, in order of preference:",
        "",
        *_table([[t["name"], f"`{t['uid']}`"] for t in ts["encoded_lossless"]], ["name", "UID"]),
        "",
        "Encoded lossy only with `transcode_lossy` (now: "
        f"{'on' if ts['lossy_encoding_enabled'] else 'off'}):",
        "",
        *_table([[t["name"], f"`{t['uid']}`"] for t in ts["encoded_lossy"]], ["name", "UID"]),
        "",
        "## Character sets",
        "",
        data["character_sets"]["c_find"],
        "",
        "Specific Character Set defined terms: "
        + ", ".join(f"`{t}`" for t in data["character_sets"]["defined_terms"])
        + ".",
        "",
        "## DICOMweb",
        "",
        *_table(
            [
                [", ".join(r["methods"]), f"`{r['path']}`", "; ".join(r["methods"].values())]
                for r in data["dicomweb"]["resources"]
            ],
            ["methods", "resource", "transaction"],
        ),
        "",
        "Every resource also answers `OPTIONS` (the capabilities transaction, PS3.18 8.9).",
        "",
        "## Security",
        "",
        data["security"]["dimse_access"]["rule"],
        "Unlisted calling AE titles may: "
        + ", ".join(data["security"]["dimse_access"]["unlisted_calling_aes_may"])
        + ".",
        "",
        *_table(
            [[s, p] for s, p in data["security"]["dimse_access"]["services"].items()],
            ["DIMSE service", "permission"],
        ),
        "",
        data["security"]["http"],
        "",
        "TLS: "
        + (
            data["security"]["tls"]
            if isinstance(data["security"]["tls"], str)
            else f"port {data['security']['tls']['port']}, {data['security']['tls']['profile']}"
        )
        + ".",
        "",
    ]
    return "\n".join(out)
