"""The subject timeline in headless Chromium against the real server.

A baseline diagnosis reads as a table with units, repeated measurements are charted by
Chart.js (installed by scripts/fetch-portal-assets, served by the server), a heart model can be
downloaded and its XML read, and events are edited and deleted by those allowed, audited.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from authhelp import PASSWORD, bearer, make_user
from dicomweb.conftest import RunningWeb, serve
from portal.test_browser import ARGS, ARTIFACTS, CHROMIUM, login, spread
from records.records_helpers import model_xml, model_zip
from vesalius.container import Container
from vesalius.index.people import AuditFilters
from vesalius.web.portal.routes import VENDOR

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="install Debian's chromium"),
    pytest.mark.skipif(
        not (VENDOR / "chart.umd.min.js").exists(),
        reason="install the portal's browser libraries: scripts/fetch-portal-assets",
    ),
]
SUBJECT = "CAP 7%#"
MODEL = model_zip()  # once: a zip made later differs in its timestamps


@pytest.fixture
def web(sqlite_container: Container) -> Iterator[RunningWeb]:
    auth = sqlite_container.auth
    auth.create_user("res", PASSWORD, "researcher")
    auth.create_user("boss", PASSWORD, "admin")
    yield from serve(sqlite_container)


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()


def fill_records(web: RunningWeb) -> dict[str, int]:
    base = web.url.split("@")[-1]
    headers = bearer(make_user(web.container, "loader"))
    with httpx.Client(base_url=f"http://{base}", headers=headers, timeout=30) as api:
        assert (
            api.post("/api/subjects", json={"subject_id": SUBJECT, "sex": "F"}).status_code == 201
        )
        root = "/api/subjects/" + quote(SUBJECT, safe="")
        ids = {}
        for n, (date, weight, lvef) in enumerate(
            [("2023-01-10", 71.5, 55), ("2023-07-02", 69.0, 58), ("2024-01-15", 68.2, 61)]
        ):
            diagnosis = {
                "height_cm": 168,
                "weight_kg": weight,
                "systolic_bp_mmhg": 128 - n * 4,
                "diagnosis": "Dilated cardiomyopathy",
                "extra": {"lvef_pct": lvef, "nyha_class": "II"},
            }
            made = api.post(
                root + "/events",
                json={
                    "kind": "baseline_diagnosis",
                    "date": date,
                    "session_number": n + 1,
                    "diagnosis": diagnosis,
                },
            )
            assert made.status_code == 201, made.text
            ids[f"diagnosis{n}"] = made.json()["id"]
        note = api.post(
            root + "/events",
            json={"kind": "clinical_note", "date": "2024-02-01", "note": {"text": "First words"}},
        )
        ids["note"] = note.json()["id"]
        model = api.post(
            root + "/models",
            files={
                "data": ("lv-model.zip", MODEL, "application/zip"),
                "metadata": ("lv-model.xml", model_xml(name="LV fit"), "application/xml"),
            },
            data={"date": "2024-02-02"},
        )
        assert model.status_code == 201, model.text
        ids["model"] = model.json()["id"]
    return ids


def test_subject_timeline_table_chart_model_and_edits(web: RunningWeb, browser: Any) -> None:
    ids = fill_records(web)
    base = re.sub(r"//[^@/]*@", "//", web.url)
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, base, "res")
    page.goto(f"{base}/subjects/" + quote(SUBJECT, safe=""))
    page.wait_for_selector("body[data-timeline-loaded]")
    assert page.inner_text("#subject-id") == SUBJECT

    # the diagnosis: a labelled table with units, not JSON
    first = page.locator(f"li[data-event='{ids['diagnosis0']}']")
    assert "{" not in first.inner_text()
    row = lambda key: first.locator(f"tr[data-measure={key}] td").all_inner_texts()  # noqa: E731
    assert first.locator("tr[data-measure=height_cm] th").inner_text() == "Height"
    assert row("height_cm") == ["168", "cm"]
    assert row("systolic_bp_mmhg") == ["128", "mmHg"]
    assert first.locator("tr[data-measure=lvef_pct] th").inner_text() == "LVEF"
    assert row("lvef_pct") == ["55", "%"]
    assert row("nyha_class") == ["II", ""]
    assert "Dilated cardiomyopathy" in first.inner_text()

    # the chart of the repeated measurements, drawn by Chart.js
    page.wait_for_selector("#measures-chart[data-drawn]")
    assert int(page.get_attribute("#measures-chart", "data-drawn") or 0) == 4  # h, w, sys, lvef
    assert page.evaluate("typeof Chart") == "function"
    assert spread(page.locator("#measures-canvas").screenshot()) > 50

    # the heart model: data downloadable byte for byte, XML readable in the page
    model = page.locator(f"li[data-event='{ids['model']}']")
    with page.expect_download() as download:
        model.locator("a.model-data").click()
    assert open(download.value.path(), "rb").read() == MODEL  # noqa: SIM115
    model.locator("details.model-xml summary").click()
    page.wait_for_function(  # a function, not an expression: the page's CSP refuses eval
        "() => document.querySelector('pre.xml').textContent.includes('<HeartModel')"
    )
    assert 'name="LV fit"' in model.locator("pre.xml").inner_text()
    (ARTIFACTS / "subject-timeline.png").write_bytes(page.screenshot(full_page=True))

    # a researcher edits a note (audited as a change) but may not delete
    note = page.locator(f"li[data-event='{ids['note']}']")
    assert note.locator("button.delete-event").count() == 0
    note.locator("button.edit").click()
    note.locator("textarea[name=note]").fill("Second words")
    note.locator("input[name=title]").fill("Clinic visit")
    note.locator("form.event-edit button[type=submit]").click()
    page.wait_for_selector(f"li[data-event='{ids['note']}'] .note-text:text('Second words')")
    assert "Clinic visit" in page.locator(f"li[data-event='{ids['note']}']").inner_text()
    changes = web.container.audit.search(AuditFilters(actor="res", action="change"))
    assert any(f"/events/{ids['note']}" in (c["object"] or "") for c in changes)

    # an administrator deletes it, after confirming; audited
    page.goto(f"{base}/login")
    page.context.clear_cookies()
    login(page, base, "boss")
    page.goto(f"{base}/subjects/" + quote(SUBJECT, safe=""))
    page.wait_for_selector("body[data-timeline-loaded]")
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator(f"li[data-event='{ids['note']}'] button.delete-event").click()
    page.wait_for_selector(f"li[data-event='{ids['note']}']", state="detached")
    deletions = web.container.audit.search(AuditFilters(actor="boss", action="delete"))
    assert any(f"/events/{ids['note']}" in (d["object"] or "") for d in deletions)
    assert errors == []
