"""Runs through the ASGI app: labels at submission, the runs listing (filter, search,
sort), the compare view, clone (the editable spec), and that all of it is owner-only."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from api_helpers import auth, make_client
from fastapi.testclient import TestClient

JOBS, RUNS = "/api/v1/jobs", "/api/v1/runs"


def plant(metrics: dict[str, Any], curves: dict[str, Any] | None = None) -> dict[str, str]:
    """What the fake job writes into its output (base64), as a real run's files."""
    files = {"metrics.json": {"test": metrics, "history": [{"epoch": 1, "val_loss": 0.5}]}}
    if curves is not None:
        files["plots/curves.json"] = curves
    return {k: base64.b64encode(json.dumps(v).encode()).decode() for k, v in files.items()}


def submit(
    client: TestClient, spec: dict[str, Any], user: str = "alice", **params: Any
) -> dict[str, Any]:
    r = client.post(JOBS, json=spec, params=params, headers=auth(user))
    assert r.status_code == 201, r.text
    return r.json()


def spec_of(lr: float, auc: float, **fake: Any) -> dict[str, Any]:
    curves = {"roc": [{"class": "signal", "split": "test", "auc": auc,
                       "eff_s": [0, 0.5, 1], "eff_b": [0, 0.1, 1]}]}  # fmt: skip
    return {
        "name": "demo",
        "model": {"kind": "mlp", "hidden": [16]},
        "train": {"epochs": 2, "lr": lr},
        "fake": {"plant": plant({"auc": auc, "loss": 1 - auc}, curves), **fake},
    }


def wait_all(client: TestClient, ids: list[str], user: str = "alice") -> None:
    deadline = time.monotonic() + 30
    for job_id in ids:
        while time.monotonic() < deadline:
            state = client.get(f"{JOBS}/{job_id}", headers=auth(user)).json()["state"]
            if state in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.05)
        assert state == "succeeded", state


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Alice's three runs (two succeeded with metrics and curves, one failed), Bob's one."""
    with make_client(tmp_path_factory.mktemp("runs")) as client:
        a = submit(client, spec_of(0.01, 0.91), run_name="mlp-fast", tag=["sample=ttbar"])
        b = submit(client, spec_of(0.001, 0.95), run_name="mlp-slow", tag=["sample=qcd", "k=v"])
        c = submit(client, {"name": "broken", "fake": {"exit": 3}}, tag=["sample=ttbar"])
        d = submit(client, spec_of(0.1, 0.5), user="bob", run_name="bobs")
        wait_all(client, [a["id"], b["id"]])
        wait_all(client, [d["id"]], "bob")
        yield client, a, b, c, d


def listing(client: TestClient, user: str = "alice", **params: Any) -> list[dict[str, Any]]:
    r = client.get(RUNS, params=params, headers=auth(user))
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def test_labels_are_stored_and_returned(runs: Any) -> None:
    client, a, b, c, _ = runs
    assert a["run_name"] == "mlp-fast"
    assert a["tags"] == {"sample": "ttbar"}
    job = client.get(f"{JOBS}/{b['id']}", headers=auth("alice")).json()
    assert job["tags"] == {"sample": "qcd", "k": "v"}
    assert job["duration_seconds"] is not None
    assert job["duration_seconds"] >= 0
    assert c["run_name"] is None


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"tag": ["nokey"]}, "no '='"),
        ({"tag": ["bad key=1"]}, "tag key 'bad key'"),
        ({"tag": ["a=1", "a=2"]}, "given twice"),
        ({"run_name": "x\x07y"}, "control characters"),
        ({"parent": "not-an-id"}, "not a job id"),
    ],
)
def test_bad_labels_are_refused_with_the_reason(
    runs: Any, params: dict[str, Any], needle: str
) -> None:
    client = runs[0]
    r = client.post(JOBS, json={"name": "x"}, params=params, headers=auth("alice"))
    assert r.status_code == 422, r.text
    assert needle in r.json()["detail"]


def test_a_parent_must_be_your_own_job(runs: Any) -> None:
    client, a, _, _, d = runs
    r = client.post(JOBS, json={"name": "x"}, params={"parent": d["id"]}, headers=auth("alice"))
    assert r.status_code == 404  # Bob's job is not found, like one that does not exist
    child = submit(client, {"name": "child"}, parent=a["id"])
    assert child["parent"] == a["id"]
    assert [r["id"] for r in listing(client, parent=a["id"])] == [child["id"]]


def test_listing_has_columns_and_only_your_runs(runs: Any) -> None:
    client, a, b, c, d = runs
    body = client.get(RUNS, headers=auth("alice")).json()
    ids = [r["id"] for r in body["items"]]
    assert {a["id"], b["id"], c["id"]} <= set(ids)
    assert d["id"] not in ids
    assert body["param_columns"] == ["model.kind", "model.hidden", "train.epochs", "train.lr"]
    assert body["metric_columns"] == ["auc", "loss"]
    first = next(r for r in body["items"] if r["id"] == b["id"])
    assert first["params"]["train.lr"] == 0.001
    assert first["metrics"]["auc"] == pytest.approx(0.95)
    assert first["title"] == "mlp-slow"
    assert [r["id"] for r in listing(client, "bob")] == [d["id"]]


def test_sort_filter_and_search(runs: Any) -> None:
    client, a, b, c, _ = runs
    by_auc = listing(client, sort="metric:auc", order="desc")
    assert [r["id"] for r in by_auc[:2]] == [b["id"], a["id"]]
    assert by_auc[-1]["metrics"] == {} or "auc" not in by_auc[-1]["metrics"]  # no value: last
    by_lr = listing(client, sort="param:train.lr", order="asc")
    assert [r["id"] for r in by_lr[:2]] == [b["id"], a["id"]]
    assert [r["id"] for r in listing(client, tag=["sample=ttbar"])] == [c["id"], a["id"]]
    assert [r["id"] for r in listing(client, tag=["k"])] == [b["id"]]
    assert [r["id"] for r in listing(client, search="MLP-fast")] == [a["id"]]
    assert [r["id"] for r in listing(client, search="lr=0.001")] == [b["id"]]
    assert [r["id"] for r in listing(client, state=["failed"])] == [c["id"]]
    r = client.get(RUNS, params={"sort": "colour"}, headers=auth("alice"))
    assert r.status_code == 422
    assert "param:KEY or metric:KEY" in r.json()["detail"]


def test_compare_two_runs(runs: Any) -> None:
    client, a, b, _, _ = runs
    r = client.get(f"{RUNS}/compare", params={"id": [a["id"], b["id"]]}, headers=auth("alice"))
    assert r.status_code == 200, r.text
    body = r.json()
    params = {row["key"]: row for row in body["params"]}
    assert params["train.lr"] == {"key": "train.lr", "values": [0.01, 0.001], "differs": True}
    assert params["model.kind"]["differs"] is False
    metrics = {row["key"]: row["values"] for row in body["metrics"]}
    assert metrics["auc"] == [pytest.approx(0.91), pytest.approx(0.95)]
    assert [c["roc"][0]["auc"] for c in body["curves"]] == [0.91, 0.95]
    assert body["curves"][0]["history"] == [{"epoch": 1, "val_loss": 0.5}]  # from metrics.json


def test_compare_refuses_other_users_runs_and_bad_counts(runs: Any) -> None:
    client, a, b, _, d = runs
    r = client.get(f"{RUNS}/compare", params={"id": [a["id"], b["id"]]}, headers=auth("bob"))
    assert r.status_code == 404
    r = client.get(f"{RUNS}/compare", params={"id": [a["id"], d["id"]]}, headers=auth("alice"))
    assert r.status_code == 404
    r = client.get(f"{RUNS}/compare", params={"id": [a["id"]]}, headers=auth("alice"))
    assert r.status_code == 422
    assert "2 to 10" in r.json()["detail"]
    admin = client.get(f"{RUNS}/compare", params={"id": [a["id"], d["id"]]}, headers=auth("admin"))
    assert admin.status_code == 200


def test_clone_gives_the_spec_back_to_its_owner_only(runs: Any) -> None:
    client, a, _, _, _ = runs
    r = client.get(f"{RUNS}/{a['id']}/spec", headers=auth("alice"))
    assert r.status_code == 200
    spec = yaml.safe_load(r.text)
    assert spec["train"]["lr"] == 0.01
    assert client.get(f"{RUNS}/{a['id']}/spec", headers=auth("bob")).status_code == 404
    ui = client.get(f"/ui/submit?clone={a['id']}", headers=auth("bob"))
    assert ui.status_code == 404
    mine = client.get(f"/ui/submit?clone={a['id']}", headers=auth("alice"))
    assert mine.status_code == 200
    assert 'value="mlp-fast-clone"' in mine.text
    assert 'value="sample=ttbar"' in mine.text


def test_ui_pages_list_and_compare_only_your_runs(runs: Any) -> None:
    client, a, b, _, d = runs
    page = client.get("/ui/runs", headers=auth("alice"))
    assert page.status_code == 200
    assert "mlp-fast" in page.text
    assert "bobs" not in page.text
    cmp_ = client.get(f"/ui/runs/compare?id={a['id']}&id={b['id']}", headers=auth("alice"))
    assert cmp_.status_code == 200
    assert 'id="compare-data"' in cmp_.text
    foreign = client.get(f"/ui/runs/compare?id={a['id']}&id={d['id']}", headers=auth("alice"))
    assert foreign.status_code == 404


def test_the_python_client_submits_labels_and_lists_runs(tmp_path: Path) -> None:
    import httpx

    from mlaas4hep.client import Client
    from mlaas4hep.errors import NotFound, SpecError

    with make_client(tmp_path, run_executor=False) as tc:

        def forward(request: httpx.Request) -> httpx.Response:
            r = tc.request(
                request.method,
                request.url.raw_path.decode(),
                content=request.content,
                headers=dict(request.headers),
            )
            return httpx.Response(r.status_code, headers=r.headers, content=r.content)

        transport = httpx.MockTransport(forward)
        alice = Client("http://test", "token-alice", transport=transport)
        job = alice.submit(b"name: x\n", run_name="first", tags={"sample": "ttbar"})
        assert (job["run_name"], job["tags"]) == ("first", {"sample": "ttbar"})
        other = alice.submit(b"name: y\n", tags=["sample=qcd"])
        found = alice.runs("first", tags=["sample"], states=["queued"])["items"]
        assert [r["id"] for r in found] == [job["id"]]
        both = alice.compare_runs([job["id"], other["id"]])
        assert {r["key"] for r in both["params"] if r["differs"]} == {"name"}
        with pytest.raises(SpecError, match="no '='"):
            alice.submit(b"name: x\n", tags=["oops"])
        bob = Client("http://test", "token-bob", transport=transport)
        with pytest.raises(NotFound):
            bob.compare_runs([job["id"], other["id"]])
        assert bob.runs()["items"] == []
