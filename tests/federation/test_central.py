"""The central index over real HTTP: site keys, pushes (good, hostile, replayed), search, QIDO-RS,
and the portal page."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from authhelp import bearer, make_user
from httpserver import running_app
from vesalius.config import Settings
from vesalius.container import Container, build


@dataclass
class Central:
    url: str
    container: Container
    keys: dict[str, str]
    user: dict[str, str]

    def push(self, body: Any, site: str = "H1", **kwargs: Any) -> httpx.Response:
        headers = bearer(self.keys[site]) if site else {}
        return httpx.post(
            f"{self.url}/api/federation/studies", json=body, headers=headers, timeout=30, **kwargs
        )

    def search(self, **params: Any) -> dict[str, Any]:
        answer = httpx.get(
            f"{self.url}/api/federation/studies", params=params, headers=self.user, timeout=30
        )
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result


def _start(settings: Settings) -> Iterator[Central]:
    container = build(settings, migrate=True)
    try:
        keys = {code: container.central.add_site(code) for code in ("H1", "H2")}
        user = bearer(make_user(container, "searcher", "radiologist"))
        with running_app(container) as url:
            yield Central(url, container, keys, user)
    finally:
        container.close()


@pytest.fixture
def central(make_settings: Any, database_url: str) -> Iterator[Central]:
    """A central index on each database backend."""
    yield from _start(
        make_settings(database_url=database_url, central_index=True, central_max_batch=50)
    )


@pytest.fixture
def sqlite_central(make_settings: Any) -> Iterator[Central]:
    yield from _start(make_settings(central_index=True, central_max_batch=50))


def record(uid: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "patient_pk": "7",
        "patient_id": "P001",
        "patient_name": "Müller^José",
        "study_pk": "42",
        "study_iuid": uid,
        "study_datetime": "2024-05-01 13:45:00",
        "study_description": "Cardiac MRI",
        "study_modality": "MR",
        "study_series": "3",
        "study_instances": "120",
        "center": "H1",
    }
    base.update(fields)
    return base


def test_push_then_search_by_name_id_date_modality_site(central: Central) -> None:
    answer = central.push(
        [
            record("1.2.1"),
            record("1.2.2", patient_id="P002", patient_name="DOE^JOHN", study_modality="CT\\PT"),
            record("1.2.3", patient_id="P003", study_datetime="2023-01-02T08:00:00"),
        ]
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"site": "H1", "received": 3, "upserted": 3, "deleted": 0, "stale": 0}
    # the same study UID at another site is another record
    assert central.push([record("1.2.1", center="H2")], site="H2").status_code == 200

    everything = central.search()
    assert everything["total"] == 4
    assert {(s["site"], s["study_iuid"]) for s in everything["studies"]} == {
        ("H1", "1.2.1"),
        ("H1", "1.2.2"),
        ("H1", "1.2.3"),
        ("H2", "1.2.1"),
    }
    # person-name matching of the archive: case- and accent-insensitive, DICOM wildcards
    assert central.search(patient_name="muller^jose")["total"] == 3
    assert central.search(patient_name="MULL*")["total"] == 3
    assert central.search(patient_name="doe^j*")["studies"][0]["study_iuid"] == "1.2.2"
    assert central.search(patient_id="P00?")["total"] == 4
    assert central.search(patient_id="P002")["total"] == 1
    assert central.search(modality="PT")["studies"][0]["study_iuid"] == "1.2.2"
    assert central.search(modality="MR,PT")["total"] == 4
    dated = central.search(**{"from": "2024-01-01", "to": "2024-12-31"})
    assert dated["total"] == 3
    assert central.search(**{"to": "20231231"})["studies"][0]["study_iuid"] == "1.2.3"
    only_h2 = central.search(site="H2")
    assert only_h2["total"] == 1 and only_h2["studies"][0]["site"] == "H2"
    found = central.search(patient_id="P001", site="H1")["studies"][0]
    assert found == {
        **{k: v for k, v in record("1.2.1").items() if k not in ("study_series", "center")},
        "study_series": 3,
        "study_instances": 120,
        "study_datetime": "2024-05-01T13:45:00",
        "site": "H1",
        "center": "H1",
        "updated_at": found["updated_at"],
    }
    # paging with a total
    first = central.search(limit=2)
    second = central.search(limit=2, offset=2)
    assert first["total"] == second["total"] == 4
    assert len(first["studies"]) == len(second["studies"]) == 2
    keys = {(s["site"], s["study_iuid"]) for s in first["studies"] + second["studies"]}
    assert len(keys) == 4


def test_upsert_is_idempotent_and_deletion_removes(central: Central) -> None:
    for _ in range(2):
        assert central.push([record("1.3.1"), record("1.3.2")]).status_code == 200
    assert central.search()["total"] == 2
    changed = central.push(record("1.3.1", study_instances=121, study_series=4))
    assert changed.status_code == 200
    assert central.search(study_iuid="1.3.1")["studies"][0]["study_instances"] == 121
    gone = central.push([{"study_iuid": "1.3.2", "deleted": True, "center": "H1"}])
    assert gone.json()["deleted"] == 1
    assert [s["study_iuid"] for s in central.search()["studies"]] == ["1.3.1"]
    # a deleted study comes back when the site reports it again
    assert central.push(record("1.3.2")).status_code == 200
    assert central.search()["total"] == 2


def test_replayed_older_batch_changes_nothing(central: Central) -> None:
    assert central.push([record("1.4.1", seq=10, study_instances=5)]).status_code == 200
    assert central.push([record("1.4.1", seq=12, study_instances=9)]).status_code == 200
    assert central.push([{"study_iuid": "1.4.2", "deleted": True, "seq": 20}]).status_code == 200
    replay = central.push([record("1.4.1", seq=10, study_instances=5), record("1.4.2", seq=3)])
    assert replay.status_code == 200
    assert replay.json()["stale"] == 2
    result = central.search()
    assert result["total"] == 1
    assert result["studies"][0]["study_instances"] == 9


def test_a_key_writes_only_its_own_site(sqlite_central: Central) -> None:
    central = sqlite_central
    refused = central.push([record("1.5.1"), record("1.5.2", center="H2")], site="H1")
    assert refused.status_code == 403
    assert "H2" in refused.json()["detail"] and "own site" in refused.json()["detail"]
    assert central.search()["total"] == 0  # nothing of the batch was applied
    # a record without center is the key's site
    unnamed = record("1.5.3")
    del unnamed["center"]
    assert central.push(unnamed, site="H2").json()["site"] == "H2"
    # H2 cannot delete H1's study either: a deletion by H2 only concerns H2's records
    assert central.push(record("1.5.4"), site="H1").status_code == 200
    central.push({"study_iuid": "1.5.4", "deleted": True}, site="H2")
    assert central.search(site="H1")["total"] == 1


def test_keys_revoked_unknown_and_user_tokens_are_refused(sqlite_central: Central) -> None:
    central = sqlite_central
    url = f"{central.url}/api/federation/studies"
    assert httpx.post(url, json=record("1.6.1")).status_code == 401
    wrong = httpx.post(url, json=record("1.6.1"), headers=bearer("vsk_" + "x" * 43))
    assert wrong.status_code == 401 and "site key" in wrong.json()["detail"]
    user = httpx.post(url, json=record("1.6.1"), headers=central.user)
    assert user.status_code == 403 and "site key" in user.json()["detail"]
    central.container.central.revoke_site("H1")
    revoked = central.push(record("1.6.1"))
    assert revoked.status_code == 401
    assert central.search()["total"] == 0
    # a new key for the revoked site works, the old one still does not
    old = central.keys["H1"]
    central.keys["H1"] = central.container.central.add_site("H1")
    assert central.push(record("1.6.1")).status_code == 200
    assert httpx.post(url, json=record("1.6.2"), headers=bearer(old)).status_code == 401


def test_seed_004_client_posting_one_record_with_its_key(sqlite_central: Central) -> None:
    """The seed's client posts one record per request; its key may travel in the record."""
    central = sqlite_central
    url = f"{central.url}/api/federation/studies"
    body = record("1.7.1", key=central.keys["H2"], center="H2")
    answer = httpx.post(url, json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["site"] == "H2"
    with_bearer = httpx.post(
        url, json=record("1.7.2", center="H2"), headers=bearer(central.keys["H2"])
    )
    assert with_bearer.status_code == 200
    bad_key = httpx.post(url, json=record("1.7.3", key="vsk_nope"))
    assert bad_key.status_code == 401
    assert central.search(site="H2")["total"] == 2


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty"),
        (b"[" * 5000 + b"]" * 5000, 400, "not valid JSON"),
        (b'"a string"', 422, "JSON object or an array"),
        (b"[1, 2]", 422, "record 0 must be a JSON object"),
        (b'[{"patient_id": "P1"}]', 422, "study_iuid is required"),
        (b'[{"study_iuid": "1.2", "patient_name": 42}]', 422, "patient_name must be a string"),
        (b'[{"study_iuid": "1.2", "study_series": "many"}]', 422, "study_series must be a whole"),
        (b'[{"study_iuid": "1.2", "study_series": -1}]', 422, "between 0"),
        (b'[{"study_iuid": "1.2", "study_datetime": "yesterday"}]', 422, "study_datetime"),
        (b'[{"study_iuid": "1.2", "study_datetime": "2024-13-45"}]', 422, "study_datetime"),
        (b'[{"study_iuid": "1.2", "deleted": "yes"}]', 422, "deleted must be true or false"),
        (b'[{"study_iuid": "1.2", "seq": "9"}]', 422, "seq must be"),
        (b'[{"study_iuid": "DROP TABLE"}]', 422, "not a UID"),
        (b'[{"study_iuid": "1.2", "patient_id": "' + b"9" * 65 + b'"}]', 422, "longer than 64"),
        (b'[{"study_iuid": "1.2", "patient_id": "a\\u0000b"}]', 422, "NUL"),
    ],
)
def test_hostile_bodies_are_refused_whole(
    sqlite_central: Central, body: bytes, status: int, words: str
) -> None:
    central = sqlite_central
    good = record("1.8.1")
    # a good record first in the batch must not be applied when a later one is wrong
    if body.startswith(b"[{"):
        body = b"[" + httpx.Request("POST", "/", json=good).content + b"," + body[1:]
    answer = httpx.post(
        f"{central.url}/api/federation/studies",
        content=body,
        headers={**bearer(central.keys["H1"]), "Content-Type": "application/json"},
    )
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"]
    assert central.search()["total"] == 0
    assert central.push(good).status_code == 200  # and the server keeps serving


def test_huge_batches_get_413(sqlite_central: Central) -> None:
    central = sqlite_central
    too_many = central.push([record(f"1.9.{i}") for i in range(51)])
    assert too_many.status_code == 413
    assert "at most 50" in too_many.json()["detail"]
    # a body over the byte limit is refused before it is read whole
    settings = central.container.settings
    big = b"[" + b" " * (settings.central_max_body_bytes + 10) + b"]"
    answer = httpx.post(
        f"{central.url}/api/federation/studies",
        content=big,
        headers={**bearer(central.keys["H1"]), "Content-Type": "application/json"},
    )
    assert answer.status_code == 413
    assert "central_max_body_bytes" in answer.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b"["
        for _ in range(settings.central_max_body_bytes // 65536 + 2):
            yield b" " * 65536
        yield b"]"

    streamed = httpx.post(
        f"{central.url}/api/federation/studies",
        content=chunks(),
        headers=bearer(central.keys["H1"]),
    )
    assert streamed.status_code == 413
    assert central.search()["total"] == 0


def test_search_permission_and_bad_queries(sqlite_central: Central) -> None:
    central = sqlite_central
    url = f"{central.url}/api/federation/studies"
    assert httpx.get(url).status_code == 401
    doctor = bearer(make_user(central.container, "doc", "referring_doctor"))
    refused = httpx.get(url, headers=doctor)
    assert refused.status_code == 403 and "federation.search" in refused.json()["detail"]
    bad_date = httpx.get(url, params={"from": "2024-99"}, headers=central.user)
    assert bad_date.status_code == 422
    bad_limit = httpx.get(url, params={"limit": "5000"}, headers=central.user)
    assert bad_limit.status_code == 422
    # a site key is not a user: it cannot search
    assert httpx.get(url, headers=bearer(central.keys["H1"])).status_code == 401


def test_not_a_central_index(make_settings: Any) -> None:
    container = build(make_settings(), migrate=True)
    try:
        key = container.central.add_site("H1")
        user = bearer(make_user(container, "admin2", "admin"))
        with running_app(container) as url:
            pushed = httpx.post(
                f"{url}/api/federation/studies", json=record("1.1"), headers=bearer(key)
            )
            assert pushed.status_code == 404 and "central_index" in pushed.json()["detail"]
            searched = httpx.get(f"{url}/api/federation/studies", headers=user)
            assert searched.status_code == 404
            page = httpx.get(f"{url}/federation", headers=user)
            assert page.status_code == 200 and "not a central index" in page.text
    finally:
        container.close()


def test_qido_rs_across_sites_with_dicomweb_client(central: Central) -> None:
    central.push([record("1.10.1"), record("1.10.2", patient_name="DOE^JANE", study_modality="CT")])
    central.push([record("1.10.1", center="H2", study_datetime="20200101")], site="H2")
    client = DICOMwebClient(f"{central.url}/federation/dicom-web", headers=central.user)
    studies = client.search_for_studies()
    assert len(studies) == 3
    sites = {(s["0020000D"]["Value"][0], s["00080080"]["Value"][0]) for s in studies}
    assert sites == {("1.10.1", "H1"), ("1.10.2", "H1"), ("1.10.1", "H2")}
    jane = client.search_for_studies(search_filters={"PatientName": "doe^*"})
    assert [s["00100010"]["Value"][0]["Alphabetic"] for s in jane] == ["DOE^JANE"]
    assert jane[0]["00080061"]["Value"] == ["CT"]
    assert jane[0]["00201208"]["Value"] == [120]
    old = client.search_for_studies(search_filters={"StudyDate": "-20201231"})
    assert [s["00080080"]["Value"][0] for s in old] == ["H2"]
    by_site = client.search_for_studies(search_filters={"InstitutionName": "H2"})
    assert len(by_site) == 1
    paged = client.search_for_studies(limit=2, offset=0)
    assert len(paged) == 2
    answer = httpx.get(
        f"{central.url}/federation/dicom-web/studies",
        params={"Bogus": "1"},
        headers=central.user,
    )
    assert answer.status_code == 400 and "Bogus" in answer.json()["detail"]
    answer = httpx.get(
        f"{central.url}/federation/dicom-web/studies",
        params={"StudyDate": "2024-99"},
        headers=central.user,
    )
    assert answer.status_code == 400


def test_every_push_is_audited(sqlite_central: Central) -> None:
    central = sqlite_central
    central.push([record("1.11.1")])
    central.push([record("1.11.2", center="H2")])
    admin = bearer(make_user(central.container, "auditor", "admin"))
    events = httpx.get(f"{central.url}/api/audit", params={"actor": "site:H1"}, headers=admin)
    outcomes = sorted(e["outcome"] for e in events.json())
    assert outcomes == ["403", "ok"]


def test_a_bulk_push_has_the_search_statistics_refreshed(
    central: Central, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After ANALYZE_AFTER rows pushed, a job refreshes the studies table's statistics."""
    from sqlalchemy import text

    from vesalius.federation import central as central_module
    from vesalius.index import jobs as jobs_sql

    monkeypatch.setattr(central_module, "ANALYZE_AFTER", 5)
    db = central.container.db
    assert central.push([record(f"1.4.{n}") for n in range(6)]).status_code == 200
    with db.read() as session:
        queued = jobs_sql.list_jobs(session, kind=central_module.ANALYZE_JOB)
    assert len(queued) == 1, queued
    central.container.central.refresh_statistics()  # what the job runs
    dialect = db.engine.dialect.name
    with db.read() as session:
        if dialect == "sqlite":
            analyzed = session.execute(
                text("SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'federation_studies'")
            ).scalar()
        elif dialect == "postgresql":
            analyzed = session.execute(
                text(
                    "SELECT count(*) FROM pg_stat_user_tables WHERE relname = "
                    "'federation_studies' AND (last_analyze IS NOT NULL)"
                )
            ).scalar()
        else:  # InnoDB's ANALYZE TABLE leaves no trace a test can read cheaply
            analyzed = 1
    assert analyzed, dialect
