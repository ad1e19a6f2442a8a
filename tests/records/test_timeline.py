"""The timeline: built, reordered, walked both ways, with positions that stay contiguous."""

from __future__ import annotations

from typing import Any

from records_helpers import RunningHttp, store_study


def _walk_forward(client: Any, subject: str, first: int) -> list[int]:
    seen, current = [], first
    while current is not None:
        seen.append(current)
        current = client.get(f"/api/subjects/{subject}/events/{current}").json()["next_id"]
    return seen


def _walk_backward(client: Any, subject: str, last: int) -> list[int]:
    seen, current = [], last
    while current is not None:
        seen.append(current)
        current = client.get(f"/api/subjects/{subject}/events/{current}").json()["prev_id"]
    return seen


def _order(client: Any, subject: str) -> list[tuple[str, int, str | None]]:
    events = client.get(f"/api/subjects/{subject}/timeline").json()
    return [(e["date"], e["position"], e["title"]) for e in events]


def test_timeline_built_reordered_and_walked(http: RunningHttp) -> None:
    client = http.client
    study = store_study(http.container, "CAP0000101", "20240110")
    base = "/api/subjects/CAP00001"

    def add(**event: Any) -> int:
        response = client.post(f"{base}/events", json=event)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    gp = add(kind="gp_visit", date="2024-01-03", title="GP")
    note = add(
        kind="clinical_note",
        date="2024-01-10",
        title="note",
        note={"text": "Breathless on exertion.", "author": "Dr Who", "note_kind": "referral"},
    )
    diag = add(
        kind="baseline_diagnosis",
        date="2024-01-10",
        title="baseline",
        position=0,
        diagnosis={
            "height_cm": 172.5,
            "weight_kg": 81.3,
            "heart_rate_bpm": 64,
            "systolic_bp_mmhg": 128,
            "diastolic_bp_mmhg": 82,
            "diagnosis": "HCM",
            "extra": {"nt_probnp_pg_ml": 410},
        },
        study_instance_uids=[study],
    )
    cath = add(kind="cath_lab", date="2024-02-01", title="cath")

    assert _order(client, "CAP00001") == [
        ("2024-01-03", 0, "GP"),
        ("2024-01-10", 0, "baseline"),
        ("2024-01-10", 1, "Imaging session 1: Test study"),
        ("2024-01-10", 2, "note"),
        ("2024-02-01", 0, "cath"),
    ]
    events = client.get(f"{base}/timeline").json()
    ids = [e["id"] for e in events]
    assert [e["prev_id"] for e in events] == [None, *ids[:-1]]
    assert [e["next_id"] for e in events] == [*ids[1:], None]
    assert _walk_forward(client, "CAP00001", ids[0]) == ids
    assert _walk_backward(client, "CAP00001", ids[-1]) == ids[::-1]

    got = client.get(f"{base}/events/{diag}").json()
    assert got["diagnosis"]["height_cm"] == 172.5 and got["diagnosis"]["weight_kg"] == 81.3
    assert got["diagnosis"]["extra"] == {"nt_probnp_pg_ml": 410}
    assert got["links"] == [{"study_instance_uid": study, "present": True}]
    assert client.get(f"{base}/events/{note}").json()["note"]["author"] == "Dr Who"

    # Move the note first within its date, then the GP visit after the cath lab.
    moved = client.patch(f"{base}/events/{note}", json={"position": 0})
    assert moved.status_code == 200, moved.text
    client.patch(f"{base}/events/{gp}", json={"date": "2024-02-01"})
    assert _order(client, "CAP00001") == [
        ("2024-01-10", 0, "note"),
        ("2024-01-10", 1, "baseline"),
        ("2024-01-10", 2, "Imaging session 1: Test study"),
        ("2024-02-01", 0, "cath"),
        ("2024-02-01", 1, "GP"),
    ]
    client.patch(f"{base}/events/{gp}", json={"position": 0, "title": "GP again"})
    client.patch(f"{base}/events/{cath}", json={"date": "2024-01-10", "position": 1})
    assert _order(client, "CAP00001") == [
        ("2024-01-10", 0, "note"),
        ("2024-01-10", 1, "cath"),
        ("2024-01-10", 2, "baseline"),
        ("2024-01-10", 3, "Imaging session 1: Test study"),
        ("2024-02-01", 0, "GP again"),
    ]
    # Past the end of its date means last of it.
    client.patch(f"{base}/events/{note}", json={"position": 99})
    client.patch(f"{base}/events/{note}", json={"position": 0})
    assert _order(client, "CAP00001")[:4] == [
        ("2024-01-10", 0, "note"),
        ("2024-01-10", 1, "cath"),
        ("2024-01-10", 2, "baseline"),
        ("2024-01-10", 3, "Imaging session 1: Test study"),
    ]
    client.patch(f"{base}/events/{note}", json={"position": 99})
    assert _order(client, "CAP00001")[3] == ("2024-01-10", 3, "note")
    client.patch(f"{base}/events/{note}", json={"position": 0})
    ids = [e["id"] for e in client.get(f"{base}/timeline").json()]
    assert _walk_forward(client, "CAP00001", ids[0]) == ids
    assert _walk_backward(client, "CAP00001", ids[-1]) == ids[::-1]

    # Removing closes the gap; the neighbours now point at each other.
    assert client.delete(f"{base}/events/{cath}").status_code == 204
    assert _order(client, "CAP00001") == [
        ("2024-01-10", 0, "note"),
        ("2024-01-10", 1, "baseline"),
        ("2024-01-10", 2, "Imaging session 1: Test study"),
        ("2024-02-01", 0, "GP again"),
    ]
    assert client.get(f"{base}/events/{note}").json()["next_id"] == diag
    assert client.get(f"{base}/events/{diag}").json()["prev_id"] == note
    notes = client.get(f"{base}/timeline", params={"kind": "clinical_note"}).json()
    assert [e["id"] for e in notes] == [note]


def test_event_errors(sqlite_http: RunningHttp) -> None:
    client = sqlite_http.client
    client.post("/api/subjects", json={"subject_id": "S1"})
    client.post("/api/subjects", json={"subject_id": "S2"})
    event = client.post(
        "/api/subjects/S1/events", json={"kind": "gp_visit", "date": "2024-01-01"}
    ).json()
    # An event is reached only through its own subject.
    assert client.get(f"/api/subjects/S2/events/{event['id']}").status_code == 404
    assert client.get("/api/subjects/S9/timeline").status_code == 404
    no_note = client.post(
        "/api/subjects/S1/events", json={"kind": "clinical_note", "date": "2024-01-01"}
    )
    assert no_note.status_code == 422
    assert "needs a note" in no_note.text
    upload_kind = client.post(
        "/api/subjects/S1/events", json={"kind": "aux_file", "date": "2024-01-01"}
    )
    assert upload_kind.status_code == 422 and "/files" in upload_kind.text
    wrong_part = client.patch(
        f"/api/subjects/S1/events/{event['id']}", json={"note": {"text": "x"}}
    )
    assert wrong_part.status_code == 422
    assert wrong_part.json() == {
        "detail": "only a clinical_note event has a note, and it needs one"
    }
    bad_kind = client.post(
        "/api/subjects/S1/events", json={"kind": "GP Visit", "date": "2024-01-01"}
    )
    assert bad_kind.status_code == 422
