"""The one permission table: which role holds which permission, and which permission (and
audit action) each HTTP route needs.

Routes are matched by method and by their *path template* (``/dicom-web/studies/{study}``),
not by the concrete URL, with shell-style patterns; the first rule that matches wins. A route
no rule matches is refused to everyone (fail closed), and a test checks that every route of
the application matches a rule.

Examples
--------
>>> rule_for("GET", "/dicom-web/studies/{study}/metadata").permission
<Permission.IMAGES_READ: 'images.read'>
>>> Role.REFERRING_DOCTOR.may(Permission.RECORDS_READ)
False
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase


class Permission(StrEnum):
    PUBLIC = "public"  # no login needed: the login page, static files, /api/system
    AUTHENTICATED = "authenticated"  # any logged-in user: own account, logout, home
    WORKLIST_READ = "worklist.read"
    IMAGES_READ = "images.read"  # QIDO, WADO, rendered, thumbnails, the viewer
    IMAGES_DOWNLOAD = "images.download"  # zip of a study or series
    IMAGES_STORE = "images.store"  # STOW-RS
    IMAGES_DELETE = "images.delete"
    RECORDS_READ = "records.read"
    RECORDS_WRITE = "records.write"
    RECORDS_DELETE = "records.delete"
    USERS_MANAGE = "users.manage"
    AUDIT_READ = "audit.read"
    SYSTEM_HEALTH = "system.health"
    CHANGES_READ = "changes.read"  # the change feed (UIDs and patient IDs of every change)
    JOBS_MANAGE = "jobs.manage"  # the job queue: list, retry, cancel
    FEDERATION_SEARCH = "federation.search"  # the central index's search across sites
    # Held by no role: the route is called by a site's indexer with its site key.
    FEDERATION_PUSH = "federation.push"


P = Permission

_EVERYONE = {P.AUTHENTICATED, P.WORKLIST_READ, P.IMAGES_READ}


class Role(StrEnum):
    ADMIN = "admin"
    RADIOLOGIST = "radiologist"
    REFERRING_DOCTOR = "referring_doctor"
    RESEARCHER = "researcher"

    @property
    def permissions(self) -> frozenset[Permission]:
        return ROLE_PERMISSIONS[self]

    def may(self, permission: Permission) -> bool:
        return permission is P.PUBLIC or permission in ROLE_PERMISSIONS[self]


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(P) - {P.PUBLIC, P.FEDERATION_PUSH},
    Role.RADIOLOGIST: frozenset(
        _EVERYONE | {P.IMAGES_DOWNLOAD, P.IMAGES_STORE, P.RECORDS_READ, P.FEDERATION_SEARCH}
    ),
    Role.REFERRING_DOCTOR: frozenset(_EVERYONE),
    Role.RESEARCHER: frozenset(
        _EVERYONE | {P.IMAGES_DOWNLOAD, P.RECORDS_READ, P.RECORDS_WRITE, P.FEDERATION_SEARCH}
    ),
}

# What a new account gets unless told otherwise: the role with the fewest permissions.
DEFAULT_ROLE = Role.REFERRING_DOCTOR

ROLE_LABELS = {
    Role.ADMIN: "Administrator",
    Role.RADIOLOGIST: "Radiologist",
    Role.REFERRING_DOCTOR: "Referring doctor",
    Role.RESEARCHER: "Researcher",
}


def role_may(role: str, permission: Permission) -> bool:
    """Whether a role (as stored) holds *permission*; unknown roles hold nothing."""
    try:
        return Role(role).may(permission)
    except ValueError:
        return permission is P.PUBLIC


@dataclass(frozen=True)
class Rule:
    """Requests of *methods* to a route whose template matches *pattern* need *permission*.

    *action* names the audit event the request writes (``None``: not audited); *page* marks
    browser pages, which send an anonymous visitor to the login page instead of answering 401.
    """

    methods: frozenset[str]
    pattern: str
    permission: Permission
    action: str | None = None
    page: bool = False

    def matches(self, method: str, template: str) -> bool:
        return method in self.methods and fnmatchcase(template, self.pattern)


def _rule(
    methods: str,
    pattern: str,
    permission: Permission,
    action: str | None = None,
    page: bool = False,
) -> Rule:
    return Rule(frozenset(methods.split()), pattern, permission, action, page)


READ = "GET HEAD"
WRITE = "POST PUT PATCH"

RULES: tuple[Rule, ...] = (
    # -- public ------------------------------------------------------------------------------
    _rule(READ, "/login", P.PUBLIC, page=True),
    _rule("POST", "/login", P.PUBLIC),
    _rule(READ, "/static/*", P.PUBLIC),
    _rule(READ, "/api/system", P.PUBLIC),
    _rule(READ, "/api/conformance", P.PUBLIC),
    _rule("OPTIONS", "/dicom-web*", P.PUBLIC),  # capabilities (PS3.18 8.9): no patient data
    # -- DICOMweb ----------------------------------------------------------------------------
    _rule(READ, "/dicom-web/studies", P.IMAGES_READ, "search"),
    _rule(READ, "/dicom-web/series", P.IMAGES_READ, "search"),
    _rule(READ, "/dicom-web/instances", P.IMAGES_READ, "search"),
    _rule(READ, "/dicom-web/studies/{study}/series", P.IMAGES_READ, "search"),
    _rule(READ, "/dicom-web/studies/{study}/instances", P.IMAGES_READ, "search"),
    _rule(READ, "/dicom-web/studies/{study}/series/{series}/instances", P.IMAGES_READ, "search"),
    _rule(READ, "/dicom-web/*", P.IMAGES_READ, "retrieve"),
    _rule(READ, "/wado", P.IMAGES_READ, "retrieve"),
    _rule("POST", "/dicom-web/*", P.IMAGES_STORE, "store"),
    _rule("DELETE", "/dicom-web/*", P.IMAGES_DELETE, "delete"),
    # -- archive API -------------------------------------------------------------------------
    _rule(READ, "/api/studies/*/archive", P.IMAGES_DOWNLOAD, "download"),
    _rule("DELETE", "/api/studies/*", P.IMAGES_DELETE, "delete"),
    _rule(READ, "/api/studies/*", P.IMAGES_READ, "view"),
    _rule(READ, "/api/worklist", P.WORKLIST_READ, "search"),
    _rule(READ, "/api/patients/*", P.IMAGES_READ, "view"),
    # -- research records --------------------------------------------------------------------
    _rule(READ, "/api/subjects/*/export", P.RECORDS_READ, "download"),
    _rule(READ, "/api/subjects/*/files*", P.RECORDS_READ, "download"),
    _rule(READ, "/api/subjects/*/models*", P.RECORDS_READ, "download"),
    _rule(READ, "/api/subjects", P.RECORDS_READ, "search"),
    _rule(READ, "/api/subjects/*", P.RECORDS_READ, "view"),
    _rule(READ, "/api/heart-models*", P.RECORDS_READ, "search"),
    _rule(WRITE, "/api/subjects*", P.RECORDS_WRITE, "change"),
    _rule(WRITE, "/api/heart-models*", P.RECORDS_WRITE, "change"),
    _rule("DELETE", "/api/subjects/*/events/*/links*", P.RECORDS_WRITE, "change"),
    _rule("DELETE", "/api/subjects*", P.RECORDS_DELETE, "delete"),
    # -- federation (central index) ------------------------------------------------------------
    _rule("POST", "/api/federation/studies", P.FEDERATION_PUSH),
    _rule(READ, "/api/federation/studies", P.FEDERATION_SEARCH, "search"),
    _rule(READ, "/federation/dicom-web/studies", P.FEDERATION_SEARCH, "search"),
    _rule(READ, "/federation", P.FEDERATION_SEARCH, page=True),
    # -- remote PACS mirror: fetching a study into the archive is a store -------------------
    _rule("POST", "/api/remote/*/retrieve", P.IMAGES_STORE, "store"),
    _rule(READ, "/api/remote*", P.IMAGES_READ, "view"),
    # -- people and audit --------------------------------------------------------------------
    _rule(READ + " " + WRITE + " DELETE", "/api/me*", P.AUTHENTICATED),
    _rule(READ, "/api/users*", P.USERS_MANAGE),
    _rule(WRITE + " DELETE", "/api/users*", P.USERS_MANAGE, "change"),
    _rule(READ, "/api/audit*", P.AUDIT_READ),
    _rule(READ, "/api/health", P.SYSTEM_HEALTH),
    _rule(READ, "/api/changes*", P.CHANGES_READ, "search"),
    _rule(READ, "/api/jobs*", P.JOBS_MANAGE),
    _rule(WRITE, "/api/jobs*", P.JOBS_MANAGE, "change"),
    # -- portal pages ------------------------------------------------------------------------
    _rule(READ, "/", P.AUTHENTICATED, page=True),
    _rule("POST", "/logout", P.AUTHENTICATED),
    _rule(READ, "/account", P.AUTHENTICATED, page=True),
    _rule("POST", "/account/*", P.AUTHENTICATED, "change"),
    _rule(READ, "/worklist", P.WORKLIST_READ, page=True),
    _rule(READ, "/patients/*", P.IMAGES_READ, "view", page=True),
    _rule(READ, "/studies/*", P.IMAGES_READ, "view", page=True),
    _rule(READ, "/subjects/*", P.RECORDS_READ, "view", page=True),
    _rule(READ, "/viewer*", P.IMAGES_READ, page=True),
    _rule(READ, "/admin/users*", P.USERS_MANAGE, page=True),
    _rule("POST", "/admin/users*", P.USERS_MANAGE, "change"),
    _rule(READ, "/admin/audit*", P.AUDIT_READ, page=True),
    _rule(READ, "/admin/health", P.SYSTEM_HEALTH, page=True),
    _rule(READ, "/admin/jobs*", P.JOBS_MANAGE, page=True),
    _rule("POST", "/admin/jobs*", P.JOBS_MANAGE, "change"),
    # -- the API's own documentation (any logged-in user) -----------------------------------
    _rule(READ, "/docs", P.AUTHENTICATED, page=True),
    _rule(READ, "/redoc", P.AUTHENTICATED, page=True),
    _rule(READ, "/openapi.json", P.AUTHENTICATED),
)


class DimseService(StrEnum):
    """The DIMSE services a calling AE may ask for (the names used in the settings)."""

    ECHO = "echo"
    STORE = "store"
    FIND = "find"
    GET = "get"
    MOVE = "move"


@dataclass(frozen=True)
class DimseRule:
    """A DIMSE service needs *permission*; *action* names its audit event."""

    permission: Permission
    action: str
    label: str


# The DICOM side of the table: a calling AE bound to a role (or a user) may use a service when
# that role holds the permission; C-GET and C-MOVE send the same instances WADO-RS does.
DIMSE_RULES: dict[DimseService, DimseRule] = {
    DimseService.ECHO: DimseRule(P.PUBLIC, "echo", "C-ECHO"),
    DimseService.STORE: DimseRule(P.IMAGES_STORE, "store", "C-STORE"),
    DimseService.FIND: DimseRule(P.IMAGES_READ, "search", "C-FIND"),
    DimseService.GET: DimseRule(P.IMAGES_READ, "retrieve", "C-GET"),
    DimseService.MOVE: DimseRule(P.IMAGES_READ, "retrieve", "C-MOVE"),
}


# Rules that plugins add for their routes under /plugins/<name>/ (see vesalius.plugins).
_PLUGIN_RULES: dict[str, Rule] = {}


def add_plugin_rule(
    methods: str, pattern: str, permission: Permission, action: str | None = None
) -> Rule:
    """Declare who may call a plugin's routes; only patterns under ``/plugins/`` are taken."""
    if not pattern.startswith("/plugins/"):
        raise ValueError(f"plugin routes live under /plugins/<name>/, not {pattern!r}")
    rule = _rule(methods, pattern, permission, action)
    _PLUGIN_RULES[f"{methods} {pattern}"] = rule
    return rule


def rule_for(method: str, template: str) -> Rule | None:
    """The first rule for a request to the route *template*; ``None`` means nobody may."""
    method = method.upper()
    for rule in RULES:
        if rule.matches(method, template):
            return rule
    if template.startswith("/plugins/"):
        for rule in list(_PLUGIN_RULES.values()):
            if rule.matches(method, template):
                return rule
    return None
