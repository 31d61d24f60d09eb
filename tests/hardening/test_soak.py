"""Soak: many small jobs back to back through a real service; nothing accumulates.

``SOAK_JOBS`` jobs (most succeed, some fail, some are cancelled while running) go through
``mlaas4hep serve`` in waves, with the client doing what users do meanwhile (list, follow
logs, list and download artifacts, the bundle). The job command is the suite's stand-in
for ``mlaas4hep run`` (tests/unit/jobs/fake_job.py: a real process, in the sandbox when
bwrap is there), so the service's own behaviour is what is measured. After the first wave
(warm-up) and at the end the service's resident memory and open descriptors are read:
they must stay flat. Afterwards half the finished jobs are deleted, and the database (read
directly) and the data directory must agree: every job terminal, no orphan directory, no
partial or temporary file, no leftover process.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from hardening_servers import JOB_SCOPES, Service

FAKE_JOB = Path(__file__).parents[1] / "unit" / "jobs" / "fake_job.py"
SOAK_JOBS = 60
WAVE = 5
RSS_GROWTH = 0.30
FD_SLACK = 4
TERMINAL = ("succeeded", "failed", "cancelled")


def kind(i: int) -> str:
    return {3: "fail", 6: "cancel"}.get(i % 8, "ok")


def spec(i: int) -> dict[str, object]:
    fake = {
        "ok": {"steps": 3, "sleep": 0.02},
        "fail": {"exit": 3, "message": f"soak failure {i}"},
        "cancel": {"steps": 600, "sleep": 0.1},
    }[kind(i)]
    return {
        "name": f"soak-{i}",
        "description": "fake: " + json.dumps(fake),
        "data": {
            "datasets": [
                # paths on the service's side (the fake job reads nothing), granted below
                {"name": "a", "files": ["/soak/a.root"], "label": 1},
                {"name": "b", "files": ["/soak/b.root"], "label": 0},
            ]
        },
        "preprocess": {"features": {"scalars": ["MET_pt"]}},
    }


@pytest.fixture
def service(tmp_path: Path):
    config = {
        "executor": {
            "workers": 2,
            "job_command": [sys.executable, str(FAKE_JOB)],
            "sandbox_ro_paths": [str(FAKE_JOB.parent)],
            "heartbeat_s": 0.3,
            "poll_s": 0.1,
            "lease_s": 5,
            "cancel_grace_s": 1,
        }
    }
    srv = Service(tmp_path / "srv", config).start()
    try:
        yield srv
    finally:
        srv.stop()


def run_wave(client: httpx.Client, first: int) -> dict[str, int]:
    """Submit jobs first..first+WAVE-1, use them like a user would, wait until all end."""
    ids = {}
    for i in range(first, first + WAVE):
        r = client.post("/jobs", json=spec(i), headers={"Idempotency-Key": f"soak-{i}"})
        assert r.status_code == 201, r.text
        ids[r.json()["id"]] = i
    pending = dict(ids)
    cancelled: set[str] = set()
    deadline = time.monotonic() + 120
    while pending:
        assert time.monotonic() < deadline, pending
        assert client.get("/jobs", params={"limit": 10}).status_code == 200
        for job_id, i in list(pending.items()):
            job = client.get(f"/jobs/{job_id}").json()
            if job["state"] == "running":
                assert client.get(f"/jobs/{job_id}/logs").status_code == 200
                if kind(i) == "cancel" and job_id not in cancelled:
                    assert client.post(f"/jobs/{job_id}/cancel").status_code == 202
                    cancelled.add(job_id)
            if job["state"] in TERMINAL:
                check_finished(client, job, i)
                del pending[job_id]
        time.sleep(0.1)
    return ids


def check_finished(client: httpx.Client, job: dict[str, object], i: int) -> None:
    expected = {"ok": "succeeded", "fail": "failed", "cancel": "cancelled"}[kind(i)]
    job_id = job["id"]
    assert job["state"] == expected, job
    if expected == "failed":
        assert f"soak failure {i}" in str(job["reason"]), job
    if expected == "succeeded":
        names = {a["name"] for a in client.get(f"/jobs/{job_id}/artifacts").json()["items"]}
        assert "model.onnx" in names, names
        assert client.get(f"/jobs/{job_id}/artifacts/model.onnx").content == b"onnx"
        assert client.get(f"/jobs/{job_id}/artifacts/bundle.tar.gz").status_code == 200
    assert client.get(f"/jobs/{job_id}/logs").is_success


def test_soak_many_small_jobs_leave_nothing_behind(service: Service, figures) -> None:
    start = time.monotonic()
    jobs: dict[str, int] = {}
    with httpx.Client(
        base_url=service.url + "/api/v1",
        headers=service.headers(scopes=(*JOB_SCOPES, "storage.read:/soak")),
        timeout=60,
    ) as client:
        jobs.update(run_wave(client, 0))
        time.sleep(0.5)
        warm_rss, warm_fds = service.resources()
        for first in range(WAVE, SOAK_JOBS, WAVE):
            jobs.update(run_wave(client, first))
        time.sleep(0.5)
        end_rss, end_fds = service.resources()
        seconds = time.monotonic() - start
        deleted = sorted(jobs)[::2]
        for job_id in deleted:
            assert client.delete(f"/jobs/{job_id}").status_code == 204
            assert client.get(f"/jobs/{job_id}").status_code == 404
        listed = list_all(client)

    kept = set(jobs) - set(deleted)
    assert {j["id"] for j in listed} == kept
    assert all(j["state"] in TERMINAL for j in listed)
    assert not [p for p in service.children() if "fake_job" in " ".join(p.cmdline())]
    check_database(service, kept)
    check_data_dir(service, kept, jobs)
    assert end_rss <= warm_rss * (1 + RSS_GROWTH), (warm_rss, end_rss)
    assert end_fds <= warm_fds + FD_SLACK, (warm_fds, end_fds)
    figures.record(
        "soak",
        jobs=len(jobs),
        outcomes=dict(Counter(kind(i) for i in jobs.values())),
        seconds=round(seconds, 1),
        jobs_per_s=round(len(jobs) / seconds, 2),
        rss_after_warmup_mb=round(warm_rss / 2**20, 1),
        rss_end_mb=round(end_rss / 2**20, 1),
        rss_growth=round(end_rss / warm_rss - 1, 3),
        fds_after_warmup=warm_fds,
        fds_end=end_fds,
        deleted=len(deleted),
    )


def list_all(client: httpx.Client) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    params: dict[str, object] = {"limit": 7}
    while True:
        page = client.get("/jobs", params=params).json()
        out.extend(page["items"])
        if not page.get("next_cursor"):
            return out
        params = {"limit": 7, "cursor": page["next_cursor"]}


def check_database(service: Service, kept: set[str]) -> None:
    db = service.data_dir / "mlaas4hep.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = dict(conn.execute("SELECT id, state FROM jobs").fetchall())
    assert set(rows) == kept
    assert set(rows.values()) <= set(TERMINAL), rows


def check_data_dir(service: Service, kept: set[str], jobs: dict[str, int]) -> None:
    root = service.data_dir / "jobs"
    entries = {p.name for p in root.iterdir()}
    assert entries == kept, (sorted(entries - kept), sorted(kept - entries))
    for job_id in kept:
        names = {p.relative_to(root / job_id).as_posix() for p in (root / job_id).rglob("*")}
        assert not [n for n in names if n.endswith(".partial") or "/." in f"/{n}"], names
        assert "input/pipeline.yaml" in names
        logs = [n for n in names if n.startswith("logs/attempt-")]
        assert logs, names
        attempts = [n for n in names if "/" not in n and (root / job_id / n).is_dir()]
        attempts = [n for n in attempts if n.startswith("attempt-")]
        if kind(jobs[job_id]) == "ok":
            assert len(attempts) == 1, names
            assert f"{attempts[0]}/model.onnx" in names
        else:
            assert not attempts, names
