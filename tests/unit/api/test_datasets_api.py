"""The dataset routes: streamed upload with limits, ownership, use from a spec."""

from __future__ import annotations

from pathlib import Path

from api_helpers import auth, make_client
from fastapi.testclient import TestClient

DATASETS = "/api/v1/datasets"
ROOT_BYTES = b"root" + b"\0" * 1000


def test_upload_list_get_delete(idle: TestClient) -> None:
    r = idle.post(f"{DATASETS}?name=ttH.root", content=ROOT_BYTES, headers=auth("alice"))
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["size"] == len(ROOT_BYTES)
    assert ds["uri"] == "dataset:ttH.root"
    assert [d["id"] for d in idle.get(DATASETS, headers=auth("alice")).json()["items"]] == [
        ds["id"]
    ]
    assert idle.get(DATASETS, headers=auth("bob")).json()["items"] == []
    assert idle.get(f"{DATASETS}/{ds['id']}", headers=auth("bob")).status_code == 404
    assert idle.delete(f"{DATASETS}/{ds['id']}", headers=auth("bob")).status_code == 404
    again = idle.post(f"{DATASETS}?name=ttH.root", content=ROOT_BYTES, headers=auth("alice"))
    assert again.status_code == 409
    assert idle.delete(f"{DATASETS}/{ds['id']}", headers=auth("alice")).status_code == 204
    assert idle.get(f"{DATASETS}/{ds['id']}", headers=auth("alice")).status_code == 404


def test_rejects_non_root_bad_names_and_oversized(tmp_path: Path) -> None:
    with make_client(tmp_path, run_executor=False, uploads={"dataset_bytes": 2000}) as c:
        r = c.post(f"{DATASETS}?name=a.root", content=b"PK\x03\x04zip", headers=auth("alice"))
        assert r.status_code == 422
        assert "not a ROOT file" in r.json()["detail"]
        r = c.post(f"{DATASETS}?name=../x.root", content=ROOT_BYTES, headers=auth("alice"))
        assert r.status_code == 422

        def chunks() -> object:
            for _ in range(10):
                yield b"root" + b"\0" * 500

        r = c.post(f"{DATASETS}?name=big.root", content=chunks(), headers=auth("alice"))
        assert r.status_code == 413
        r = c.post(f"{DATASETS}?name=big.root", content=b"root" * 1000, headers=auth("alice"))
        assert r.status_code == 413
        assert c.get(DATASETS, headers=auth("alice")).json()["items"] == []
    leftovers = [p for p in (tmp_path / "data" / "datasets").rglob("*") if p.is_file()]
    assert leftovers == []


def test_spec_refers_to_own_datasets_only(idle: TestClient) -> None:
    idle.post(f"{DATASETS}?name=sig.root", content=ROOT_BYTES, headers=auth("alice"))
    spec = {"name": "x", "data": {"datasets": [{"name": "s", "files": ["dataset:sig.root"]}]}}
    assert idle.post("/api/v1/jobs", json=spec, headers=auth("alice")).status_code == 201
    r = idle.post("/api/v1/jobs", json=spec, headers=auth("bob"))
    assert r.status_code == 422
    assert "'dataset:sig.root'" in r.json()["detail"]
