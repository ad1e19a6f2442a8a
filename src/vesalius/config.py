"""Vesalius settings: one typed object, read once from a TOML file and ``VESALIUS_*`` variables.

The environment wins over the file, and the file wins over the defaults. The object is built
by :func:`load_settings` at the edge of the program (the CLI) and passed down; nothing deeper
reads the environment.

Examples
--------
>>> settings = load_settings(env={"VESALIUS_DICOM_PORT": "4242"})
>>> settings.dicom_port
4242
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from vesalius.auth.permissions import DimseService, Role

ENV_PREFIX = "VESALIUS_"


class ConfigError(Exception):
    """The configuration cannot be used; the message says which setting and why."""


class DuplicatePolicy(StrEnum):
    """What to do when an instance with a known SOP Instance UID arrives with other content."""

    KEEP_FIRST = "keep_first"
    REPLACE = "replace"


class SubjectIdScheme(StrEnum):
    """How the research subject (and follow-up session) is derived from a DICOM PatientID."""

    PATIENT_ID = "patient_id"  # the PatientID is the subject; no session number
    CAP = "cap"  # Cardiac Atlas Project: 8-character subject + 2-digit follow-up session


class RemoteAE(BaseModel):
    """A DICOM peer Vesalius knows: a C-MOVE destination, a caller with rights, or both.

    A calling AE title listed with a *role* (or a bound *user* account) may use the DIMSE
    services that role's permissions allow (the table in ``auth/permissions.py``); one listed
    without either may do what an unlisted AE may (``unknown_ae_services``).
    """

    name: str = Field(description="A short name for people and scripts.")
    ae_title: str = Field(description="The peer's AE title.")
    host: str | None = Field(
        default=None,
        description=(
            "Host name or address of the peer: where C-MOVE sends to, and (with "
            "remote_ae_check_host) the only address its AE title is trusted from."
        ),
    )
    port: int | None = Field(
        default=None, ge=1, le=65535, description="The peer's DICOM port (C-MOVE destination)."
    )
    role: str | None = Field(
        default=None,
        description="The role whose permissions decide this AE's C-FIND/C-GET/C-MOVE/C-STORE.",
    )
    user: str | None = Field(
        default=None,
        description="An account whose role (while it is active) decides what this AE may do.",
    )
    certificate: str | None = Field(
        default=None,
        description=(
            "Subject common name of the TLS client certificate that stands for this AE: on "
            "the TLS port a caller with this AE title and a verified certificate of this name "
            "gets this entry's role from any address; without it, the entry's role is refused."
        ),
    )
    tls: bool = Field(
        default=False,
        description=(
            "Open associations to this peer (C-MOVE) over DICOM TLS, verifying its certificate "
            "against dicom_tls_ca_certificates."
        ),
    )

    @field_validator("ae_title")
    @classmethod
    def _valid_ae_title(cls, value: str) -> str:
        return _check_ae_title(value)

    @field_validator("role")
    @classmethod
    def _valid_role(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return Role(value).value
        except ValueError:
            raise ValueError(
                f"unknown role {value!r}; roles: {', '.join(r.value for r in Role)}"
            ) from None

    @model_validator(mode="after")
    def _one_binding(self) -> RemoteAE:
        if self.role is not None and self.user is not None:
            raise ValueError(f"remote AE {self.name!r}: give a role or a user, not both")
        if (self.host is None) != (self.port is None):
            raise ValueError(f"remote AE {self.name!r}: give both host and port, or neither")
        return self

    @property
    def is_destination(self) -> bool:
        """Whether C-MOVE can send to this peer (it has an address)."""
        return self.host is not None and self.port is not None


class RemotePacs(BaseModel):
    """A PACS whose studies this site lists: over DICOMweb, or over DIMSE (C-FIND)."""

    model_config = {"extra": "forbid"}

    name: str = Field(
        description="A short name: `vesalius mirror sync NAME`, the worklist's source."
    )
    dicomweb_url: str | None = Field(
        default=None, description="The PACS's DICOMweb root, e.g. http://pacs:8042/dicom-web."
    )
    username: str | None = Field(default=None, description="HTTP Basic user for dicomweb_url.")
    password: str | None = Field(default=None, description="HTTP Basic password.")
    token: str | None = Field(default=None, description="Bearer token for dicomweb_url.")
    ae_title: str | None = Field(default=None, description="The PACS's AE title (C-FIND).")
    host: str | None = Field(default=None, description="The PACS's DICOM host.")
    port: int | None = Field(default=None, ge=1, le=65535, description="The PACS's DICOM port.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > 64 or value == "local" or not value.isprintable():
            raise ValueError(f"{value!r} is not a usable name (1 to 64 characters, not 'local')")
        return value

    @field_validator("ae_title")
    @classmethod
    def _valid_ae_title(cls, value: str | None) -> str | None:
        return _check_ae_title(value) if value is not None else None

    @model_validator(mode="after")
    def _one_way_to_reach_it(self) -> RemotePacs:
        dimse = self.ae_title and self.host and self.port
        if not self.dicomweb_url and not dimse:
            raise ValueError(
                f"remote_pacs {self.name!r} needs dicomweb_url, or ae_title, host and port"
            )
        return self


def _check_ae_title(value: str) -> str:
    value = value.strip()
    if not value or len(value) > 16 or "\\" in value or not value.isprintable():
        raise ValueError(
            f"{value!r} is not a valid AE title: use 1 to 16 printable characters without '\\'"
        )
    return value


class Route(BaseModel):
    """A forwarding rule ([[route]]): instances matching *match* are sent to *to*."""

    model_config = {"extra": "forbid"}

    name: str = Field(description="A short name, shown in the job list.")
    match: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "DICOM keywords (and CallingAE) to values, matched with the C-FIND rules "
            "(wildcards, ranges, lists); empty matches everything."
        ),
    )
    to: str = Field(description="The name of a [[remote_ae]] (C-STORE) or [[dicomweb_server]].")
    on: Literal["instance", "stable"] = Field(
        default="instance",
        description="Forward each instance as it arrives, or the whole study once it is stable.",
    )


class DicomwebServer(BaseModel):
    """A DICOMweb peer ([[dicomweb_server]]): a STOW-RS forwarding target."""

    model_config = {"extra": "forbid"}

    name: str = Field(description="A short name that routes refer to.")
    url: str = Field(description="The DICOMweb root, e.g. https://pacs.example/dicom-web.")
    username: str | None = Field(default=None, description="HTTP Basic user name.")
    password: str | None = Field(default=None, description="HTTP Basic password.")
    token: str | None = Field(default=None, description="Bearer token (instead of Basic).")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"a DICOMweb URL starts with http:// or https://, not {value!r}")
        return value.rstrip("/")


class Settings(BaseModel):
    """Every setting of Vesalius, with its default. ``vesalius config show`` prints them."""

    model_config = {"extra": "forbid", "validate_assignment": True}

    data_dir: Path = Field(
        default=Path("./vesalius-data"),
        description="Folder for the embedded index and the stored files.",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the index: sqlite:///..., postgresql+psycopg://..., "
            "mysql+pymysql://... Default: SQLite in the data folder."
        ),
    )
    sqlite_synchronous: Literal["normal", "full"] = Field(
        default="normal",
        description=(
            "How the embedded SQLite index reaches the disk. normal: a stored instance's rows "
            "commit while its file is flushed, the index log is flushed in the background "
            "(see index_flush_interval_s) and start-up mends what a power cut left (files "
            "without rows are indexed, rows without their file removed), so an instance costs "
            "one disk flush; full: every commit is flushed too, after the file."
        ),
    )
    index_flush_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="With sqlite_synchronous = normal: the most time between index log flushes.",
    )
    storage_dir: Path | None = Field(
        default=None, description="Folder for stored files. Default: <data_dir>/storage."
    )
    storage_write_cache_mb: int = Field(
        default=256,
        ge=0,
        description=(
            "MiB of the newest stored files each serve process keeps in the OS page cache; "
            "older ones are dropped from memory (not from disk) as new ones arrive, so a long "
            "ingest does not push the index and the studies being read out of memory. "
            "0 drops each file once it is on disk."
        ),
    )
    ae_title: str = Field(default="VESALIUS", description="The archive's own AE title.")
    dicom_host: str = Field(default="0.0.0.0", description="Address the DICOM port listens on.")
    dicom_port: int = Field(default=11112, ge=0, le=65535, description="DICOM port; 0 = any.")
    dicom_tls_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "A second DICOM port that speaks TLS (PS3.15 B.9, BCP 195; 2762 is usual); "
            "none by default, 0 = any."
        ),
    )
    dicom_tls_certificate: Path | None = Field(
        default=None, description="PEM certificate (chain) of the DICOM TLS port."
    )
    dicom_tls_private_key: Path | None = Field(
        default=None, description="PEM private key (unencrypted) of that certificate."
    )
    dicom_tls_ca_certificates: Path | None = Field(
        default=None,
        description=(
            "PEM file of the CAs whose certificates clients of the TLS port must present "
            "(unset: no client certificate asked); also verifies peers marked tls = true."
        ),
    )
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP port listens on.")
    http_port: int = Field(default=8080, ge=0, le=65535, description="HTTP port; 0 = any.")
    http_enabled: bool = Field(default=True, description="Serve HTTP beside DICOM.")
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "Processes serving DICOM and HTTP on the same ports (more use more CPU cores); "
            "needs fixed ports."
        ),
    )
    reuse_port: bool = Field(
        default=False,
        description=(
            "Bind with SO_REUSEPORT so that separately started processes share the ports "
            "(the workers of one serve share their parent's sockets instead)."
        ),
    )
    accept_unknown_aes: bool = Field(
        default=True,
        description="Accept associations from calling AE titles not listed as remote AEs.",
    )
    remote_ae: list[RemoteAE] = Field(
        default_factory=list, description="Known DICOM peers ([[remote_ae]] tables)."
    )
    unknown_ae_services: list[DimseService] = Field(
        default_factory=lambda: [DimseService.ECHO, DimseService.STORE],
        description=(
            "What a calling AE title that is not listed with a role or user may do: any of "
            "echo, store, find, get, move."
        ),
    )
    check_called_ae_title: bool = Field(
        default=False,
        description=(
            "Refuse associations whose called AE title is not ae_title (off: like Orthanc; the "
            "called title is no secret, so access is decided by the calling AE)."
        ),
    )
    remote_ae_check_host: bool = Field(
        default=True,
        description=(
            "Trust a listed AE title's role only from its configured host (when it has one); "
            "from elsewhere it is treated as unlisted."
        ),
    )
    duplicate_policy: DuplicatePolicy = Field(
        default=DuplicatePolicy.KEEP_FIRST,
        description="A re-sent instance with other content: keep_first or replace.",
    )
    case_insensitive_pn: bool = Field(
        default=True,
        description="Match person names (PN) ignoring case and accents, as Orthanc does.",
    )
    max_pdu_size: int = Field(
        default=4_194_304, ge=0, description="Largest PDU offered and accepted (bytes; 0 = any)."
    )
    dimse_timeout: float = Field(default=60.0, gt=0, description="DIMSE message timeout (s).")
    network_timeout: float = Field(default=60.0, gt=0, description="Idle network timeout (s).")
    max_associations: int = Field(default=32, ge=1, description="Concurrent associations.")
    acse_timeout: float = Field(
        default=30.0, gt=0, description="Time a new connection has to request an association (s)."
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed to call the HTTP API from a browser."
    )
    public_url: str | None = Field(
        default=None,
        description=(
            "The URL clients reach the HTTP server by (e.g. https://pacs.example.org behind a "
            "proxy), used in RetrieveURL and BulkDataURI answers. Default: from the request."
        ),
    )
    subject_id_scheme: SubjectIdScheme = Field(
        default=SubjectIdScheme.PATIENT_ID,
        description=(
            "How a research subject is derived from the DICOM PatientID: patient_id (the ID "
            "itself) or cap (a 10-character CAP ID is an 8-character subject ID plus a 2-digit "
            "follow-up session, so XYZ0001501 is session 1 of subject XYZ00015)."
        ),
    )
    stow_max_part_bytes: int = Field(
        default=4 * 1024**3,
        ge=1,
        description="Largest instance (one part) a STOW-RS request may carry (bytes); 413 past it.",
    )
    stow_max_request_bytes: int = Field(
        default=64 * 1024**3,
        ge=1,
        description="Largest STOW-RS request body (bytes); 413 past it.",
    )
    max_aux_file_bytes: int = Field(
        default=1024**3,
        ge=1,
        description="Largest auxiliary file (PDF, echo export, ...) a subject's record accepts.",
    )
    max_heart_model_bytes: int = Field(
        default=512 * 1024**2, ge=1, description="Largest heart model zip accepted (bytes)."
    )
    max_heart_model_xml_bytes: int = Field(
        default=16 * 1024**2, ge=1, description="Largest heart model XML metadata (bytes)."
    )
    max_subject_import_bytes: int = Field(
        default=64 * 1024**3,
        ge=1,
        description=(
            "Largest subject export zip that an import accepts, and the most its members may "
            "expand to (bytes)."
        ),
    )
    zip_max_uncompressed_bytes: int = Field(
        default=4 * 1024**3,
        ge=1,
        description="Most a heart model zip may expand to, all members together (bytes).",
    )
    zip_max_members: int = Field(
        default=100_000, ge=1, description="Most members a zip (heart model or import) may hold."
    )
    zip_max_ratio: float = Field(
        default=200.0,
        gt=1,
        description=(
            "Highest compression ratio accepted for a zip member of 1 MiB or more (a zip "
            "bomb has ratios in the thousands)."
        ),
    )

    admin_password: str | None = Field(
        default=None,
        description=(
            "Password of the `admin` account created at the first start. Default: a generated "
            "password, printed once in the log."
        ),
    )
    session_hours: float = Field(
        default=8.0, gt=0, description="How long a portal login lasts without remember-me (h)."
    )
    remember_days: float = Field(
        default=30.0, gt=0, description="How long a login with remember-me lasts (days)."
    )
    password_min_length: int = Field(
        default=10, ge=8, description="Fewest characters a password may have."
    )
    login_max_failures_per_account: int = Field(
        default=5, ge=1, description="Failed logins of one account before it is locked for a while."
    )
    login_max_failures_per_address: int = Field(
        default=20, ge=1, description="Failed logins from one address before it is locked out."
    )
    login_lockout_minutes: int = Field(
        default=15, ge=1, description="The window in which failed logins are counted (minutes)."
    )
    secure_cookies: bool | None = Field(
        default=None,
        description=(
            "Mark session cookies Secure. Default: when the request came over HTTPS or "
            "public_url starts with https://."
        ),
    )
    audit_retention_days: int = Field(
        default=3650,
        ge=0,
        description="Audit events older than this are deleted by the hourly cleanup (0 = keep).",
    )

    stow_json_max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024,
        description=(
            "Largest STOW-RS request of JSON metadata and bulk data; it is held in memory "
            "while the instances are built (application/dicom parts are streamed instead)."
        ),
    )
    storage_transfer_syntax: str | None = Field(
        default=None,
        description=(
            "Store images in this transfer syntax, re-encoded losslessly on arrival: "
            "1.2.840.10008.1.2.4.80 (JPEG-LS), 1.2.840.10008.1.2.4.90 (JPEG 2000), "
            "1.2.840.10008.1.2.5 (RLE) or 1.2.840.10008.1.2.1 (uncompressed). Default: each "
            "file exactly as received."
        ),
    )
    transcode_lossy: bool = Field(
        default=False,
        description=(
            "Allow lossy transfer syntaxes (JPEG-LS near-lossless, JPEG 2000) when a requester "
            "accepts only those; otherwise only lossless ones are encoded on retrieve."
        ),
    )

    # -- jobs, events and plugins (issue 10) -------------------------------------------------
    jobs_enabled: bool = Field(
        default=True, description="Run queued jobs in this process (every serve process does)."
    )
    job_workers: int = Field(
        default=2, ge=1, le=64, description="Jobs run at the same time by one serve process."
    )
    job_poll_s: float = Field(
        default=1.0, gt=0, le=3600, description="How often the job runner looks for ready jobs (s)."
    )
    job_retry_base_s: float = Field(
        default=10.0,
        ge=0,
        description="Wait before the first retry of a failed job (s); doubles each attempt.",
    )
    job_retention_days: float = Field(
        default=7.0, ge=0, description="Done and cancelled jobs are removed after this many days."
    )
    route: list[Route] = Field(
        default_factory=list, description="Forwarding rules ([[route]] tables)."
    )
    dicomweb_server: list[DicomwebServer] = Field(
        default_factory=list, description="DICOMweb peers routes send to ([[dicomweb_server]])."
    )
    stable_after_s: float = Field(
        default=60.0,
        ge=1,
        description="A study without a new instance for this long is stable (complete).",
    )
    plugins: list[str] = Field(
        default_factory=list,
        description=(
            "Python modules loaded as plugins at start, besides the installed packages of the "
            "entry point group vesalius.plugins."
        ),
    )
    disabled_plugins: list[str] = Field(
        default_factory=list,
        description=(
            "Names of plugins not to load, although shipped or installed (an entry point "
            "installed in the environment for another purpose, say): "
            "VESALIUS_DISABLED_PLUGINS='[\"example\"]'."
        ),
    )

    viewer_dir: Path | None = Field(
        default=None,
        description=(
            "Folder of the OHIF viewer files (scripts/fetch-viewer). Default: the copy inside "
            "the installed package."
        ),
    )

    central_index: bool = Field(
        default=False,
        description=(
            "Act as the central index of a federation: accept site pushes at "
            "/api/federation/studies and search them (sites: `vesalius central site add`)."
        ),
    )
    central_max_batch: int = Field(
        default=5000,
        ge=1,
        description="Most study records one push to the central index may carry (more: 413).",
    )
    central_max_body_bytes: int = Field(
        default=16 * 1024**2,
        ge=1024,
        description="Largest push body the central index reads (bytes; more: 413).",
    )
    indexer_url: str | None = Field(
        default=None,
        description=(
            "The central index's push endpoint, e.g. https://central.example/api/federation/"
            "studies. When set, `serve` pushes this site's study metadata to it."
        ),
    )
    indexer_key: str | None = Field(
        default=None,
        description="This site's key for the central index (`vesalius central site add` there).",
    )
    site_code: str | None = Field(
        default=None,
        description="This site's code at the central index (the `center` of its records).",
    )
    indexer_interval_s: float = Field(
        default=300.0,
        gt=0,
        description=(
            "Seconds between scheduled pushes to the central index (the safety net: a push "
            "also starts soon after new changes)."
        ),
    )
    indexer_debounce_s: float = Field(
        default=1.0,
        ge=0,
        description=(
            "Seconds a push waits after a new study, so that studies stored together go together."
        ),
    )
    remote_pacs: list[RemotePacs] = Field(
        default_factory=list,
        description=(
            "Remote PACS whose studies this site mirrors into its worklist and indexes "
            "([[remote_pacs]] tables: name, and dicomweb_url with username/password or "
            "token, or ae_title, host and port)."
        ),
    )
    mirror_interval_s: float = Field(
        default=300.0,
        ge=1,
        description=(
            "Seconds between scheduled syncs of each [[remote_pacs]] into the worklist "
            "(`vesalius mirror sync` does one at once)."
        ),
    )
    indexer_batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="Study records per push request."
    )

    @field_validator("ae_title")
    @classmethod
    def _valid_own_ae_title(cls, value: str) -> str:
        return _check_ae_title(value)

    @field_validator("site_code")
    @classmethod
    def _valid_site_code(cls, value: str | None) -> str | None:
        from vesalius.federation.records import check_site_code

        return check_site_code(value) if value else None

    @field_validator("log_level")
    @classmethod
    def _valid_log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("use DEBUG, INFO, WARNING or ERROR")
        return value

    @field_validator("database_url")
    @classmethod
    def _valid_database_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        scheme = value.split(":", 1)[0]
        if not scheme.startswith(("sqlite", "postgresql", "mysql", "mariadb")):
            raise ValueError(
                f"unsupported database {scheme!r}: use sqlite:///path, "
                "postgresql+psycopg://user@host/db or mysql+pymysql://user@host/db"
            )
        return value

    @model_validator(mode="after")
    def _workers_need_fixed_ports(self) -> Settings:
        if self.workers > 1 and (
            self.dicom_port == 0 or (self.http_enabled and self.http_port == 0)
        ):
            raise ValueError("workers > 1 needs fixed DICOM and HTTP ports (not 0)")
        return self

    @field_validator("storage_transfer_syntax")
    @classmethod
    def _lossless_storage_syntax(cls, value: str | None) -> str | None:
        from vesalius.dicom.transcode import STORAGE_SYNTAXES

        if value in (None, ""):
            return None
        value = value.strip()
        if value not in STORAGE_SYNTAXES:
            raise ValueError(
                f"{value!r} cannot be a storage syntax; use one of {', '.join(STORAGE_SYNTAXES)}"
                " (lossless), or leave it unset to keep files as received"
            )
        return value

    @model_validator(mode="after")
    def _tls_needs_a_certificate(self) -> Settings:
        if self.dicom_tls_port is not None and (
            self.dicom_tls_certificate is None or self.dicom_tls_private_key is None
        ):
            raise ValueError("dicom_tls_port needs dicom_tls_certificate and dicom_tls_private_key")
        return self

    @model_validator(mode="after")
    def _valid_routes(self) -> Settings:
        from vesalius.routing import check_routes

        problems = check_routes(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _unique_remote_names(self) -> Settings:
        names = [ae.name for ae in self.remote_ae]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"remote_ae names must be unique; repeated: {', '.join(duplicates)}")
        pacs_names = [pacs.name for pacs in self.remote_pacs]
        repeated = sorted({n for n in pacs_names if pacs_names.count(n) > 1})
        if repeated:
            raise ValueError(f"remote_pacs names must be unique; repeated: {', '.join(repeated)}")
        return self

    @property
    def effective_database_url(self) -> str:
        """The index URL, defaulting to SQLite inside the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    @property
    def effective_storage_dir(self) -> Path:
        """Where blobs live, defaulting to ``<data_dir>/storage``."""
        return self.storage_dir if self.storage_dir is not None else self.data_dir / "storage"

    def find_remote_pacs(self, name: str) -> RemotePacs | None:
        """The ``[[remote_pacs]]`` table of this name, if configured."""
        for pacs in self.remote_pacs:
            if pacs.name == name.strip():
                return pacs
        return None

    def find_remote_ae(self, ae_title_or_name: str) -> RemoteAE | None:
        """The remote AE with this AE title (or name), if configured; one with an address
        (a C-MOVE destination) is preferred when several share the title."""
        found = [
            ae
            for ae in self.remote_ae
            if ae.ae_title == ae_title_or_name.strip() or ae.name == ae_title_or_name
        ]
        destinations = [ae for ae in found if ae.is_destination]
        return (destinations or found or [None])[0]

    def masked(self) -> dict[str, Any]:
        """The settings as plain data with secrets (database passwords) masked."""
        data = self.model_dump(mode="json")
        data["database_url"] = mask_url(self.effective_database_url)
        data["storage_dir"] = str(self.effective_storage_dir)
        if self.admin_password:
            data["admin_password"] = "***"
        if self.indexer_key:
            data["indexer_key"] = "***"
        for pacs in data.get("remote_pacs", []):
            for secret in ("password", "token"):
                if pacs.get(secret):
                    pacs[secret] = "***"
        for server in data.get("dicomweb_server", []):
            for secret in ("password", "token"):
                if server.get(secret):
                    server[secret] = "***"
        return data


def mask_url(url: str) -> str:
    """Replace the password in a database URL with ``***``.

    Examples
    --------
    >>> mask_url("postgresql+psycopg://vesalius:secret@db/pacs")
    'postgresql+psycopg://vesalius:***@db/pacs'
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, at, host = rest.rpartition("@")
    user, colon, _password = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}{at}{host}"


# Settings whose environment value is a list or table: parsed as TOML values.
_STRUCTURED = {
    "remote_ae",
    "remote_pacs",
    "cors_origins",
    "unknown_ae_services",
    "plugins",
    "disabled_plugins",
    "route",
    "dicomweb_server",
}


# Settings that no longer exist, and what stands in their place. A configuration that still sets
# one is not refused, as an unknown key (a typo) in a file is: what the setting chose is now the
# only way, so it is ignored with a note that says so.
REMOVED_SETTINGS = {
    "dicom_engine": "the asyncio engine is the only one",
}


def unknown_environment(env: Mapping[str, str] | None = None) -> list[str]:
    """``VESALIUS_*`` variables that name no setting (typos, most likely).

    They are ignored rather than refused, because the environment is shared with other tools
    (the test suite's ``VESALIUS_TEST_*`` variables, for one); the command line prints them.
    A removed setting is not listed: :func:`load_settings` says why it is ignored.
    """
    env = os.environ if env is None else env
    known = Settings.model_fields.keys() | REMOVED_SETTINGS.keys()
    return sorted(
        key
        for key in env
        if key.startswith(ENV_PREFIX)
        and key != f"{ENV_PREFIX}CONFIG"
        and not key.startswith(f"{ENV_PREFIX}TEST_")
        and key[len(ENV_PREFIX) :].lower() not in known
    )


def _drop_removed(values: dict[str, Any], env: Mapping[str, str], file: Path | None) -> list[str]:
    """Take the removed settings out of the file's *values*; a note for each one set."""
    notes = []
    for name, why in REMOVED_SETTINGS.items():
        if name in values:
            del values[name]
            notes.append(
                f"{name} (in {file}) was removed in this version and is ignored: {why}. "
                "Delete it from the file."
            )
        variable = f"{ENV_PREFIX}{name.upper()}"
        if variable in env:
            notes.append(f"{variable}: {name} was removed in this version and is ignored: {why}.")
    return notes


def _env_values(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    fields = Settings.model_fields
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in fields:
            continue
        if name in _STRUCTURED:
            try:
                values[name] = tomllib.loads(f"v = {raw}")["v"]
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(
                    f'{key} must be a TOML value (for example ["a", "b"]): {exc}'
                ) from None
        else:
            values[name] = raw
    return values


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    notes: list[str] | None = None,
) -> Settings:
    """Build the settings from a TOML file (``VESALIUS_CONFIG`` or *path*) and the environment.

    A removed setting (:data:`REMOVED_SETTINGS`) in either is ignored, and a sentence saying
    so is appended to *notes* for the caller to show.

    Raises
    ------
    ConfigError
        With a message naming the file, the setting and what is wrong.
    """
    env = os.environ if env is None else env
    path = path or env.get(f"{ENV_PREFIX}CONFIG") or None
    values: dict[str, Any] = {}
    file = None if path is None else Path(path)
    if file is not None:
        try:
            values = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file {file} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"configuration file {file} is not valid TOML: {exc}") from None
        if "vesalius" in values and isinstance(values["vesalius"], dict):
            # Accept both a flat file and one with a [vesalius] table.
            values = {**values.pop("vesalius"), **values}
    removed = _drop_removed(values, env, file)
    if notes is not None:
        notes.extend(removed)
    values.update(_env_values(env))
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
