"""A k-folded MLP (``train.folds``) served over V2 by the real inference server, driven by
the unmodified ``tritonclient``: without a ``fold`` input every row gets the mean of the
k models (real data); with each event's fold (``Model.event_folds`` of its identifiers)
the model that did not train on it, as ``mlaas4hep apply`` scores it. The same on the raw
event columns route. Or with the identifiers themselves (run, luminosityBlock, event),
over HTTP and gRPC: the service computes the folds with the training's hash and seed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as triton
import uproot
import yaml
from conftest_serve import ALICE, authenticate, own, run_server
from test_folds import folds_spec
from tritonclient.utils import InferenceServerException

from mlaas4hep.apply import Model
from mlaas4hep.apply.serving import load_raw_preprocessor
from mlaas4hep.artifact import PUBLISHED_FILES
from mlaas4hep.cli import main
from mlaas4hep.data.samples import write_sample
from mlaas4hep.loopback import free_port
from mlaas4hep.serve.app import create_inference_app
from mlaas4hep.serve.samples import write_sample_model
from mlaas4hep.serve.settings import InferenceSettings

NAME, EVENTS, K = "foldmlp", 600, 2
FEATURES = ["MET_pt", "nJet"]
IDS = ["run", "luminosityBlock", "event"]
PLAIN = "plainmlp"  # a model of one MLP, not k-folded
DATATYPES = {np.float32: "FP32", np.float64: "FP64", np.int64: "INT64", np.int32: "INT32"}
DATATYPES |= {np.uint32: "UINT32", np.uint64: "UINT64"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("fold-serve")
    write_sample(tmp / "signal.root", "signal", EVENTS, seed=0)
    write_sample(tmp / "background.root", "background", EVENTS, seed=0)
    spec = folds_spec(tmp, {"kind": "mlp", "hidden": [8]}, NAME)
    spec["preprocess"]["features"]["scalars"] = FEATURES
    spec["preprocess"]["normalize"] = "standard"
    spec["train"]["folds"] = K
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["run", str(tmp / "spec.yaml"), "--out", str(tmp / "out")]) == 0
    return tmp / "out"


@pytest.fixture(scope="module")
def events(bundle: Path) -> dict[str, np.ndarray]:
    source = bundle.parent / "signal.root"
    with uproot.open(source) as f:
        names = ["run", "luminosityBlock", "event", *FEATURES]
        return {k: np.asarray(v) for k, v in f["Events"].arrays(names, library="np").items()}


@pytest.fixture(scope="module")
def grpc_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory, grpc_port: int) -> Iterator[str]:
    repo = tmp_path_factory.mktemp("fold-repo")
    version = repo / NAME / "1"
    version.mkdir(parents=True)
    for name in PUBLISHED_FILES:
        shutil.copy(bundle / name, version / name)
    own(repo, NAME)
    write_sample_model(repo / PLAIN / "1", (len(FEATURES), 4, 1), seed=1)
    own(repo, PLAIN)
    settings = InferenceSettings(repository=repo, poll_interval_s=0.2, grpc_port=grpc_port)
    app = create_inference_app(
        settings, authenticate=authenticate, raw_loader=load_raw_preprocessor
    )
    with run_server(app) as url:
        yield url.removeprefix("http://")


@pytest.fixture
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server)
    yield c
    c.close()


@pytest.fixture
def grpc_client(server: str, grpc_port: int) -> Iterator[tgrpc.InferenceServerClient]:
    c = tgrpc.InferenceServerClient(url=f"127.0.0.1:{grpc_port}")
    yield c
    c.close()


def infer(
    client: triton.InferenceServerClient | tgrpc.InferenceServerClient,
    tensors: dict[str, np.ndarray],
    model: str = NAME,
) -> np.ndarray:
    """The first score column of *model* for *tensors*, over HTTP or gRPC."""
    grpc = isinstance(client, tgrpc.InferenceServerClient)
    inputs = []
    for name, array in tensors.items():
        datatype = DATATYPES[array.dtype.type]
        tensor = (tgrpc if grpc else triton).InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    headers = {"authorization": ALICE["Authorization"]} if grpc else {**ALICE}
    result = client.infer(model, inputs, headers=headers)
    return np.asarray(result.as_numpy("scores"))[:, 0]


def test_metadata_names_the_optional_fold_input(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata(NAME, headers={**ALICE})
    assert [t["name"] for t in meta["inputs"]] == ["features"]  # fold is optional
    assert meta["parameters"]["folds"] == K
    optional = meta["parameters"]["optional_inputs"]
    assert [t["name"] for t in optional] == ["fold", *IDS]  # or the identifiers
    assert all(t["optional"] for t in optional)


def test_v2_with_and_without_identifiers(
    client: triton.InferenceServerClient, bundle: Path, events: dict[str, np.ndarray]
) -> None:
    X = np.stack([events[f] for f in FEATURES], 1).astype(np.float32)
    oof_model, mean_model = Model.load(bundle), Model.load(bundle, folds="average")
    fold = oof_model.event_folds(events)
    assert set(np.unique(fold)) == set(range(K))
    # no identifiers: the mean of the k models (real data)
    np.testing.assert_allclose(infer(client, {"features": X}), mean_model.predict(events), atol=0)
    minus = np.full(len(X), -1, np.int64)
    np.testing.assert_allclose(infer(client, {"features": X, "fold": minus}),
                               mean_model.predict(events), atol=0)  # fmt: skip
    # each event's fold: the model that did not see it, as `mlaas4hep apply` scores it
    oof = infer(client, {"features": X, "fold": fold})
    np.testing.assert_allclose(oof, oof_model.predict(events), atol=0)
    assert not np.allclose(oof, mean_model.predict(events))
    # raw event columns: the same choice
    raw = {"MET_pt": events["MET_pt"], "nJet": events["nJet"]}
    np.testing.assert_allclose(infer(client, raw), mean_model.predict(events), atol=1e-7)
    np.testing.assert_allclose(infer(client, {**raw, "fold": fold}), oof, atol=1e-7)


def test_a_bad_fold_is_400(client: triton.InferenceServerClient) -> None:
    X = np.zeros((3, len(FEATURES)), np.float32)
    with pytest.raises(InferenceServerException, match=r"use 0\.\.1"):
        infer(client, {"features": X, "fold": np.array([0, 1, K], np.int64)})
    with pytest.raises(InferenceServerException, match="INT64"):
        infer(client, {"features": X, "fold": np.array([0, 1, 1], np.int32)})
    with pytest.raises(InferenceServerException, match="rows"):
        infer(client, {"features": X, "fold": np.array([0, 1], np.int64)})


def test_tfaas_gets_the_mean(server: str, bundle: Path, events: dict[str, np.ndarray]) -> None:
    import httpx

    row = [float(events[f][0]) for f in FEATURES]
    body = {"keys": FEATURES, "values": row, "model": NAME}
    response = httpx.post(f"http://{server}/json", json=body, headers=ALICE)
    assert response.status_code == 200, response.text
    mean = Model.load(bundle, folds="average").run_onnx(np.array([row], np.float32))
    np.testing.assert_allclose(np.ravel(response.json()), mean[:, 0], rtol=1e-6)


def test_identifiers_give_the_out_of_fold_scores_over_http_and_grpc(
    client: triton.InferenceServerClient,
    grpc_client: tgrpc.InferenceServerClient,
    bundle: Path,
    events: dict[str, np.ndarray],
) -> None:
    X = np.stack([events[f] for f in FEATURES], 1).astype(np.float32)
    ids = {n: events[n] for n in IDS}  # as the ROOT branches are: UINT32, UINT32, UINT64
    assert [ids[n].dtype for n in IDS] == [np.uint32, np.uint32, np.uint64]
    oof_model = Model.load(bundle)
    applied = oof_model.predict(events)  # `mlaas4hep apply`'s out-of-fold scores
    with_fold = infer(client, {"features": X, "fold": oof_model.event_folds(events)})
    np.testing.assert_allclose(with_fold, applied, atol=0)
    assert not np.allclose(with_fold, infer(client, {"features": X}))  # not the mean
    for each in (client, grpc_client):
        np.testing.assert_allclose(infer(each, {"features": X, **ids}), with_fold, atol=0)
    # any integer datatype that holds the values: the same folds
    wide = {n: v.astype(np.int64) for n, v in ids.items()}
    np.testing.assert_allclose(infer(grpc_client, {"features": X, **wide}), with_fold, atol=0)
    # raw event columns plus the identifiers
    raw = {"MET_pt": events["MET_pt"], "nJet": events["nJet"]}
    np.testing.assert_allclose(infer(client, {**raw, **ids}), applied, atol=1e-7)
    np.testing.assert_allclose(infer(grpc_client, {**raw, **ids}), applied, atol=1e-7)


def test_identifiers_that_cannot_say_the_folds_are_400(
    client: triton.InferenceServerClient,
    grpc_client: tgrpc.InferenceServerClient,
    events: dict[str, np.ndarray],
) -> None:
    n = 4
    X = np.zeros((n, len(FEATURES)), np.float32)
    ids = {k: events[k][:n] for k in IDS}
    fold = np.zeros(n, np.int64)
    for tensors, match in (
        ({"run": ids["run"]}, r"not \['luminosityBlock', 'event'\]"),
        ({**ids, "fold": fold}, "send one of them"),
        ({**ids, "event": ids["event"].astype(np.float64)}, "1-D integer tensor"),
        ({**ids, "run": ids["run"][:2]}, "one length"),
        ({**ids, "run": ids["run"].reshape(2, 2)}, r"UINT32 \[2, 2\]"),
    ):
        with pytest.raises(InferenceServerException, match=match) as info:
            infer(client, {"features": X, **tensors})
        assert info.value.status() == "400"
    with pytest.raises(InferenceServerException, match="3 rows, the features 4"):
        infer(client, {"features": X, **{k: v[:3] for k, v in ids.items()}})
    with pytest.raises(InferenceServerException, match="not k-folded") as info:
        infer(grpc_client, {"features": X, **ids}, model=PLAIN)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match="not k-folded"):
        infer(client, {"features": X, **ids}, model=PLAIN)
