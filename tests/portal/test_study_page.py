"""The study page's stack viewer (Cornerstone3D) in headless Chromium against the real server.

It paints the series' middle image, scrolls, changes window/level, zooms, pans and measures a
length; OHIF is one click away. The bundle is built by scripts/fetch-portal-assets. Speed is
measured in benchmarks/worklist_bench.py, never here.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import pytest

from authhelp import PASSWORD
from dicomweb.conftest import RunningWeb, serve
from portal.ctseries import ct_series
from portal.test_browser import ARGS, ARTIFACTS, CHROMIUM, login, spread
from vesalius.container import Container
from vesalius.web.portal.routes import VENDOR

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="install Debian's chromium"),
    pytest.mark.skipif(
        not (VENDOR / "stack-viewer.js").exists(),
        reason="build the stack viewer: scripts/fetch-portal-assets",
    ),
]


@pytest.fixture
def web(sqlite_container: Container) -> Iterator[RunningWeb]:
    for data in ct_series(20, size=128):
        sqlite_container.archive.store(data)
    sqlite_container.auth.create_user("rad", PASSWORD, "radiologist")
    yield from serve(sqlite_container)


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()


def test_stack_viewer_scroll_window_zoom_pan_measure(web: RunningWeb, browser: Any) -> None:
    base = re.sub(r"//[^@/]*@", "//", web.url)
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, base)
    page.goto(f"{base}/patients/CT0001")
    page.click("a.open-study")
    page.wait_for_url(re.compile(r".*/studies/[0-9.]+$"))
    page.wait_for_selector("#stack-viewer[data-first-image]", state="attached", timeout=60_000)
    # the server's rendering of the same image was shown first, and gave way to the viewer
    assert page.get_attribute("#stack-viewer", "data-first-paint")
    assert page.locator("#stack-preview").is_hidden()
    preview_sop = page.get_attribute("#stack-viewer", "data-initial-instance")
    assert preview_sop and page.get_attribute("#stack-preview", "src").endswith(
        f"/instances/{preview_sop}/rendered"
    )
    viewport = page.locator("#stack-viewport")
    canvas = page.locator("#stack-viewport canvas").first
    shot = canvas.screenshot()
    assert spread(shot) > 50, "the stack viewer painted nothing"
    info = page.locator("#stack-info")
    assert re.fullmatch(r"Image 11 / 20 · W 400 L 40", info.inner_text()), info.inner_text()
    page.wait_for_function(  # predicates as functions: the pages' CSP refuses eval
        "() => [...document.querySelectorAll('.series-list img')]"
        ".every(i => i.complete && i.naturalWidth)"
    )
    page.wait_for_selector("#stack-viewer[data-tools=ready]", state="attached")
    ohif = page.locator("#open-ohif")
    study = page.get_attribute("#stack-viewer", "data-study")
    assert ohif.get_attribute("href") == f"/viewer/viewer?StudyInstanceUIDs={study}"
    (ARTIFACTS / "study-stack-viewer.png").write_bytes(page.screenshot())

    box = viewport.bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    def changed(before: bytes, action: Any) -> bytes:
        """Do *action* until the canvas shows something else (a render signal, polled)."""
        for _ in range(50):
            action()
            page.wait_for_timeout(100)
            after = canvas.screenshot()
            if after != before:
                return after
        raise AssertionError("the image did not change")

    # scroll: the wheel moves through the series
    page.mouse.move(cx, cy)
    shot = changed(shot, lambda: page.mouse.wheel(0, 120))
    assert not info.inner_text().startswith("Image 11 /")
    # the arrow keys too
    viewport.focus()
    now = info.inner_text()
    page.keyboard.press("ArrowUp")
    page.wait_for_function(f"() => document.querySelector('#stack-info')?.textContent !== {now!r}")

    def drag(dx: float, dy: float) -> None:
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx + dx, cy + dy, steps=5)
        page.mouse.up()

    # window/level: the primary button by default
    shot = changed(shot, lambda: drag(60, 40))
    assert " · W 400 L 40" not in info.inner_text()
    for tool in ("zoom", "pan"):
        page.click(f"[data-tool={tool}]")
        assert page.get_attribute(f"[data-tool={tool}]", "aria-pressed") == "true"
        shot = changed(shot, lambda: drag(0, -60))

    # a length measurement: two clicks, drawn with its length in mm
    page.click("#stack-reset")
    page.click("[data-tool=length]")
    page.mouse.click(cx - 80, cy)
    page.mouse.click(cx + 80, cy)
    label = page.locator("#stack-viewport svg text").first
    label.wait_for()
    text = page.evaluate(
        "[...document.querySelectorAll('#stack-viewport svg text')].map(t => t.textContent).join(' ')"
    )
    assert re.search(r"\d+(\.\d+)? mm", text), text
    (ARTIFACTS / "study-stack-length.png").write_bytes(page.screenshot())

    # OHIF is one click away
    ohif.click()
    page.wait_for_url(re.compile(r".*/viewer/viewer\?StudyInstanceUIDs="))
    assert errors == []


def test_compressed_series_and_a_broken_image(sqlite_container: Container, browser: Any) -> None:
    """JPEG-LS frames are decoded in the browser (the WebAssembly codec served by the server);
    an instance whose compressed pixels are garbage is reported, and the others are shown."""
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    from vesalius.dicom.transcode import encode_dataset

    for n, data in enumerate(ct_series(3, size=128, patient_id="JLS1")):
        ds = encode_dataset(dcmread(io.BytesIO(data)), JPEGLSLossless)
        if n == 1:  # the middle one, shown first
            ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG-LS stream " * 8])
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        sqlite_container.archive.store(buffer.getvalue())
    sqlite_container.auth.create_user("rad", PASSWORD, "radiologist")
    for web in serve(sqlite_container):
        base = re.sub(r"//[^@/]*@", "//", web.url)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
        login(page, base)
        page.goto(f"{base}/patients/JLS1")
        page.click("a.open-study")
        status = page.locator("#stack-status")
        page.wait_for_function(
            # Null-safe: the predicate may run on the patient page, before the study page loads.
            "() => document.querySelector('#stack-status')?.textContent"
            "?.includes('could not be shown')"
        )
        assert page.locator("#stack-preview").is_hidden()  # no broken-image icon either
        page.wait_for_selector("#stack-viewer[data-tools=ready]", state="attached")
        box = page.locator("#stack-viewport").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        for _ in range(50):  # scroll on until a good image is drawn
            page.mouse.wheel(0, 120)
            page.wait_for_timeout(100)
            if page.get_attribute("#stack-viewer", "data-first-image"):
                break
        page.wait_for_selector("#stack-viewer[data-first-image]", state="attached")
        assert spread(page.locator("#stack-viewport canvas").first.screenshot()) > 50
        assert status.inner_text() == ""
        (ARTIFACTS / "study-jpeg-ls.png").write_bytes(page.screenshot())
        assert errors == []
