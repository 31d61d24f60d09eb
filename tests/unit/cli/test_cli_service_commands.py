"""The service commands of the CLI (status, wait, jobs, cancel, download, models) against
the real app: human output, ``--json`` that parses and is alone on stdout, exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import cli_service, publish_sample_model
from fastapi.testclient import TestClient

from mlaas4hep.cli import main

AUTH = {"Authorization": "Bearer token-alice"}


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    publish_sample_model(tmp_path)
    with cli_service(tmp_path, monkeypatch) as tc:
        yield tc


def _submit(tc: TestClient, **fake: object) -> str:
    r = tc.post("/api/v1/jobs", json={"name": "cli-test", "fake": fake}, headers=AUTH)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _json_out(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)  # the whole of stdout is one document


def test_wait_follows_to_the_end_and_says_how_it_ended(
    service: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = _submit(service, steps=3, sleep=0.1)
    assert main(["wait", job_id, "--poll", "0.05"]) == 0
    out = capsys.readouterr().out
    assert f"job {job_id} succeeded" in out
    assert "partial.txt" in out or "artifacts" in out  # where the files are
    assert f"mlaas4hep download {job_id}" in out
    assert "loss" in out  # the final metrics


def test_wait_json_prints_only_the_final_job(
    service: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = _submit(service, steps=2)
    job = _json_out(capsys, "wait", job_id, "--poll", "0.05", "--json")
    assert isinstance(job, dict)
    assert job["id"] == job_id
    assert job["state"] == "succeeded"
    assert job["progress"]["metrics"]["loss"] == pytest.approx(0.5)


def test_wait_exits_1_for_a_failed_job(
    service: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = _submit(service, exit=3, message="boom")
    assert main(["wait", job_id, "--poll", "0.05"]) == 1
    out = capsys.readouterr().out
    assert f"job {job_id} failed" in out
    assert f"mlaas4hep logs {job_id}" in out


def test_status_human_and_json(service: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = _submit(service, steps=2)
    assert main(["wait", job_id, "--poll", "0.05", "--json"]) == 0
    capsys.readouterr()
    assert main(["status", job_id]) == 0
    out = capsys.readouterr().out
    assert job_id in out
    assert "succeeded" in out
    assert "epoch 2/2" in out
    assert "200/200 events" in out
    job = _json_out(capsys, "status", job_id, "--json")
    assert isinstance(job, dict)
    assert job["progress"]["phase"] == "train"


def test_jobs_cancel_and_download_json(
    service: TestClient, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    done = _submit(service, steps=1)
    assert main(["wait", done, "--poll", "0.05", "--json"]) == 0
    capsys.readouterr()
    running = _submit(service, steps=100, sleep=0.2)
    jobs = _json_out(capsys, "jobs", "--json")
    assert isinstance(jobs, list)
    assert {j["id"] for j in jobs} == {done, running}
    cancelled = _json_out(capsys, "cancel", running, "--json")
    assert isinstance(cancelled, dict)
    assert cancelled["id"] == running
    saved = _json_out(capsys, "download", done, "--out", str(tmp_path / "dl"), "--json")
    assert isinstance(saved, list)
    assert {s["name"] for s in saved} >= {"partial.txt"}
    assert all(Path(s["path"]).is_file() for s in saved)
    assert main(["wait", running, "--poll", "0.05", "--json"]) == 1


def test_models_list_and_show(service: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    index = _json_out(capsys, "models", "list", "--json")
    assert index == [{"name": "tiny", "version": "1", "state": "READY", "reason": ""}]
    assert main(["models", "list"]) == 0
    assert "tiny" in capsys.readouterr().out
    meta = _json_out(capsys, "models", "show", "tiny:1", "--json")
    assert isinstance(meta, dict)
    assert meta["parameters"]["feature_names"] == ["f0", "f1", "f2", "f3"]
    assert main(["models", "show", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "features" in out
    assert "f0, f1, f2, f3" in out
    assert "features FP32 [?x4]" in out
    assert main(["models", "show", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_models_rm_asks_and_refuses_without_a_terminal(
    service: TestClient, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["models", "rm", "tiny"]) == 2
    assert "pass --yes" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["models", "rm", "tiny"]) == 1
    assert _json_out(capsys, "models", "list", "--json") != []
    assert _json_out(capsys, "models", "rm", "tiny", "--yes", "--json") == {"deleted": "tiny"}
    assert _json_out(capsys, "models", "list", "--json") == []


def test_submit_wait_follows_and_summarises(
    service: TestClient, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from jobs_helpers import pipeline_doc

    doc = pipeline_doc("cli-submit", steps=2, sleep=0.3)
    for dataset in doc["data"]["datasets"]:  # remote: nothing for submit to upload first
        dataset["files"] = [f"root://eos.test//store/{dataset['name']}.root"]
    spec = tmp_path / "fake.json"
    spec.write_text(json.dumps(doc))
    assert main(["submit", str(spec), "--wait", "--poll", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "submitted job" in out
    assert "running  training  epoch" in out  # one plain line per epoch off a terminal
    assert "metrics: loss 0.5" in out
    assert "succeeded" in out.splitlines()[-1]


def test_live_display_on_a_terminal(service: TestClient) -> None:
    import argparse
    import io

    from rich.console import Console

    from mlaas4hep.cli.client import client_from_args
    from mlaas4hep.cli.follow import follow

    job_id = _submit(service, steps=3, sleep=0.1)
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=80)
    with client_from_args(argparse.Namespace()) as client:
        final = follow(client, job_id, 0.05, console)
    assert final["state"] == "succeeded"
    assert "succeeded" in screen.getvalue()
