"""Issue 16, item 6: raw NanoAOD columns on the V2 route of a real ``mlaas4hep serve``.

A model trained by ``mlaas4hep run`` on generated samples is put into the repository of a
real ``mlaas4hep serve --only inference`` process, owned by alice. The unmodified
``tritonclient.http`` discovers the raw inputs in the model metadata, sends the branches
of N events read with uproot (flat ones as tensors, jagged ones as values plus the
``nJet``/``nMuon`` counts) and gets the scores ``Model.predict`` computes on those events.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import uproot
from pg import wait_for_port
from test_apply import spec_dict, train
from tritonclient.utils import InferenceServerException

from mlaas4hep.apply import Model
from mlaas4hep.artifact import PUBLISHED_FILES
from mlaas4hep.auth.local_issuer import LOCAL_ISSUER, LocalIssuer
from mlaas4hep.auth.policy import INFERENCE_SCOPE, model_scope
from mlaas4hep.config import MLAAS4HEP_ARGV
from mlaas4hep.data.samples import write_sample
from mlaas4hep.loopback import free_port
from mlaas4hep.serve.ownership import ModelOwners

NAME, OLD, EVENTS, N = "tthraw", "tthold", 1500, 300


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    samples = tmp_path_factory.mktemp("raw-samples")
    write_sample(samples / "signal.root", "signal", EVENTS, seed=5)
    write_sample(samples / "background.root", "background", EVENTS, seed=6)
    datasets = [
        {"name": "ttH", "files": [str(samples / "signal.root")], "label": 1},
        {"name": "QCD", "files": [str(samples / "background.root")], "label": 0},
    ]
    model = {"kind": "xgboost", "n_estimators": 10, "max_depth": 3}
    out = train(tmp_path_factory.mktemp("raw-run"), NAME, spec_dict(samples, datasets, model))
    shutil.copy(samples / "signal.root", out / "events.root")  # the file a client reads
    return out


@dataclass(frozen=True)
class Served:
    """A running ``mlaas4hep serve``: its address and alice's and bob's tokens."""

    address: str
    tokens: Mapping[str, str]

    def auth(self, user: str) -> dict[str, str]:
        # a fresh dict each time: tritonclient adds its headers to the one it is given
        return {"Authorization": f"Bearer {self.tokens[user]}"}


@contextmanager
def mlaas4hep_serve(data: Path, *options: str) -> Iterator[Served]:
    """Run ``mlaas4hep serve *options`` on *data* (a real process) until the block ends."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS4HEP_")}
    cmd = [*MLAAS4HEP_ARGV, "serve", *options, "--port", str(port), "--data-dir", str(data)]
    with (data.parent / f"serve-{port}.log").open("ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    try:
        wait_for_port(port)
        issuer = LocalIssuer(data)
        scopes = (INFERENCE_SCOPE, model_scope("read", NAME), model_scope("read", OLD))
        yield Served(f"127.0.0.1:{port}", {u: issuer.mint(u, scopes) for u in ("alice", "bob")})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def data_dir(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A service data directory whose repository holds the bundle, owned by alice."""
    data = tmp_path_factory.mktemp("raw-serve")
    version = data / "models" / NAME / "1"
    version.mkdir(parents=True)
    for name in PUBLISHED_FILES:
        shutil.copy(bundle / name, version / name)
    # the same model with a format-1 features.json: no branch types, so no raw columns
    old = data / "models" / OLD / "1"
    shutil.copytree(version, old)
    doc = json.loads((old / "features.json").read_text())
    for key in ("format", "branches", "identifiers"):
        doc.pop(key)
    (old / "features.json").write_text(json.dumps(doc))
    for name in (NAME, OLD):
        ModelOwners(data / "models").claim(name, f"{LOCAL_ISSUER}#alice", "alice")
    return data


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[Served]:
    with mlaas4hep_serve(data_dir, "--only", "inference") as served:
        yield served


@pytest.fixture
def client(server: Served) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server.address)
    yield c
    c.close()


@pytest.fixture(scope="module")
def metadata(server: Served) -> dict[str, Any]:
    c = triton.InferenceServerClient(url=server.address)
    try:
        meta: dict[str, Any] = c.get_model_metadata(NAME, headers=server.auth("alice"))
    finally:
        c.close()
    return meta


def columns(bundle: Path, metadata: dict[str, Any]) -> dict[str, np.ndarray]:
    """The first N events of every raw input the metadata lists, read with uproot."""
    names = [t["name"] for t in metadata["parameters"]["raw_inputs"]]
    with uproot.open(bundle / "events.root") as f:
        arrays = f["Events"].arrays(names, entry_stop=N)
    return {
        n: np.asarray(ak.flatten(arrays[n]) if arrays[n].ndim > 1 else arrays[n]) for n in names
    }


def tensors(cols: dict[str, np.ndarray], binary: bool = True) -> list[triton.InferInput]:
    out = []
    for name, values in cols.items():
        tensor = triton.InferInput(
            name, list(values.shape), triton.np_to_triton_dtype(values.dtype)
        )
        tensor.set_data_from_numpy(values, binary_data=binary)
        out.append(tensor)
    return out


def test_metadata_lists_the_raw_inputs(metadata: dict[str, Any]) -> None:
    assert metadata["inputs"][0]["name"] == "features"  # the feature tensor is unchanged
    raw = {t["name"]: t for t in metadata["parameters"]["raw_inputs"]}
    assert raw["Jet_pt"] == {
        "name": "Jet_pt",
        "datatype": "FP32",
        "shape": [-1],
        "parameters": {"counts": "nJet"},
    }
    assert raw["MET_pt"]["shape"] == [-1]
    assert "parameters" not in raw["MET_pt"]
    assert raw["nJet"]["datatype"].startswith(("INT", "UINT"))  # a counter and an input
    assert raw["nJet"]["parameters"] == {"counts_of": "Jet"}
    assert raw["nMuon"] == {  # counts only: any integer datatype
        "name": "nMuon",
        "datatype": "INT64",
        "shape": [-1],
        "parameters": {"counts_of": "Muon"},
    }
    assert "event" not in raw  # identifiers are not needed to score
    assert metadata["parameters"]["raw_outputs"] == [
        {"name": "scores", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "pass", "datatype": "BOOL", "shape": [-1]},
    ]


@pytest.mark.parametrize("binary", [True, False])
def test_raw_columns_score_as_model_predict(
    server: Served,
    client: triton.InferenceServerClient,
    bundle: Path,
    metadata: dict[str, Any],
    binary: bool,
) -> None:
    cols = columns(bundle, metadata)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("scores", "pass")]
    result = client.infer(
        NAME, tensors(cols, binary), outputs=outputs, headers=server.auth("alice")
    )
    scores, passed = result.as_numpy("scores"), result.as_numpy("pass")
    model = Model.load(bundle)
    with uproot.open(bundle / "events.root") as f:
        tree = f["Events"]
        events = tree.arrays(model.branches(tree.keys()), entry_stop=N)
    expected = model.predict(events)
    assert scores.shape == (N, 1)
    assert passed.dtype == np.bool_
    np.testing.assert_array_equal(passed, model.passes(events))
    assert 0 < passed.sum() < N
    np.testing.assert_allclose(scores[:, 0], expected, rtol=0, atol=1e-6)  # NaN where failing


def test_feature_tensor_path_still_works(
    server: Served, client: triton.InferenceServerClient, metadata: dict[str, Any]
) -> None:
    width = metadata["inputs"][0]["shape"][1]
    x = np.zeros((3, width), np.float32)
    tensor = triton.InferInput("features", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(NAME, [tensor], headers=server.auth("alice"))
    assert result.as_numpy("scores").shape == (3, 1)


def test_missing_column_is_400(
    server: Served, client: triton.InferenceServerClient, bundle: Path, metadata: dict[str, Any]
) -> None:
    cols = columns(bundle, metadata)
    del cols["Jet_eta"]
    with pytest.raises(InferenceServerException) as info:
        client.infer(NAME, tensors(cols), headers=server.auth("alice"))
    assert info.value.status() == "400"
    assert "missing ['Jet_eta']" in info.value.message()


def test_mismatched_counts_are_400(
    server: Served, client: triton.InferenceServerClient, bundle: Path, metadata: dict[str, Any]
) -> None:
    cols = columns(bundle, metadata)
    cols["Jet_pt"] = cols["Jet_pt"][:-1]
    with pytest.raises(InferenceServerException) as info:
        client.infer(NAME, tensors(cols), headers=server.auth("alice"))
    assert info.value.status() == "400"
    assert "'Jet_pt' has" in info.value.message()
    assert "'nJet' counts" in info.value.message()
    cols = columns(bundle, metadata)
    cols["MET_pt"] = cols["MET_pt"][:-1]
    with pytest.raises(InferenceServerException, match="one value per event") as info:
        client.infer(NAME, tensors(cols), headers=server.auth("alice"))
    assert info.value.status() == "400"


def test_wrong_datatype_is_400(server: Served, metadata: dict[str, Any], bundle: Path) -> None:
    cols = columns(bundle, metadata)
    cols["MET_pt"] = cols["MET_pt"].astype(np.float64)
    inputs = [
        {
            "name": n,
            "shape": list(v.shape),
            "datatype": triton.np_to_triton_dtype(v.dtype),
            "data": v.tolist(),
        }
        for n, v in cols.items()
    ]
    url = f"http://{server.address}/v2/models/{NAME}/infer"
    response = httpx.post(url, json={"inputs": inputs}, headers=server.auth("alice"))
    assert response.status_code == 400
    assert "'MET_pt' must be FP32, the request says FP64" in response.json()["error"]


def test_raw_infer_checks_ownership(
    server: Served, client: triton.InferenceServerClient, bundle: Path, metadata: dict[str, Any]
) -> None:
    cols = columns(bundle, metadata)
    with pytest.raises(InferenceServerException) as info:
        client.infer(NAME, tensors(cols), headers=server.auth("bob"))
    assert info.value.status() == "403"


def test_bundle_without_branch_types_says_why(
    server: Served, client: triton.InferenceServerClient, bundle: Path, metadata: dict[str, Any]
) -> None:
    old = client.get_model_metadata(OLD, headers=server.auth("alice"))
    assert "raw_inputs" not in old["parameters"]
    with pytest.raises(InferenceServerException) as info:
        client.infer(OLD, tensors(columns(bundle, metadata)), headers=server.auth("alice"))
    assert info.value.status() == "400"
    message = info.value.message()
    assert "cannot take raw event columns" in message
    assert "re-run `mlaas4hep run`" in message
    assert f"{OLD} version 1" in message
    assert "/models/" not in message  # no server path
    x = np.zeros((2, old["inputs"][0]["shape"][1]), np.float32)
    tensor = triton.InferInput("features", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    assert client.infer(OLD, [tensor], headers=server.auth("alice")).as_numpy("scores").shape == (
        2,
        1,
    )


def test_the_full_service_serves_raw_columns_too(
    data_dir: Path, bundle: Path, metadata: dict[str, Any]
) -> None:
    # `mlaas4hep serve` (job API + inference, api/app.py) wires the same preprocessing
    with mlaas4hep_serve(data_dir, "--workers", "0") as full:
        client = triton.InferenceServerClient(url=full.address)
        try:
            meta = client.get_model_metadata(NAME, headers=full.auth("alice"))
            assert meta["parameters"]["raw_inputs"] == metadata["parameters"]["raw_inputs"]
            result = client.infer(
                NAME, tensors(columns(bundle, metadata)), headers=full.auth("alice")
            )
        finally:
            client.close()
    model = Model.load(bundle)
    with uproot.open(bundle / "events.root") as f:
        events = f["Events"].arrays(model.branches(f["Events"].keys()), entry_stop=N)
    np.testing.assert_allclose(result.as_numpy("scores")[:, 0], model.predict(events), atol=1e-6)
