"""The dataset routes: streamed upload with limits, ownership, use from a spec."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_helpers import auth, make_client
from fastapi.testclient import TestClient

from mlaas4hep.data.samples import write_sample

DATASETS = "/api/v1/datasets"
ROOT_BYTES = b"root" + b"\0" * 1000  # the magic, but no tree: refused by the inspection


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small real ROOT file (an upload is parsed, in a bounded worker, before it counts)."""
    return write_sample(tmp_path_factory.mktemp("root") / "s.root", "signal", 20).read_bytes()


def test_upload_list_get_delete(idle: TestClient, sample: bytes) -> None:
    r = idle.post(f"{DATASETS}?name=ttH.root", content=sample, headers=auth("alice"))
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["size"] == len(sample)
    assert ds["uri"] == "dataset:ttH.root"
    assert [d["id"] for d in idle.get(DATASETS, headers=auth("alice")).json()["items"]] == [
        ds["id"]
    ]
    assert idle.get(DATASETS, headers=auth("bob")).json()["items"] == []
    assert idle.get(f"{DATASETS}/{ds['id']}", headers=auth("bob")).status_code == 404
    assert idle.delete(f"{DATASETS}/{ds['id']}", headers=auth("bob")).status_code == 404
    again = idle.post(f"{DATASETS}?name=ttH.root", content=sample, headers=auth("alice"))
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


def test_spec_refers_to_own_datasets_only(idle: TestClient, sample: bytes) -> None:
    r = idle.post(f"{DATASETS}?name=sig.root", content=sample, headers=auth("alice"))
    assert r.status_code == 201, r.text
    spec = {"name": "x", "data": {"datasets": [{"name": "s", "files": ["dataset:sig.root"]}]}}
    assert idle.post("/api/v1/jobs", json=spec, headers=auth("alice")).status_code == 201
    r = idle.post("/api/v1/jobs", json=spec, headers=auth("bob"))
    assert r.status_code == 422
    assert "'dataset:sig.root'" in r.json()["detail"]


def test_unreadable_root_files_are_refused_with_the_reason(idle: TestClient, sample: bytes) -> None:
    for name, body, reason in (
        ("empty.root", ROOT_BYTES, "no TTree"),
        ("cut.root", sample[: len(sample) // 2], "truncated"),
    ):
        r = idle.post(f"{DATASETS}?name={name}", content=body, headers=auth("alice"))
        assert r.status_code == 422, r.text
        assert reason in r.json()["detail"]
        assert "/data/" not in r.json()["detail"]  # no server paths in the message
    assert idle.get(DATASETS, headers=auth("alice")).json()["items"] == []
