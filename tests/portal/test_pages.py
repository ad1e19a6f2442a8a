"""Portal pages over HTTP against the real server: error pages, awkward IDs, the audit filter.

Browsers get a styled page for every error of a page route (403 naming the permission, 404,
500); API and DICOMweb clients keep JSON. Patients whose ID is empty or holds ``/ % #`` or
spaces open like any other, and so do such subjects.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import text

from authhelp import bearer, make_user
from dicomgen import make_file
from dicomweb.conftest import RunningWeb, serve
from vesalius.container import Container

HTML = {"Accept": "text/html,application/xhtml+xml"}
AWKWARD = ["", "A 1/%#", "50%_off", "x#y?z", "a/b/c", "two  spaces"]


@pytest.fixture
def web(sqlite_container: Container) -> Iterator[RunningWeb]:
    for n, patient_id in enumerate(AWKWARD):
        sqlite_container.archive.store(
            make_file(PatientID=patient_id, PatientName=f"Awkward^Number{n}", Modality="MR")
        )
    yield from serve(sqlite_container)


def client(web: RunningWeb, role: str = "admin") -> httpx.Client:
    token = make_user(web.container, f"u-{role}", role)
    base = web.url.split("@")[-1]
    return httpx.Client(base_url=f"http://{base}", headers=bearer(token), timeout=30)


def is_page(response: httpx.Response) -> bool:
    return response.headers["content-type"].startswith("text/html") and (
        '<link rel="stylesheet" href="/static/portal.css">' in response.text
    )


def test_page_errors_are_styled_pages_and_api_errors_stay_json(web: RunningWeb) -> None:
    with client(web, "radiologist") as rad, client(web) as admin:
        refused = rad.get("/admin/users", headers=HTML)
        assert refused.status_code == 403 and is_page(refused)
        assert "the permission users.manage" in refused.text
        assert "Ask an administrator" in refused.text
        api_refused = rad.get("/api/users")
        assert api_refused.status_code == 403
        assert "users.manage" in api_refused.json()["detail"]

        missing = admin.get("/patients/NOBODY", headers=HTML)
        assert missing.status_code == 404 and is_page(missing)
        assert "NOBODY" in missing.text
        no_study = admin.get("/studies/1.2.3.4", headers=HTML)
        assert no_study.status_code == 404 and is_page(no_study)
        assert "1.2.3.4" in no_study.text
        nowhere = admin.get("/no/such/page", headers=HTML)
        assert nowhere.status_code == 404 and is_page(nowhere)
        assert "/no/such/page" in nowhere.text
        assert admin.get("/no/such/page").json() == {"detail": "Not Found"}  # not a browser
        assert admin.get("/api/patients/NOBODY/studies").json()["detail"] == "no patient 'NOBODY'"
        assert (
            admin.get("/dicom-web/nothing", headers=HTML)
            .headers["content-type"]
            .startswith("application/json")
        )
        # a markup-looking ID is shown as text, not markup
        hostile = admin.get("/patients/" + quote("<script>x</script>", safe=""), headers=HTML)
        assert hostile.status_code == 404 and "<script>x" not in hostile.text

        # a failing page: the index loses its patients table under a running server
        with web.container.db.write() as session:
            session.execute(text("ALTER TABLE patients RENAME TO patients_away"))
        try:
            broken = admin.get("/patients/" + quote("A 1/%#", safe=""), headers=HTML)
            assert broken.status_code == 500 and is_page(broken)
            assert "could not show this page" in broken.text
            assert "patients_away" not in broken.text and "Traceback" not in broken.text
            api_broken = admin.get("/api/worklist")
            assert api_broken.status_code == 500
            assert api_broken.json()["detail"].startswith("internal server error")
        finally:
            with web.container.db.write() as session:
                session.execute(text("ALTER TABLE patients_away RENAME TO patients"))
        assert admin.get("/api/worklist").status_code == 200  # and it keeps serving


def test_static_files_cache_rules(web: RunningWeb) -> None:
    """Versioned and hashed files are cached for good; the rest is revalidated (ETag)."""
    with client(web) as admin:
        plain = admin.get("/static/portal.css")
        assert plain.headers["cache-control"] == "no-cache" and plain.headers["etag"]
        again = admin.get("/static/portal.css", headers={"If-None-Match": plain.headers["etag"]})
        assert again.status_code == 304
        versioned = admin.get("/static/portal.css?v=abc")
        assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert admin.get("/static/../pyproject.toml").status_code == 404


def test_patients_with_empty_or_awkward_ids_open(web: RunningWeb) -> None:
    with client(web) as admin:
        listed = admin.get("/api/worklist", params={"sort": "name"}).json()["patients"]
        assert sorted(p["patient_id"] for p in listed) == sorted(AWKWARD)
        for n, patient_id in enumerate(AWKWARD):
            part = quote(patient_id, safe="")
            shown = admin.get(f"/patients/{part}", headers=HTML)
            assert shown.status_code == 200, (patient_id, shown.text[:300])
            assert f"Awkward, Number{n}" in shown.text
            studies = admin.get(f"/api/patients/{part}/studies")
            assert studies.status_code == 200, patient_id
            assert studies.json()["patient_id"] == patient_id
            assert len(studies.json()["studies"]) == 1

        # a study page, and a hostile series parameter falls back to the first series
        study = studies.json()["studies"][0]["study_instance_uid"]
        series = studies.json()["studies"][0]["series"][0]["series_instance_uid"]
        shown = admin.get(f"/studies/{study}", params={"series": "<b>x"}, headers=HTML)
        assert shown.status_code == 200 and "<b>x" not in shown.text
        assert f'data-initial-series="{series}"' in shown.text
        assert f'href="/patients/{part}"' in shown.text  # back to the awkward patient

        # the audit trail finds the views of one patient, and only those
        about = admin.get("/api/audit", params={"patient": "A 1/%#"}).json()
        assert {e["object"] for e in about} == {
            "GET /patients/A 1/%#",
            "GET /api/patients/A 1/%#/studies",
        }
        empty = admin.get("/api/audit", params={"patient": ""}).json()
        assert {e["object"] for e in empty} == {"GET /patients/", "GET /api/patients//studies"}
        assert admin.get("/api/audit", params={"patient": "50%"}).json() == []  # no wildcard


def test_subjects_with_awkward_ids_open(web: RunningWeb) -> None:
    with client(web) as admin:
        for subject_id in ["S 1", "S%2", "S#3", "S?4&x=1"]:
            created = admin.post("/api/subjects", json={"subject_id": subject_id})
            assert created.status_code == 201, created.text
            part = quote(subject_id, safe="")
            page = admin.get(f"/subjects/{part}", headers=HTML)
            assert page.status_code == 200 and is_page(page)
            assert admin.get(f"/api/subjects/{part}").json()["subject_id"] == subject_id
            assert admin.get(f"/api/subjects/{part}/timeline").status_code == 200
        missing = admin.get("/subjects/" + quote("no one", safe=""), headers=HTML)
        assert missing.status_code == 404 and is_page(missing)
