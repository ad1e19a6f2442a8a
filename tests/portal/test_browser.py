"""The portal in headless Chromium against the real server: login, worklist, study, viewer.

Needs Debian's ``chromium`` (``/usr/bin/chromium``), the ``playwright`` package and the viewer
files (``scripts/fetch-viewer``); ``make test`` installs all three. Every wait is for a render
signal (an element, a request, non-blank pixels), never a fixed delay. The screenshots are kept
in ``test-artifacts/``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authhelp import PASSWORD
from dicomweb.conftest import RunningWeb, serve
from portal.ctseries import ct_series
from vesalius.container import Container
from vesalius.index.people import AuditFilters
from vesalius.web.viewer import DIST

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="install Debian's chromium (make install-test)"
    ),
    pytest.mark.skipif(
        not (DIST / "index.html").exists(), reason="fetch the viewer: scripts/fetch-viewer"
    ),
]


@pytest.fixture
def web(sqlite_container: Container) -> Iterator[RunningWeb]:
    for data in ct_series(12, size=128):
        sqlite_container.archive.store(data)
    sqlite_container.auth.create_user("rad", PASSWORD, "radiologist")
    yield from serve(sqlite_container)


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()


def spread(png: bytes) -> int:
    """How many grey levels a screenshot shows (1 for a blank or uniform image)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    low, high = image.getextrema()
    return int(high - low)


def test_login_search_view_scroll_logout(web: RunningWeb, browser: Any) -> None:
    base = re.sub(r"//[^@/]*@", "//", web.url)
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    # anonymous: sent to the login page; a wrong password is refused and counted
    page.goto(f"{base}/worklist")
    assert "/login" in page.url
    page.fill("input[name=username]", "rad")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    page.wait_for_selector("#login-error")
    failures = web.container.audit.search(AuditFilters(action="login_failed", actor="rad"))
    assert len(failures) == 1
    errors.clear()  # the 401 of the refused login is logged by Chromium as a console error

    page.fill("input[name=username]", "rad")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/worklist$"))

    # search as you type, accents and case ignored
    page.fill("#q", "muller jo")
    # A locator, not an element handle: the table may be redrawn by a later keystroke's answer,
    # and a locator finds the row again where a handle would point at a detached element.
    row = page.locator("#worklist tr[data-patient=CT0001]")
    row.wait_for()
    assert "Müller, José" in row.inner_text()
    row.locator("a").first.click()
    page.wait_for_selector("section.study")
    # Predicates as functions: Playwright evaluates a bare expression with eval, which the
    # pages' Content-Security-Policy refuses.
    page.wait_for_function(
        "() => [...document.querySelectorAll('ul.series img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )

    # the viewer opens on the study and paints non-blank pixels
    page.click("a.open-viewer")
    canvas = page.locator(".cornerstone-canvas").first  # re-found if OHIF redraws the viewport
    canvas.wait_for(timeout=60_000)
    viewport = page.locator("[data-viewport-uid], .viewport-element").first
    page.wait_for_function(
        """() => { const c = document.querySelector('.cornerstone-canvas');
                   return c && c.width > 0 && c.height > 0; }""",
        timeout=60_000,
    )
    first = b""
    for _ in range(300):  # until the image is drawn (a render signal, polled)
        first = canvas.screenshot()
        if spread(first) > 50:
            break
        page.wait_for_timeout(100)
    assert spread(first) > 50, "the viewer canvas stayed blank"
    (ARTIFACTS / "viewer-first-image.png").write_bytes(page.screenshot())

    # scroll to another image: the canvas changes
    box = viewport.bounding_box() or canvas.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    changed = first
    for _ in range(100):
        page.mouse.wheel(0, 120)
        changed = canvas.screenshot()
        if changed != first and spread(changed) > 50:
            break
        page.wait_for_timeout(100)
    assert changed != first, "scrolling did not change the image"
    (ARTIFACTS / "viewer-scrolled.png").write_bytes(page.screenshot())

    # log out: pages and the API refuse afterwards
    page.goto(f"{base}/worklist")
    page.click("#logout")
    page.wait_for_url(re.compile(r".*/login$"))
    page.goto(f"{base}/worklist")
    assert "/login" in page.url
    status = page.evaluate("fetch('/api/worklist').then(r => r.status)")
    assert status == 401
    errors = [e for e in errors if "401" not in e]  # the deliberate refused fetch above
    assert errors == []
    actions = {e["action"] for e in web.container.audit.search(AuditFilters(actor="rad"))}
    assert {"login", "logout", "search", "view", "retrieve"} <= actions


def login(page: Any, base: str, username: str = "rad") -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/worklist$"))


def test_ohif_study_list_search_and_open(web: RunningWeb, browser: Any) -> None:
    """OHIF's own study list at /viewer/: studies listed, a search narrows it, a study opens.

    A study with no modality and no description is there too: its QIDO answer once carried
    a bare ``{"vr": "CS"}`` on which OHIF's list failed ("Data Source Connection Error").
    """
    from dicomgen import make_file

    web.archive.store(
        make_file(PatientID="NOMOD", PatientName="Bare^Study", Modality="", StudyDescription="")
    )
    base = re.sub(r"//[^@/]*@", "//", web.url)
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, base)

    page.goto(f"{base}/viewer/")
    assert page.title() == "Vesalius viewer"
    studies = page.locator("tbody tr", has=page.locator("td"))
    page.get_by_text("Müller, José").wait_for(timeout=60_000)
    page.get_by_text("Bare, Study").wait_for()
    # branded, with the way back to the portal; no first-run tour
    back = page.locator("#vesalius-portal")
    assert back.inner_text().strip() == "Vesalius"
    assert back.get_attribute("href") == f"{base}/worklist"
    (ARTIFACTS / "ohif-study-list.png").write_bytes(page.screenshot())

    # a search narrows the list to the one patient
    page.locator("table input").first.fill("Bare")
    page.wait_for_function(
        """() => { const rows = [...document.querySelectorAll('tbody tr')]
                     .filter(r => r.innerText.includes(', '));
                   return rows.length === 1 && rows[0].innerText.includes('Bare, Study'); }"""
    )
    page.locator("table input").first.fill("")
    page.get_by_text("Müller, José").wait_for()
    assert studies.filter(has_text=", ").count() == 2

    # opening a study paints an image
    page.get_by_text("Müller, José").click()
    page.get_by_role("button", name="Basic Viewer").click()
    canvas = page.locator(".cornerstone-canvas").first
    canvas.wait_for(timeout=60_000)
    shot = b""
    for _ in range(300):  # until the image is drawn (a render signal, polled)
        shot = canvas.screenshot()
        if spread(shot) > 50:
            break
        page.wait_for_timeout(100)
    assert spread(shot) > 50, "the viewer canvas stayed blank"
    assert page.locator(".shepherd-element").count() == 0  # the tour stays off
    (ARTIFACTS / "ohif-study-opened.png").write_bytes(page.screenshot())
    page.locator("#vesalius-portal").click()
    page.wait_for_url(re.compile(r".*/worklist$"))
    assert errors == []


def test_worklist_awkward_patients_and_audit_pages(web: RunningWeb, browser: Any) -> None:
    """The worklist's last-study columns, one format for dates and names, patients with an
    empty or awkward ID opened by a click, and the audit page's filters."""
    from dicomgen import make_file

    store = web.archive.store
    store(make_file(PatientID="", PatientName="Empty^Id", StudyDate="20230105", Modality="MR"))
    store(make_file(PatientID="A 1/%#", PatientName="Odd^Id^Q", StudyDescription="Knee MR"))
    web.container.auth.create_user("boss", PASSWORD, "admin")
    base = re.sub(r"//[^@/]*@", "//", web.url)
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, base, "boss")

    row = page.locator("#worklist tr[data-patient=CT0001]")
    row.wait_for()
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == "Müller, José"
    assert cells[5:] == ["2024-01-02", "Chest CT", "CT", "this archive"]  # last: the source
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", cells[2])
    (ARTIFACTS / "worklist.png").write_bytes(page.screenshot(full_page=True))

    for name, shown_id in [("Empty, Id", "(empty)"), ("Odd, Id Q", "A 1/%#")]:
        page.goto(f"{base}/worklist")
        page.get_by_role("link", name=name).click()
        page.wait_for_selector("section.study")
        assert page.inner_text("#patient-name") == name
        assert page.inner_text("#patient-id") == shown_id
    (ARTIFACTS / "patient-awkward-id.png").write_bytes(page.screenshot(full_page=True))

    page.goto(f"{base}/admin/audit")
    page.wait_for_selector("#audit tbody tr")
    page.fill("input[name=patient]", "A 1/%#")
    page.select_option("select[name=action]", "view")
    page.click("#audit-filters button[type=submit]")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#audit tbody tr')].length > 0 && "
        "[...document.querySelectorAll('#audit tbody tr')].every(r => "
        "r.children[4].textContent.includes('A 1/%#'))"
    )
    first = page.locator("#audit tbody tr").first.locator("td")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", first.nth(0).inner_text())
    assert first.nth(5).inner_text() == "ok"
    agent = first.nth(7)
    assert agent.inner_text().startswith("Headless Chrome ")
    assert agent.get_attribute("title", timeout=1000).startswith("Mozilla/5.0")
    # the table fits the window: no horizontal scrolling
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    (ARTIFACTS / "audit.png").write_bytes(page.screenshot(full_page=True))

    page.goto(f"{base}/no/such/page")
    assert page.inner_text("#error .status-code") == "404"
    errors = [e for e in errors if "404" not in e]  # the deliberate missing page
    assert errors == []
