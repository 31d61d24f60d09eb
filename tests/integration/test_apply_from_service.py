"""``mlaas4hep apply NAME[:VERSION]`` / ``predict NAME`` / ``Model.load(fetch_model(...))``
against a real ``mlaas4hep serve``: alice publishes a bundle trained by ``mlaas4hep run``
(TFaaS tarball upload), the CLI fetches it (``GET /v2/models/NAME/.../bundle``) and
scores exactly what the local bundle directory scores; bob gets a one-line 403."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uproot
import yaml
from jobs_server import JobServer

from mlaas4hep.apply import Model
from mlaas4hep.artifact import FEATURES_FILE, MODEL_FILE, PUBLISHED_FILES, SPEC_FILE
from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.cli import main
from mlaas4hep.client.models import fetch_model, parse_model_ref
from mlaas4hep.data.samples import write_sample
from mlaas4hep.errors import PermissionDenied, SpecError
from mlaas4hep.loopback import free_port

pytestmark = pytest.mark.slow

NAME = "alice-model"
SCOPES = tuple(f"storage.{a}:/models/{NAME}" for a in ("read", "create", "modify"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("apply-svc")
    sample = write_sample(tmp / "signal.root", "signal", 600, seed=11)
    background = write_sample(tmp / "background.root", "background", 600, seed=12)
    spec = yaml.safe_load(Path("examples/tth-vs-qcd.yaml").read_text())
    spec["name"] = spec["deploy"]["name"] = "tth"
    spec["data"]["datasets"] = [
        {"name": "ttH", "files": [str(sample)], "label": 1},
        {"name": "QCD", "files": [str(background)], "label": 0},
    ]
    spec["data"]["step_size"] = 300
    spec["model"] = {"kind": "xgboost", "n_estimators": 5, "max_depth": 2}
    spec["train"] = {"epochs": 1, "batch_size": 256, "device": "cpu", "seed": 1}
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    bundle = tmp / "bundle"
    assert main(["run", str(tmp / "spec.yaml"), "--out", str(bundle)]) == 0
    grpc_port = free_port()
    server = JobServer(
        tmp / "data", extra_env={"MLAAS4HEP_INFERENCE__GRPC_PORT": str(grpc_port)}
    ).start()
    try:
        issuer = LocalIssuer(server.data_dir)
        alice = issuer.mint("alice", SCOPES)
        # bob holds the read scope too: the owner record is what refuses him
        bob = issuer.mint("bob", (f"storage.read:/models/{NAME}",))
        r = httpx.post(
            f"{server.url}/upload",
            params={"name": NAME},
            content=_tar_gz(bundle),
            headers={"Authorization": f"Bearer {alice}"},
            timeout=60,
        )
        assert r.status_code == 201, r.text
        yield {
            "server": server,
            "alice": alice,
            "bob": bob,
            "bundle": bundle,
            "tmp": tmp,
            "grpc": f"127.0.0.1:{grpc_port}",
        }
    finally:
        server.stop()


def _tar_gz(directory: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(directory.iterdir()):
            if path.is_file():
                tar.add(path, arcname=path.name)
    return buf.getvalue()


@pytest.fixture
def as_user(
    world: dict[str, object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[[str], None]:
    """Point the CLI at the server (env only, no stored token, a fresh cache)."""
    server = world["server"]
    assert isinstance(server, JobServer)
    monkeypatch.setenv("MLAAS4HEP_URL", server.url)
    monkeypatch.setenv("MLAAS4HEP_CLIENT_CONFIG", str(tmp_path / "absent.yaml"))
    monkeypatch.setenv("MLAAS4HEP_CACHE_DIR", str(tmp_path / "cache"))

    def use(user: str) -> None:
        monkeypatch.setenv("MLAAS4HEP_TOKEN", str(world[user]))

    return use


def _read(path: Path) -> dict[str, np.ndarray]:
    with uproot.open(path) as f:
        return {k: np.asarray(v) for k, v in f["Events"].arrays(library="np").items()}


def test_apply_by_name_equals_applying_the_bundle(
    world: dict[str, object], as_user: Callable[[str], None], tmp_path: Path
) -> None:
    as_user("alice")
    tmp = world["tmp"]
    assert isinstance(tmp, Path)
    source = str(tmp / "signal.root")
    assert main(["apply", f"{NAME}:1", source, "--out", str(tmp_path / "svc")]) == 0
    assert main(["apply", str(world["bundle"]), source, "--out", str(tmp_path / "local")]) == 0
    got = _read(tmp_path / "svc" / "signal.tth.friend.root")
    want = _read(tmp_path / "local" / "signal.tth.friend.root")
    assert got.keys() == want.keys()
    assert 0 < want["tth_pass"].sum() < len(want["tth_pass"])
    for key in want:
        assert got[key].dtype == want[key].dtype
        np.testing.assert_array_equal(got[key], want[key])  # NaN where failing, both sides
    cached = tmp_path / "cache" / "models" / NAME / "1"
    assert sorted(p.name for p in cached.iterdir()) == sorted(
        n for n in PUBLISHED_FILES if (tmp / "bundle" / n).is_file()
    )


def test_model_load_of_a_fetched_model_and_latest(
    world: dict[str, object], as_user: Callable[[str], None], tmp_path: Path
) -> None:
    as_user("alice")
    path = fetch_model(NAME)  # no version: the newest in service
    assert path == tmp_path / "cache" / "models" / NAME / "1"
    model = Model.load(path)
    assert model.output_columns == ("tth_score",)
    again = fetch_model(f"{NAME}:latest")  # fetched again, replacing the copy by renames
    assert again == path
    assert (again / MODEL_FILE).is_file()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no leftovers


def test_predict_by_name_uses_the_bundles_preprocessing(
    world: dict[str, object], as_user: Callable[[str], None], tmp_path: Path
) -> None:
    as_user("alice")
    tmp = world["tmp"]
    assert isinstance(tmp, Path)
    source = str(tmp / "signal.root")
    by_name, local = tmp_path / "by-name.tsv", tmp_path / "local.tsv"
    assert main(["predict", NAME, "--input", source, "--output", str(by_name)]) == 0
    assert main(["predict", str(world["bundle"]), "--input", source, "--output", str(local)]) == 0
    assert by_name.read_text() == local.read_text()
    assert by_name.read_text().count("\n") == 601  # a header and one line per event


def test_bob_gets_a_one_line_403(
    world: dict[str, object],
    as_user: Callable[[str], None],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    as_user("bob")
    tmp = world["tmp"]
    assert isinstance(tmp, Path)
    status = main(["apply", f"{NAME}:1", str(tmp / "signal.root"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status != 0
    assert err.count("\n") == 1, err
    assert err.startswith(f"mlaas4hep apply: error: cannot fetch model '{NAME}:1'")
    assert "belongs to another user" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(PermissionDenied):
        fetch_model(NAME)


def test_download_route(world: dict[str, object]) -> None:
    server = world["server"]
    assert isinstance(server, JobServer)
    headers = {"Authorization": f"Bearer {world['alice']}"}
    url = f"{server.url}/v2/models/{NAME}"
    r = httpx.get(f"{url}/versions/latest/bundle", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == f'attachment; filename="{NAME}-1.tar.gz"'
    assert r.headers["mlaas4hep-model-version"] == "1"
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        members = tar.getmembers()
        assert {m.name for m in members} <= set(PUBLISHED_FILES)
        assert {MODEL_FILE, FEATURES_FILE, SPEC_FILE} <= {m.name for m in members}
        assert all(m.isreg() for m in members)
        onnx = tar.extractfile(MODEL_FILE)
        assert onnx is not None
        bundle = world["bundle"]
        assert isinstance(bundle, Path)
        assert onnx.read() == (bundle / MODEL_FILE).read_bytes()
    missing = httpx.get(f"{url}/versions/7/bundle", headers=headers)
    assert missing.status_code == 404
    assert "versions: [1]" in missing.json()["error"]


def test_a_link_in_a_version_directory_is_refused_not_followed(
    world: dict[str, object],
) -> None:
    server = world["server"]
    assert isinstance(server, JobServer)
    headers = {"Authorization": f"Bearer {world['alice']}"}
    version = server.data_dir / "models" / NAME / "1"
    card = version / "README.md"
    secret = server.data_dir.parent / "secret.txt"
    secret.write_text("do-not-send")
    saved = card.read_bytes() if card.exists() else None
    card.unlink(missing_ok=True)
    os.symlink(secret, card)
    try:
        r = httpx.get(f"{server.url}/v2/models/{NAME}/bundle", headers=headers)
        assert r.status_code == 422, r.text  # UnsafeModelFiles, a SpecError
        assert "README.md" in r.json()["error"]
        assert "do-not-send" not in r.text
    finally:
        card.unlink()
        if saved is not None:
            card.write_bytes(saved)


def test_model_references() -> None:
    assert parse_model_ref("tth-classifier") == ("tth-classifier", None)
    assert parse_model_ref("tth-classifier:3") == ("tth-classifier", "3")
    assert parse_model_ref("tth.v2:latest") == ("tth.v2", None)
    for bad in ("../x", "a:0", "a:b", "-a", "a:1:2"):
        with pytest.raises(SpecError, match="NAME:VERSION"):
            parse_model_ref(bad)


def test_model_load_by_name_and_the_python_client(
    world: dict[str, object], as_user: Callable[[str], None], tmp_path: Path
) -> None:
    """``Model.load("NAME:VERSION")`` fetches like the CLI; ``Client`` lists, describes
    and scores the served model with the answers of in-process ONNX Runtime."""
    import onnxruntime as ort

    from mlaas4hep import Client
    from mlaas4hep import Model as TopLevelModel

    as_user("alice")
    model = TopLevelModel.load(f"{NAME}:1")
    assert model.bundle == tmp_path / "cache" / "models" / NAME / "1"
    assert model.output_columns == ("tth_score",)
    server = world["server"]
    assert isinstance(server, JobServer)
    with Client() as client:  # URL and token from the environment, as the CLI
        assert client.url == server.url
        listed = {m["name"] for m in client.models()}
        assert NAME in listed
        meta = client.model(NAME)
        features = meta["parameters"]["feature_names"]
        rows = np.random.default_rng(3).normal(size=(37, len(features))).astype(np.float32)
        got = client.predict(NAME, rows)
        by_columns = client.predict(NAME, {f: rows[:, i] for i, f in enumerate(features)})
    bundle = world["bundle"]
    assert isinstance(bundle, Path)
    session = ort.InferenceSession(str(bundle / MODEL_FILE), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: rows})
    (name,) = got
    np.testing.assert_allclose(got[name], want[0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(by_columns[name], got[name])
    as_user("bob")
    with Client() as client, pytest.raises(PermissionDenied, match="another user"):
        client.predict(NAME, rows)
    with pytest.raises(PermissionDenied):
        TopLevelModel.load(NAME)


def test_grpc_with_real_tokens_and_ownership(world: dict[str, object]) -> None:
    """``mlaas4hep serve`` with ``inference.grpc_port``: tritonclient.grpc with the local
    issuer's real tokens gets the HTTP answer; bob, whom the owner record refuses, gets
    PERMISSION_DENIED; a forged token UNAUTHENTICATED."""
    import tritonclient.grpc as tgrpc
    from tritonclient.utils import InferenceServerException

    server = world["server"]
    assert isinstance(server, JobServer)
    client = tgrpc.InferenceServerClient(url=str(world["grpc"]))
    alice = {"authorization": f"Bearer {world['alice']}"}
    try:
        meta = client.get_model_metadata(NAME, headers=alice)
        width = int(meta.inputs[0].shape[1])
        x = np.random.default_rng(5).normal(size=(9, width)).astype(np.float32)
        features = tgrpc.InferInput(meta.inputs[0].name, [9, width], "FP32")
        features.set_data_from_numpy(x)
        got = client.infer(NAME, [features], headers=alice)
        name = meta.outputs[0].name
        r = httpx.post(
            f"{server.url}/v2/models/{NAME}/infer",
            json={"inputs": [{"name": meta.inputs[0].name, "shape": [9, width],
                              "datatype": "FP32", "data": x.reshape(-1).tolist()}]},
            headers={"Authorization": f"Bearer {world['alice']}"},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        (out,) = [o for o in r.json()["outputs"] if o["name"] == name]
        want = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        np.testing.assert_array_equal(got.as_numpy(name), want)
        for headers, status in (
            ({"authorization": f"Bearer {world['bob']}"}, "StatusCode.PERMISSION_DENIED"),
            (
                {"authorization": f"Bearer {str(world['alice'])[:-4]}AAAA"},
                "StatusCode.UNAUTHENTICATED",
            ),
        ):
            with pytest.raises(InferenceServerException) as info:
                client.infer(NAME, [features], headers=headers)
            assert info.value.status() == status
    finally:
        client.close()
