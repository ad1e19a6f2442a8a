"""Looking after the queue: the JSON API, the admin page and ``vesalius jobs``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from authhelp import admin_headers, bearer, make_user
from httpserver import running_app
from vesalius import jobs
from vesalius.config import Settings
from vesalius.container import Container, build
from vesalius.index import jobs as sql


def _dead_job(container: Container, error: str = "peer refused: 0xA700") -> int:
    job_id = jobs.enqueue(container.db, "t.admin", {"study": "1.2.3"})
    assert job_id is not None
    with container.db.write() as session:
        [row] = sql.claim(session, "node/1", ["t.admin"], 1, {})
        assert sql.fail(session, row.id, "node/1", error, None)
    return job_id


def test_the_jobs_api_lists_retries_and_cancels(sqlite_container: Container) -> None:
    dead = _dead_job(sqlite_container)
    queued = jobs.enqueue(sqlite_container.db, "t.admin", {"n": 2})
    researcher = make_user(sqlite_container, "res", "researcher")
    with (
        running_app(sqlite_container) as url,
        httpx.Client(base_url=url, headers=admin_headers(sqlite_container)) as client,
    ):
        listing = client.get("/api/jobs", params={"state": "dead"}).json()
        assert [j["id"] for j in listing["jobs"]] == [dead]
        assert listing["jobs"][0]["last_error"] == "peer refused: 0xA700"
        assert listing["counts"]["dead"] == 1 and listing["counts"]["queued"] == 1
        assert client.post(f"/api/jobs/{dead}/retry").json()["state"] == "queued"
        again = client.post(f"/api/jobs/{dead}/retry")
        assert again.status_code == 409 and "only dead or cancelled" in again.json()["detail"]
        assert client.post(f"/api/jobs/{queued}/cancel").json()["state"] == "cancelled"
        assert client.post("/api/jobs/999999/cancel").status_code == 404
        assert client.post("/api/jobs/abc/cancel").status_code == 422
        assert client.get("/api/jobs", params={"state": "zombie"}).status_code == 422
        assert client.get("/api/jobs", params={"limit": 10**6}).status_code == 422
        page = client.get("/admin/jobs")
        assert page.status_code == 200 and "t.admin" in page.text
        assert 'href="/admin/jobs"' in client.get("/admin/health").text
        denied = httpx.get(f"{url}/api/jobs", headers=bearer(researcher))
        assert denied.status_code == 403
        assert httpx.post(f"{url}/api/jobs/{dead}/cancel").status_code == 401


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vesalius", "jobs", *args],
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_vesalius_jobs_list_retry_cancel(tmp_path: Path, make_settings: Any) -> None:
    settings: Settings = make_settings(data_dir=tmp_path / "data")
    container = build(settings, migrate=True)
    try:
        dead = _dead_job(container, "the peer went away")
    finally:
        container.close()
    env = {"VESALIUS_DATA_DIR": str(tmp_path / "data")}
    listing = _cli(["list"], env)
    assert listing.returncode == 0, listing.stderr
    assert "t.admin" in listing.stdout and "dead" in listing.stdout
    assert "the peer went away" in listing.stdout
    retried = _cli(["retry", str(dead)], env)
    assert retried.returncode == 0 and "queued again" in retried.stdout
    refused = _cli(["retry", str(dead)], env)
    assert refused.returncode == 1 and "only dead or cancelled" in refused.stderr
    cancelled = _cli(["cancel", str(dead)], env)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    missing = _cli(["cancel", "424242"], env)
    assert missing.returncode == 1 and "there is no job 424242" in missing.stderr
    bad = _cli(["list", "--state", "zombie"], env)
    assert bad.returncode == 1 and "unknown state" in bad.stderr
    assert "retry" in _cli(["--help"], env).stdout
