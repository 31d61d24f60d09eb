"""MLflow export against a real ``mlflow server`` (SQLite backend, artifacts proxied) on
127.0.0.1, read back with the MLflow client: ``mlaas4hep run --mlflow``, ``mlaas4hep
mlflow-export``, an unreachable server (the run still succeeds), a service job exported
by the executor after it succeeded (its hostile output read through the intake checks).

The server starts once for the module, in the background, while the first run trains.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlaas4hep.config import MLAAS4HEP_ARGV, Settings
from mlaas4hep.data.samples import write_sample

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "jobs"))
from jobs_helpers import permissive, submit_as

pytest.importorskip("mlflow.server", reason="the test server needs mlflow (the dev extra)")
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).parents[2] / "examples" / "tth-vs-qcd.yaml"
EPOCHS = 3
SERVER_START_S = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MlflowServer:
    """``mlflow server`` in its own process group; ``uri`` waits until it answers."""

    def __init__(self, base: Path) -> None:
        self.port = free_port()
        self.log = (base / "server.log").open("wb")
        mlflow = Path(sys.executable).with_name("mlflow")
        argv = [
            str(mlflow), "server",
            "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}",
            "--artifacts-destination", str(base / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        # No job runner: it is not needed to log runs and doubles the start-up time.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            argv, cwd=base, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self._ready = False
        self.log_path = base / "server.log"

    @property
    def uri(self) -> str:
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + SERVER_START_S
        while not self._ready:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {self.log_path.read_text()[-3000:]}")
            try:
                health = f"{url}/health"  # http on loopback, ours
                with urllib.request.urlopen(health, timeout=2) as answer:  # noqa: S310
                    self._ready = answer.status == 200
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mlflow server not up in {SERVER_START_S} s")
                time.sleep(0.3)
        return url

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    started = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ttH-vs-QCD example on a few thousand generated events, three small epochs."""
    base = tmp_path_factory.mktemp("mlflow-spec")
    write_sample(base / "signal.root", "signal", 1500, seed=1)
    write_sample(base / "background.root", "background", 1500, seed=2)
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["data"]["datasets"][0]["files"] = [str(base / "signal.root")]
    spec["data"]["datasets"][1]["files"] = [str(base / "background.root")]
    spec["data"]["step_size"] = 2000
    spec["model"]["hidden"] = [16]
    spec["train"].update(epochs=EPOCHS, batch_size=256, device="cpu", early_stopping=None)
    path = base / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def mlaas4hep(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MLAAS4HEP_ARGV, *args], capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


Ran = tuple[Path, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def runs(
    spec_file: Path, server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Ran]:
    """Two runs of the spec, side by side: ``unreachable`` exports to a closed port (it
    starts with the server), ``tracked`` to the real server (it starts once that is up)."""
    base = tmp_path_factory.mktemp("runs")
    dead = f"http://127.0.0.1:{free_port()}"
    unreachable = start("run", str(spec_file), "--out", str(base / "unreachable"), "--mlflow", dead)
    tracked = start("run", str(spec_file), "--out", str(base / "tracked"), "--progress-json",
                    "--mlflow", env={"MLFLOW_TRACKING_URI": server.uri})  # fmt: skip
    return {
        "unreachable": (base / "unreachable", finish(unreachable)),
        "tracked": (base / "tracked", finish(tracked)),
    }


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*MLAAS4HEP_ARGV, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_run(client: MlflowClient, run_id: str, bundle: Path) -> None:
    """The run holds the bundle's params, per-epoch history, final metrics and files."""
    metrics = read_json(bundle / "metrics.json")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.kind"] == "mlp"
    assert params["model.hidden"] == "[16]"
    assert params["train.epochs"] == str(EPOCHS)
    assert params["preprocess.normalize"] == "standard"
    assert params["preprocess.define.HT"] == "sum(Jet_pt)"
    history = metrics["history"]
    for key in ("train_loss", "val_loss", "val_auc"):
        logged = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [m.step for m in logged] == [row["epoch"] for row in history]
        assert [m.step for m in logged] == list(range(1, len(history) + 1))
        assert [m.value for m in logged] == pytest.approx([row[key] for row in history])
    final = run.data.metrics
    for key in ("loss", "accuracy", "auc"):
        assert final[f"test_{key}"] == pytest.approx(metrics["test"][key])
    assert final["training_epochs_run"] == metrics["training"]["epochs_run"]
    tags = run.data.tags
    assert tags["mlaas4hep.version"]
    assert tags["mlaas4hep.spec_hash"] == read_json(bundle / "metadata.json")["spec_hash"]
    assert tags["mlaas4hep.model_sha256"] == sha256(bundle / "model.onnx")
    assert tags["mlflow.note.content"].startswith((bundle / "README.md").read_text()[:40])
    root = {f.path for f in client.list_artifacts(run_id)}
    assert {"model.onnx", "spec.yaml", "README.md", "metrics.json", "features.json"} <= root
    plots = {f.path for f in client.list_artifacts(run_id, "plots")}
    assert {"plots/roc.png", "plots/history.png", "plots/scores.png"} <= plots
    local = Path(client.download_artifacts(run_id, "model.onnx", str(bundle.parent)))
    assert local.read_bytes() == (bundle / "model.onnx").read_bytes()


def test_an_unreachable_server_leaves_the_run_successful_with_a_warning(
    runs: dict[str, Ran],
) -> None:
    out, done = runs["unreachable"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[mlflow] warning: the export to MLflow failed: cannot reach" in done.stderr
    assert f"mlaas4hep mlflow-export {out}" in done.stderr
    assert (out / "model.onnx").is_file()
    marker = read_json(out / "mlflow.json")
    assert marker["ok"] is False
    assert "cannot reach the MLflow tracking server" in marker["error"]


def test_mlflow_export_of_an_existing_bundle(runs: dict[str, Ran], server: MlflowServer) -> None:
    out, _ = runs["unreachable"]
    uri = server.uri
    done = mlaas4hep("mlflow-export", str(out), "--tracking-uri", uri, "--experiment", "exported",
                     "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["ok"] is True
    assert result["reused"] is False
    assert result["experiment"] == "exported"
    client = MlflowClient(tracking_uri=uri)
    check_run(client, result["run_id"], out)
    assert result["run_url"].endswith(f"/runs/{result['run_id']}")
    assert read_json(out / "mlflow.json")["run_id"] == result["run_id"]
    # The same bundle again: the run is found, no second one is made.
    again = mlaas4hep("mlflow-export", str(out), "--experiment", "exported", "--json",
                      env={"MLFLOW_TRACKING_URI": uri})  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["run_id"] == result["run_id"]
    assert json.loads(again.stdout)["reused"] is True
    experiment = client.get_experiment_by_name("exported")
    assert experiment is not None
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_mlflow_export_errors_are_one_line(tmp_path: Path, server: MlflowServer) -> None:
    done = mlaas4hep("mlflow-export", str(tmp_path / "nothing"), "--tracking-uri", server.uri)
    assert done.returncode == 2
    assert "is not a complete mlaas4hep bundle" in done.stderr
    assert not (tmp_path / "nothing").exists()  # no marker directory made for a typo
    unset = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [*MLAAS4HEP_ARGV, "mlflow-export", str(tmp_path)], capture_output=True, text=True,
        env=unset, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no MLflow tracking URI" in done.stderr


def test_run_with_mlflow_exports_the_run(runs: dict[str, Ran], server: MlflowServer) -> None:
    out, done = runs["tracked"]
    uri = server.uri
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[mlflow] exported as http://127.0.0.1" in done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]  # stdout stays JSON lines
    assert lines[-1]["phase"] == "done"
    marker = read_json(out / "mlflow.json")
    assert marker["ok"] is True
    assert marker["experiment"] == "ttH-vs-QCD"  # the spec's name
    client = MlflowClient(tracking_uri=uri)
    check_run(client, marker["run_id"], out)
    assert client.get_run(marker["run_id"]).info.run_name.startswith("ttH-vs-QCD-")


COPY_JOB = """
import shutil, sys
from pathlib import Path
bundle, out = Path(sys.argv[1]), Path(sys.argv[sys.argv.index("--out") + 1])
for name in ("model.onnx", "spec.yaml", "README.md", "metrics.json", "features.json",
             "metadata.json"):
    shutil.copyfile(bundle / name, out / name)
shutil.copytree(bundle / "plots", out / "plots")
(out / "plots" / "secret.png").symlink_to("/etc/hostname")   # hostile: must not travel
print('{"phase": "done", "events": 0, "elapsed_s": 0.0}', flush=True)
"""


def test_service_job_is_exported_after_it_succeeded(
    runs: dict[str, Ran], server: MlflowServer, tmp_path: Path
) -> None:
    from mlaas4hep.jobs.datasets import DatasetStore
    from mlaas4hep.jobs.executor_local import LocalExecutor
    from mlaas4hep.jobs.layout import job_paths
    from mlaas4hep.jobs.service import JobService
    from mlaas4hep.jobs.states import State
    from mlaas4hep.jobs.store import JobStore

    bundle, _ = runs["unreachable"]
    script = tmp_path / "copy_job.py"
    script.write_text(COPY_JOB)
    settings = Settings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "executor": {
                "workers": 1, "sandbox": "none", "poll_s": 0.05,
                "job_command": [sys.executable, str(script), str(bundle)],
            },
            "tracking": {"mlflow_uri": server.uri, "mlflow_experiment": "jobs-{owner}"},
        }
    )  # fmt: skip
    store = JobStore(settings.db_url)
    service = JobService(store, DatasetStore(store, settings), settings, permissive)
    job, _ = submit_as(service, "alice", {"name": "copied"})
    done = LocalExecutor(store, settings).run_once()
    assert done is not None
    assert done.state is State.SUCCEEDED, done.reason
    result = job_paths(settings.data_dir, done.id).root / str(done.result_dir)
    marker = read_json(result / "mlflow.json")
    assert marker["ok"] is True, marker
    assert marker["experiment"] == "jobs-alice"
    assert any("secret.png" in note for note in marker["notes"])
    client = MlflowClient(tracking_uri=server.uri)
    run = client.get_run(marker["run_id"])
    assert run.data.tags["mlaas4hep.job_id"] == done.id
    assert run.data.tags["mlaas4hep.owner"] == "alice"
    assert run.info.run_name == f"ttH-vs-QCD-{done.id}"
    plots = {f.path for f in client.list_artifacts(marker["run_id"], "plots")}
    assert "plots/roc.png" in plots
    assert "plots/secret.png" not in plots
    log = job_paths(settings.data_dir, done.id).log(done.attempt).read_text()
    assert "[mlaas4hep] exported to MLflow: http://127.0.0.1" in log
    assert job.id == done.id
