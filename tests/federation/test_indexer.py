"""Sites pushing to a central index, all real Vesalius processes on loopback.

Each node has its own data folder; the central index runs on SQLite and on PostgreSQL. The
sites store studies with `vesalius import`, push with `vesalius indexer push` and delete over
the HTTP API; the central index is searched over HTTP like any client would.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from dicomgen import make_dataset, uid, write
from federation.nodes import Node

CENTRAL_BACKENDS = ["sqlite", "postgresql"]


def studies(folder: Path, count: int, patient: str = "P", **attributes: Any) -> list[str]:
    """Write *count* one-instance studies into *folder*; returns their study UIDs."""
    uids = []
    for number in range(count):
        ds = make_dataset(
            PatientID=f"{patient}{number:03d}",
            PatientName=f"{patient}ATIENT^NUMBER{number}",
            **attributes,
        )
        write(folder, ds)
        uids.append(ds.StudyInstanceUID)
    return uids


@pytest.fixture(params=CENTRAL_BACKENDS)
def central_db(request: pytest.FixtureRequest, server_databases: Any) -> str | None:
    return None if request.param == "sqlite" else server_databases.create(request.param)


@pytest.fixture
def central(tmp_path: Path, central_db: str | None) -> Iterator[Node]:
    node = Node(tmp_path, "central", central_db, VESALIUS_CENTRAL_INDEX="true")
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def sqlite_central(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path, "central", None, VESALIUS_CENTRAL_INDEX="true")
    node.start()
    try:
        yield node
    finally:
        node.stop()


def site(root: Path, central: Node, code: str) -> Node:
    key = central.run(["central", "site", "add", code]).stdout.strip()
    assert key.startswith("vsk_")
    return Node(
        root,
        code,
        VESALIUS_SITE_CODE=code,
        VESALIUS_INDEXER_KEY=key,
        VESALIUS_INDEXER_URL=f"{central.url}/api/federation/studies",
    )


def status(node: Node) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(node.run(["indexer", "status", "--json"]).stdout)
    return result


def found(central: Node, **params: Any) -> list[tuple[str, str, int]]:
    page = central.get("/api/federation/studies", limit=1000, **params)
    assert page["total"] == len(page["studies"])
    return sorted((s["site"], s["study_iuid"], s["study_instances"]) for s in page["studies"])


def test_two_sites_push_to_a_central_index(tmp_path: Path, central: Node) -> None:
    h1, h2 = site(tmp_path, central, "H1"), site(tmp_path, central, "H2")
    shared = make_dataset(PatientID="SHARED", PatientName="SHARED^PATIENT")
    write(tmp_path / "in1", shared)
    write(tmp_path / "in2", shared)  # the same study UID at both sites
    first = studies(tmp_path / "in1", 5, "A")
    second = studies(tmp_path / "in2", 3, "B")
    h1.run(["import", str(tmp_path / "in1")])
    h2.run(["import", str(tmp_path / "in2")])

    pushed = h1.run(["indexer", "push"])  # the first push of a site is the initial one
    assert "Pushed 6 study records" in pushed.stdout, pushed.stdout + pushed.stderr
    assert "pushed 6 records" in pushed.stderr  # a log line per batch
    h2.run(["indexer", "push", "--initial"])
    expected = sorted(
        [("H1", u, 1) for u in [*first, shared.StudyInstanceUID]]
        + [("H2", u, 1) for u in [*second, shared.StudyInstanceUID]]
    )
    assert found(central) == expected
    assert found(central, patient_id="SHARED") == [
        ("H1", shared.StudyInstanceUID, 1),
        ("H2", shared.StudyInstanceUID, 1),
    ]
    state = status(h1)
    assert state["initial_push_done"] and state["backlog_changes"] == 0
    assert state["watermark"] == state["latest_change"] > 0

    # nothing changed: nothing sent
    again = h1.run(["indexer", "push"])
    assert "Pushed 0 study records" in again.stdout

    # a new study and a new instance of an existing study: only those two are sent
    more = tmp_path / "more"
    new_study = studies(more, 1, "C")[0]
    write(
        more,
        make_dataset(
            PatientID="A000",
            PatientName="AATIENT^NUMBER0",
            StudyInstanceUID=first[0],
            SeriesInstanceUID=uid(),
        ),
    )
    h1.run(["import", str(more)])
    assert status(h1)["backlog_changes"] > 0
    incremental = h1.run(["indexer", "push"])
    assert "Pushed 2 study records" in incremental.stdout, incremental.stdout
    rows = dict(((s, u), n) for s, u, n in found(central, site="H1"))
    assert rows[("H1", first[0])] == 2 and ("H1", new_study) in rows
    assert len(rows) == 7


def test_deletion_revocation_and_central_down(tmp_path: Path, sqlite_central: Node) -> None:
    central = sqlite_central
    h1 = site(tmp_path, central, "H1")
    uids = studies(tmp_path / "in", 4)
    h1.run(["import", str(tmp_path / "in")])
    h1.run(["indexer", "push"])
    assert len(found(central)) == 4

    # a study deleted at the site disappears centrally
    h1.start()
    try:
        assert h1.delete(f"/api/studies/{uids[0]}").status_code in (200, 204)
    finally:
        h1.stop()
    deleted = h1.run(["indexer", "push"])
    assert "1 deleted" in deleted.stdout, deleted.stdout
    assert [u for _, u, _ in found(central)] == sorted(uids[1:])

    # the central index is down: the push fails, says why, and the watermark stays
    before = status(h1)["watermark"]
    port = urlsplit(central.url).port
    central.stop()
    # Hold the freed port (bound, not listening: connections are refused) so that another
    # test's server, started meanwhile, cannot take it and answer the push.
    hold = socket.socket()
    with contextlib.suppress(OSError):
        hold.bind(("127.0.0.1", port or 0))
    studies(tmp_path / "later", 2, "L")
    h1.run(["import", str(tmp_path / "later")])
    try:
        failed = h1.run(["indexer", "push", "--retries", "1"], check=False)
    finally:
        hold.close()
    assert failed.returncode == 1
    assert "cannot reach the central index" in failed.stderr
    assert "trying again" in failed.stderr  # retried with a wait first
    state = status(h1)
    assert state["watermark"] == before and state["backlog_changes"] > 0
    assert "cannot reach" in state["last_error"]

    # back up (on another port): the backlog goes through, nothing lost, nothing doubled
    central.start()
    url = f"{central.url}/api/federation/studies"
    h1.env["VESALIUS_INDEXER_URL"] = url
    h1.run(["indexer", "push"])
    assert len(found(central)) == 5
    assert status(h1)["backlog_changes"] == 0 and status(h1)["last_error"] is None

    # the key is revoked: refused with a clear message, the watermark stays
    central.run(["central", "site", "revoke", "H1"])
    studies(tmp_path / "after-revoke", 1, "R")
    h1.run(["import", str(tmp_path / "after-revoke")])
    refused = h1.run(["indexer", "push"], check=False)
    assert refused.returncode == 1
    assert "refused this site's key" in refused.stderr
    assert status(h1)["backlog_changes"] > 0
    assert len(found(central)) == 5


def test_a_site_stopped_in_the_middle_of_its_initial_push(
    tmp_path: Path, sqlite_central: Node
) -> None:
    central = sqlite_central
    h1 = site(tmp_path, central, "H1")
    h1.env["VESALIUS_INDEXER_BATCH_SIZE"] = "2"
    uids = studies(tmp_path / "in", 40)
    h1.run(["import", str(tmp_path / "in")])
    push = h1.popen(["indexer", "push", "--initial"])
    assert push.stdout is not None
    seen = 0
    for line in push.stdout:
        if re.search(r"pushed 2 records", line):
            seen += 1
            if seen == 3:
                push.send_signal(signal.SIGKILL)
                break
    push.wait(timeout=30)
    assert push.returncode == -signal.SIGKILL
    partial = len(found(central))
    assert 6 <= partial < 40
    assert not status(h1)["initial_push_done"]
    # run again: everything arrives once
    h1.run(["indexer", "push"])
    assert [u for _, u, _ in found(central)] == sorted(uids)
    assert status(h1)["initial_push_done"]


def test_indexer_settings_are_required(tmp_path: Path) -> None:
    lonely = Node(tmp_path, "lonely")
    result = lonely.run(["indexer", "push"], check=False)
    assert result.returncode == 1
    assert "VESALIUS_INDEXER_URL" in result.stderr and "VESALIUS_SITE_CODE" in result.stderr
    state = status(lonely)
    assert state["watermark"] == 0 and state["initial_push_done"] is False


def wait_for(check: Any, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.2)


def test_serve_pushes_by_itself(tmp_path: Path, sqlite_central: Node) -> None:
    """A site's `serve` pushes soon after new studies, and on its interval for the rest."""
    central = sqlite_central
    h1 = site(tmp_path, central, "H1")
    first = studies(tmp_path / "in", 3)
    h1.run(["import", str(tmp_path / "in")])
    h1.env["VESALIUS_INDEXER_INTERVAL_S"] = "3"
    h1.start()
    try:
        # the first push (the initial one) happens by itself
        wait_for(lambda: len(found(central)) == 3)
        # a study stored while it runs is found centrally soon after
        later = studies(tmp_path / "later", 1, "N")
        h1.run(["import", str(tmp_path / "later")])
        wait_for(lambda: len(found(central)) == 4)
        # a deletion is pushed soon too (test below), or else on the interval
        assert h1.delete(f"/api/studies/{first[0]}").status_code in (200, 204)
        wait_for(lambda: {u for _, u, _ in found(central)} == {*first[1:], *later})
        assert any("pushed 1 records" in line for line in h1.log)
        jobs = h1.run(["jobs", "list", "--kind", "federation.push"]).stdout
        assert "federation.push" in jobs
    finally:
        h1.stop()
    assert status(h1)["backlog_changes"] == 0


def test_a_rebuilt_index_is_pushed_whole_again(tmp_path: Path, sqlite_central: Node) -> None:
    h1 = site(tmp_path, sqlite_central, "H1")
    uids = studies(tmp_path / "in", 2)
    h1.run(["import", str(tmp_path / "in")])
    h1.run(["indexer", "push"])
    h1.run(["reindex", "--yes"])
    again = h1.run(["indexer", "push"])
    assert "Pushed 2 study records" in again.stdout, again.stdout + again.stderr
    assert "pushing every study" in again.stderr
    assert [u for _, u, _ in found(sqlite_central)] == sorted(uids)
    assert status(h1)["backlog_changes"] == 0


def test_serve_pushes_soon_after_added_instances_and_deletions(
    tmp_path: Path, sqlite_central: Node
) -> None:
    """An instance added to a known study, and a deletion, are pushed within moments of the
    change (the typed events queue the debounced push), not on the interval."""
    central = sqlite_central
    h1 = site(tmp_path, central, "H1")
    first = studies(tmp_path / "in", 2)
    h1.run(["import", str(tmp_path / "in")])
    h1.run(["indexer", "push"])
    assert found(central) == sorted(("H1", u, 1) for u in first)
    h1.env["VESALIUS_INDEXER_INTERVAL_S"] = "3600"
    h1.start()
    try:
        # the schedule's first run (due at once) goes by; the next is an hour away
        wait_for(
            lambda: (
                "federation.push"
                in h1.run(["jobs", "list", "--kind", "federation.push", "--state", "done"]).stdout
            )
        )
        # one more instance of the first study, imported by another process
        more = make_dataset(
            PatientID="P000", PatientName="PATIENT^NUMBER0", StudyInstanceUID=first[0]
        )
        write(tmp_path / "more", more)
        h1.run(["import", str(tmp_path / "more")])
        wait_for(lambda: ("H1", first[0], 2) in found(central))
        # a deletion at the site, over its API
        assert h1.delete(f"/api/studies/{first[1]}").status_code in (200, 204)
        wait_for(lambda: found(central) == [("H1", first[0], 2)])
    finally:
        h1.stop()
    assert status(h1)["backlog_changes"] == 0
