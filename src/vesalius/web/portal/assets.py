"""The portal's static files, with cache rules that keep a warm page fast and never stale.

- ``?v=<build stamp>`` URLs and the bundler's hashed chunks (``chunk-<hash>.js``) never change
  under their URL: cached for a year, immutable (no revalidation on a warm load).
- Everything else is revalidated on each use (``no-cache`` with its ETag: a 304 when unchanged).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

IMMUTABLE = "public, max-age=31536000, immutable"


class PortalStatic(StaticFiles):
    def file_response(
        self, full_path: Any, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        versioned = b"v=" in scope.get("query_string", b"")
        hashed = Path(str(full_path)).name.startswith("chunk-")
        response.headers["Cache-Control"] = IMMUTABLE if versioned or hashed else "no-cache"
        return response
