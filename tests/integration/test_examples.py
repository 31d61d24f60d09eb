"""Every example in ``examples/`` runs end to end through ``mlaas4hep run``.

Each spec is run as shipped except for a small ``max_events``/``epochs`` override (and fewer
trees for XGBoost), from a working directory laid out like the repository root: ``data/``
holds generated sample files and ``examples/`` a copy of the examples, so the relative paths
in the specs (``data/signal.root``, ``examples/user_torch_model.py``) resolve as they do
for a user. The converted legacy spec is checked to be what ``convert-legacy`` makes of the
old inputs next to it.
"""

from __future__ import annotations

import json
import shutil
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jobs_server import JobServer

from mlaas4hep.cli import main
from mlaas4hep.data.samples import write_sample, write_sample_set
from mlaas4hep.spec import load_spec
from mlaas4hep.train.export import PARITY_TOLERANCE

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LEGACY = EXAMPLES / "legacy"
SPECS = sorted(
    [p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.glob("*.yaml")] + ["legacy/pipeline.yaml"]
)
TERMINAL = ("succeeded", "failed", "cancelled")
EVENTS_PER_FILE = 1500
MAX_EVENTS = 1200  # per dataset
EPOCHS = 2
# What the legacy spec was converted with (a fixed padding length keeps it reproducible).
CONVERT_ARGS = [
    "convert-legacy",
    "--params", "examples/legacy/params.json",
    "--preproc", "examples/legacy/preproc.json",
    "--files", "examples/legacy/files.txt",
    "--labels", "examples/legacy/labels.txt",
    "--model", "examples/legacy/model.py",
    "--length", "6",
]  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory shaped like the repository root: ``data/`` samples and ``examples/``."""
    root = tmp_path_factory.mktemp("examples-root")
    write_sample_set(root / "data", EVENTS_PER_FILE, seed=21)
    write_sample(root / "data" / "signal_2.root", "signal", EVENTS_PER_FILE, seed=23)
    shutil.copytree(EXAMPLES, root / "examples")
    return root


def small(doc: dict[str, Any]) -> dict[str, Any]:
    """The example with a small event count and few epochs, otherwise unchanged."""
    doc["data"]["max_events"] = MAX_EVENTS
    doc["data"]["step_size"] = min(int(doc["data"].get("step_size") or 100_000), 1000)
    doc.setdefault("train", {}).update(epochs=EPOCHS, device="cpu")
    if doc.get("model", {}).get("kind") == "xgboost":
        doc["model"]["n_estimators"] = 20
    return doc


@pytest.mark.parametrize("name", SPECS)
def test_example_runs_end_to_end(
    name: str, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load((EXAMPLES / name).read_text())
    # find_spec, not an import: importing keras before mlaas4hep picks its torch backend
    # would try TensorFlow.
    if doc.get("model", {}).get("framework") == "keras" and find_spec("keras") is None:
        pytest.skip("Keras examples need keras (the train extra installs it)")
    monkeypatch.chdir(workdir)
    spec = workdir / "specs" / name
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(yaml.safe_dump(small(doc), sort_keys=False))
    out = workdir / "runs" / name.removesuffix(".yaml")
    argv = ["run", str(spec), "--out", str(out), "--progress-json"]
    if doc.get("model", {}).get("kind") == "python":
        argv.append("--allow-user-code")

    assert main(argv) == 0, capsys.readouterr().err[-3000:]

    done = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert done["phase"] == "done"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["onnx"]["max_abs_diff"] < PARITY_TOLERANCE
    assert metrics["training"]["epochs_run"] >= 1
    for artifact in ("model.onnx", "spec.yaml", "features.json", "README.md"):
        assert (out / artifact).is_file(), artifact
    assert (out / "plots" / "roc.png").is_file() or "rmse" in metrics["test"]


def test_legacy_spec_is_what_convert_legacy_makes(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(workdir)
    assert main([*CONVERT_ARGS, "-o", "converted.yaml"]) == 0, capsys.readouterr().err
    # Compared as validated specs: fields added to the spec later get their defaults in both.
    converted = load_spec(workdir / "converted.yaml").model_dump(mode="json")
    assert converted == load_spec(LEGACY / "pipeline.yaml").model_dump(mode="json")
    assert converted["model"] == {
        "kind": "python",
        "module": "examples/legacy/model.py",
        "function": "model",
        "framework": "keras",
    }


def test_examples_readme_lists_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    shipped = [*SPECS, "user_torch_model.py", "keras_model.py"]
    missing = [name for name in shipped if name not in readme]
    assert not missing, f"examples/README.md does not mention {missing}"


def test_user_code_example_runs_through_the_service(workdir: Path, tmp_path: Path) -> None:
    """The user PyTorch example as a user submits it: datasets uploaded, the spec and its
    module file in one multipart request (``mlaas4hep submit SPEC -F user_torch_model.py``)."""
    if shutil.which("bwrap") is None:
        pytest.skip("user code runs only in the sandbox by default; install 'bubblewrap'")
    srv = JobServer(tmp_path / "srv", workers=1, fake=False).start()
    try:
        headers = {"Authorization": f"Bearer {srv.token('alice')}"}
        with httpx.Client(base_url=f"{srv.url}/api/v1", headers=headers, timeout=60) as client:
            for name in ("signal.root", "background.root"):
                body = (workdir / "data" / name).read_bytes()
                r = client.post("/datasets", params={"name": name}, content=body)
                assert r.status_code == 201, r.text
            doc = small(yaml.safe_load((EXAMPLES / "user-torch-model.yaml").read_text()))
            for entry, name in zip(doc["data"]["datasets"], ("signal", "background"), strict=True):
                entry["files"] = [f"dataset:{name}.root"]
            doc["deploy"] = None  # publishing needs a storage scope this test does not mint
            module = (EXAMPLES / "user_torch_model.py").read_bytes()
            files = [
                ("spec", ("pipeline.yaml", yaml.safe_dump(doc), "application/yaml")),
                ("files", ("user_torch_model.py", module, "text/x-python")),
            ]
            r = client.post("/jobs", files=files)
            assert r.status_code == 201, r.text
            job = wait_for(client, r.json()["id"])
            log = client.get(f"/jobs/{job['id']}/logs").text
            assert job["state"] == "succeeded", (job["reason"], log[-2000:])
            names = {a["name"] for a in client.get(f"/jobs/{job['id']}/artifacts").json()["items"]}
            assert "model.onnx" in names
    finally:
        srv.stop()


def wait_for(client: httpx.Client, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/jobs/{job_id}").json())["state"] not in TERMINAL:
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    return dict(job)
