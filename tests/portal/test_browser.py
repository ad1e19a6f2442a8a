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
    assert "Müller José" in row.inner_text()
    row.locator("a").first.click()
    page.wait_for_selector("section.study")
    page.wait_for_function(
        "[...document.querySelectorAll('ul.series img')].every(i => i.complete && i.naturalWidth > 0)"
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
