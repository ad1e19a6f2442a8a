"""The capabilities transaction (PS3.18 8.9): ``OPTIONS`` on the service root and each resource.

The answer is built from the routes themselves, so it lists exactly what the server serves:
an ``Allow`` header with the resource's methods, and a description of the resource (the whole
service at the root) in WADL (``application/vnd.sun.wadl+xml``, the default) or JSON
(``application/json``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from vesalius.web.dicomweb import media
from vesalius.web.dicomweb.common import dicomweb_url, problem

WADL = "application/vnd.sun.wadl+xml"
JSON = "application/json"
_IMPLICIT = {"HEAD", "OPTIONS"}


def resources_of(prefix: str, routes: Iterable[Any]) -> dict[str, dict[str, str]]:
    """Path template (under *prefix*) -> {method: summary} for the API routes given."""
    table: dict[str, dict[str, str]] = {}
    for route in routes:
        if isinstance(route, APIRoute):
            methods = table.setdefault(prefix + route.path, {})
            for method in sorted(route.methods - _IMPLICIT):
                methods[method] = route.summary or route.name
    return table


def allow(methods: dict[str, str]) -> str:
    names = set(methods) | {"OPTIONS"}
    if "GET" in names:
        names.add("HEAD")
    return ", ".join(sorted(names))


def wadl(base: str, table: dict[str, dict[str, str]], root: str) -> str:
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<application xmlns="http://wadl.dev.java.net/2009/02">',
        f"  <resources base={quoteattr(base.rstrip('/') + '/')}>",
    ]
    for path in sorted(table):
        relative = path[len(root) :].lstrip("/")
        lines.append(f"    <resource path={quoteattr(relative)}>")
        for method, summary in table[path].items():
            lines.append(f"      <method name={quoteattr(method)}>")
            lines.append(f"        <doc>{escape(summary)}</doc>")
            lines.append("      </method>")
        lines.append("    </resource>")
    lines += ["  </resources>", "</application>", ""]
    return "\n".join(lines)


def _answer(
    request: Request, root: str, table: dict[str, dict[str, str]], methods: dict[str, str]
) -> Response:
    ranges = media.parse_accept(request.headers.get("accept"))
    for wanted in ranges:
        if wanted.allows(WADL) or wanted.type in ("*/*", "*"):
            kind = WADL
            break
        if wanted.allows(JSON) or wanted.type == "application/dicom+json":
            kind = JSON
            break
    else:
        raise problem(
            406, f"capabilities are described as {WADL} (the default) or {JSON}; ask for one"
        )
    headers = {"Allow": allow(methods)}
    if kind == JSON:
        import orjson

        body = [{"path": p, "methods": table[p]} for p in sorted(table)]
        return Response(orjson.dumps(body), media_type=JSON, headers=headers)
    base = dicomweb_url(request)
    return Response(wadl(base, table, root), media_type=WADL, headers=headers)


def _resource_handler(root: str, path: str, methods: dict[str, str]) -> Any:
    def resource_capabilities(request: Request) -> Response:
        return _answer(request, root, {path: methods}, methods)

    return resource_capabilities


def router_for(table: dict[str, dict[str, str]], root: str) -> APIRouter:
    """OPTIONS at *root* (the whole service) and at each resource of *table*."""
    router = APIRouter()

    @router.options(root, summary="Capabilities of the DICOMweb service", include_in_schema=False)
    def service_capabilities(request: Request) -> Response:
        return _answer(request, root, table, {})

    for path, methods in table.items():
        router.add_api_route(
            path,
            _resource_handler(root, path, methods),
            methods=["OPTIONS"],
            summary="Capabilities of this resource",
            include_in_schema=False,
        )
    return router
