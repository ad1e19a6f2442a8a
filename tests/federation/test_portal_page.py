"""The central index's portal page in headless Chromium: search across sites, each result
naming its site."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from authhelp import PASSWORD, bearer
from httpserver import running_app
from vesalius.container import Container, build

CHROMIUM = Path("/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="install Debian's chromium (make install-test)"
)


@pytest.fixture
def central(make_settings: Any) -> Iterator[tuple[str, Container]]:
    container = build(make_settings(central_index=True), migrate=True)
    try:
        container.auth.create_user("rad", PASSWORD, "radiologist")
        with running_app(container) as url:
            for code, name in (
                ("H1", "Müller^José"),
                ("H2", "Muller^Josefina"),
                ("H3", "Doe^Jane"),
            ):
                key = container.central.add_site(code)
                record = {
                    "study_iuid": f"1.2.{len(code)}.{code[-1]}",
                    "patient_id": f"ID-{code}",
                    "patient_name": name,
                    "study_datetime": "2024-03-04 05:06:07",
                    "study_modality": "MR",
                    "study_series": 2,
                    "study_instances": 40,
                }
                answer = httpx.post(
                    f"{url}/api/federation/studies", json=record, headers=bearer(key)
                )
                assert answer.status_code == 200
            yield url, container
    finally:
        container.close()


def test_search_across_sites_names_each_site(central: tuple[str, Container]) -> None:
    url, _container = central
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/login")
            page.fill("input[name=username]", "rad")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r".*/worklist$"))
            page.click("nav >> text=Sites")
            page.wait_for_url(re.compile(r".*/federation$"))
            rows = page.locator("#federation tbody tr")
            rows.nth(2).wait_for()
            assert rows.count() == 3
            page.fill("input[name=patient_name]", "muller^jos*")
            page.click("#federation-filters button[type=submit]")
            page.locator("#federation-total", has_text="of 2 studies").wait_for()
            sites = sorted(page.locator("#federation tbody td.site").all_inner_texts())
            assert sites == ["H1", "H2"]
            assert "Müller, José" in page.locator("#federation tbody").inner_text()
            page.fill("input[name=patient_name]", "")
            page.fill("input[name=site]", "H3")
            page.click("#federation-filters button[type=submit]")
            page.locator("#federation-total", has_text="of 1 studies").wait_for()
            assert page.locator("#federation tbody td.site").all_inner_texts() == ["H3"]
            page.fill("input[name=site]", "")
            page.fill("input[name=from]", "2025-01-01")
            page.click("#federation-filters button[type=submit]")
            page.locator("#federation-total", has_text="No study found").wait_for()
            assert errors == []
        finally:
            browser.close()
