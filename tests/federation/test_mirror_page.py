"""A remote PACS's studies in the portal (headless Chromium): the worklist's source column and
filter, and a remote study retrieved from the patient page, its progress shown, then opened."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authhelp import PASSWORD
from dicomgen import make_dataset, to_bytes
from federation.orthanc import Orthanc, running_orthanc
from httpserver import running_app
from vesalius.config import RemotePacs
from vesalius.container import Container, build

CHROMIUM = Path("/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="install Debian's chromium (make install-test)"
)


@pytest.fixture
def site(tmp_path: Path, make_settings: Any) -> Iterator[tuple[str, Container, Orthanc]]:
    from vesalius import jobs
    from vesalius.federation import jobs as federation_jobs
    from vesalius.jobs.runner import JobRunner

    with running_orthanc(tmp_path) as orthanc:
        for number in range(2):
            orthanc.store(
                to_bytes(
                    make_dataset(
                        PatientID="REM1",
                        PatientName="Remote^Rita",
                        StudyInstanceUID=f"1.2.826.0.1.3680043.10.543.{number + 1}",
                        SeriesInstanceUID=f"1.2.826.0.1.3680043.10.543.1.{number + 1}",
                        Modality="MR",
                    )
                )
            )
        pacs = RemotePacs(name="orthanc", dicomweb_url=orthanc.dicomweb)
        container = build(make_settings(remote_pacs=[pacs]), migrate=True)
        runner = None
        try:
            container.auth.create_user("rad", PASSWORD, "radiologist")
            container.archive.store(
                to_bytes(make_dataset(PatientID="LOC1", PatientName="Local^Lena"))
            )
            assert container.mirror is not None
            container.mirror.sync("orthanc")
            federation_jobs.install_mirror(container)
            runner = JobRunner(container, poll_s=0.2).start()
            with running_app(container) as url:
                yield url, container, orthanc
        finally:
            if runner is not None:
                runner.stop()
            for name in list(jobs.schedules()):
                if name.startswith("mirror.sync"):
                    jobs.registry._schedules.pop(name, None)
            container.close()


def test_remote_study_listed_retrieved_and_opened(site: tuple[str, Container, Orthanc]) -> None:
    url, _container, _orthanc = site
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
            rows = page.locator("#worklist tbody tr")
            rows.nth(1).wait_for()
            sources = dict(
                zip(
                    page.locator("#worklist tbody tr").evaluate_all(
                        "rows => rows.map(r => r.dataset.patient)"
                    ),
                    page.locator("#worklist tbody td.source").all_inner_texts(),
                    strict=True,
                )
            )
            assert sources == {"REM1": "orthanc", "LOC1": "this archive"}
            page.select_option("#source", "orthanc")
            page.locator("#worklist-status", has_text="1 patient").wait_for()
            assert page.locator("#worklist tbody tr").count() == 1
            page.click("#worklist tbody tr[data-patient=REM1] a")
            page.wait_for_url(re.compile(r".*/patients/REM1$"))
            # a remote study opened by its URL leads to its patient's page, to retrieve it
            page.goto(f"{url}/studies/1.2.826.0.1.3680043.10.543.2")
            page.wait_for_url(re.compile(r".*/patients/REM1$"))
            cards = page.locator("section.study.remote")
            assert cards.count() == 2
            assert "On the remote PACS orthanc" in cards.first.inner_text()
            card = page.locator('section.study[data-study="1.2.826.0.1.3680043.10.543.1"]')
            card.locator("button.retrieve").click()
            page.wait_for_url(re.compile(r".*/studies/1\.2\.826\.0\.1\.3680043\.10\.543\.1$"))
            page.go_back()
            page.wait_for_url(re.compile(r".*/patients/REM1$"))
            assert page.locator("section.study.remote").count() == 1
            assert page.locator("section.study:not(.remote)").count() == 1
            assert errors == []
        finally:
            browser.close()
