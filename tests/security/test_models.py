"""Issue 15, items 2 and 3: publishing follows no link a job made; models have owners.

Replayed against the real service (``secserver``: real sandbox, real job command) and, for
the attacks that need a job's output under the attacker's control, a second real service
whose job command is the fake job (it plants files and symbolic links in its output the way
user code could). Bob, with the default local-user scopes (``storage.create:/models``,
``storage.modify:/models``), gets 403 on every route for alice's private model: V2, TFaaS
and the UI (docs/inference.md, "Ownership").
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from security_server import SecServer, assert_no_leak, wait_job

from mlaas4hep.api.ui.session import CSRF_COOKIE
from mlaas4hep.serve.samples import write_sample_model

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "jobs"))
from jobs_helpers import pipeline_doc

LAYERS = (4, 8, 1)
ROW = [0.5, -1.0, 2.0, 0.25]
CSRF = "models-csrf-token"


def _infer_body() -> dict[str, Any]:
    return {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


def _expected(source: Path) -> float:
    session = ort.InferenceSession(str(source / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.asarray([ROW], dtype=np.float32)
    return float(np.asarray(session.run(["score"], {"features": x})[0]).ravel()[0])


def _upload(
    client: httpx.Client, name: str, source: Path, share: str | None = None
) -> httpx.Response:
    files = {
        "model": ("model.onnx", (source / "model.onnx").read_bytes()),
        "metadata": ("metadata.json", (source / "metadata.json").read_bytes()),
    }
    data = {"name": name, **({"share": share} if share else {})}
    return client.post("/upload", data=data, files=files)


def _key_file(server: SecServer) -> Path:
    keys = sorted((server.data_dir / "auth").glob("*key*.pem"))
    assert keys, "the local issuer has no key yet"
    return keys[0]


def _with_external_data(source: Path, location: str) -> bytes:
    """The model of *source* whose first initializer reads its bytes from *location*."""
    model = onnx.load(str(source / "model.onnx"))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return model.SerializeToString()


@pytest.fixture(scope="module")
def alices_model(secserver: SecServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = write_sample_model(tmp_path_factory.mktemp("alice") / "m", LAYERS, seed=3)
    with secserver.client("alice") as alice:
        r = _upload(alice, "alice-private", source)
        assert r.status_code == 201, r.text
    return source


def _ui_client(server: SecServer, user: str) -> httpx.Client:
    client = server.client(user)
    client.headers["Accept"] = "application/json"
    client.cookies.set(CSRF_COOKIE, CSRF)
    client.follow_redirects = False
    return client


def test_bob_cannot_touch_alices_model(secserver: SecServer, alices_model: Path) -> None:
    name = "alice-private"
    other = write_sample_model(alices_model.parent / "bobs", LAYERS, seed=11)
    seen: list[str] = []
    with secserver.client("bob") as bob, _ui_client(secserver, "bob") as bob_ui:
        attempts = {
            "tfaas upload": _upload(bob, name, other),
            "tfaas delete": bob.request("DELETE", "/delete", params={"model": name}),
            "tfaas json": bob.post("/json", json={"model": name, "values": ROW}),
            "v2 unload": bob.post(f"/v2/repository/models/{name}/unload"),
            "v2 load": bob.post(f"/v2/repository/models/{name}/load"),
            "v2 metadata": bob.get(f"/v2/models/{name}"),
            "v2 version metadata": bob.get(f"/v2/models/{name}/versions/1"),
            "v2 ready": bob.get(f"/v2/models/{name}/ready"),
            "v2 infer": bob.post(f"/v2/models/{name}/infer", json=_infer_body()),
            "ui model page": bob_ui.get(f"/ui/models/{name}"),
            "ui predict": bob_ui.post(
                f"/ui/models/{name}/predict", data={"csrf_token": CSRF, "value": ROW}
            ),
        }
        for what, r in attempts.items():
            seen.append(r.text)
            assert r.status_code == 403, (what, r.status_code, r.text)
        listings = {
            "tfaas models": bob.get("/models"),
            "v2 index": bob.post("/v2/repository/index"),
            "ui models": bob_ui.get("/ui/models"),
        }
        for what, r in listings.items():
            seen.append(r.text)
            assert r.status_code == 200, (what, r.text)
            assert name not in r.text, what
    # alice's clients still get alice's model, version 1, unchanged
    with secserver.client("alice") as alice:
        r = alice.post(f"/v2/models/{name}/infer", json=_infer_body())
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "1"
        assert r.json()["outputs"][0]["data"][0] == pytest.approx(_expected(alices_model))
        assert name in alice.post("/v2/repository/index").text
    with secserver.client("admin") as admin:  # the admin group sees and manages every model
        assert admin.get(f"/v2/models/{name}").status_code == 200
    assert_no_leak(secserver, *seen)
    assert secserver.healthy()


def test_group_sharing(secserver: SecServer, tmp_path: Path) -> None:
    source = write_sample_model(tmp_path / "shared", LAYERS, seed=4)
    with secserver.client("alice") as alice:
        r = _upload(alice, "alice-shared", source, share="/cms/higgs:read")
        assert r.status_code == 201, r.text
    member = secserver.headers("bob", groups=("/cms/higgs/tth",))
    with httpx.Client(base_url=secserver.url, headers=member, timeout=60) as bob:
        assert bob.post("/v2/models/alice-shared/infer", json=_infer_body()).status_code == 200
        assert _upload(bob, "alice-shared", source).status_code == 403  # read, not modify
        assert bob.request("DELETE", "/delete", params={"model": "alice-shared"}).status_code == 403
    with secserver.client("bob") as outsider:
        r = outsider.post("/v2/models/alice-shared/infer", json=_infer_body())
        assert r.status_code == 403, r.text
    with secserver.client("bob") as bob:  # only the owner changes the sharing
        assert _upload(bob, "alice-shared", source, share="*:modify").status_code == 403
    assert secserver.healthy()


def test_bobs_job_cannot_deploy_over_alices_model(secserver: SecServer, alices_model: Path) -> None:
    doc = {**pipeline_doc("steal"), "deploy": {"name": "alice-private"}}
    with secserver.client("bob") as bob:
        r = bob.post("/api/v1/jobs", json=doc)
    assert r.status_code == 403, r.text
    assert "alice-private" in r.text
    assert "belongs to another user" in r.text
    with secserver.client("alice") as alice:
        assert alice.get("/v2/models/alice-private").json()["versions"] == ["1"]
    assert_no_leak(secserver, r.text)
    assert secserver.healthy()


def test_uploads_with_external_data_or_links_are_refused(
    secserver: SecServer, tmp_path: Path
) -> None:
    source = write_sample_model(tmp_path / "evil", LAYERS, seed=5)
    key = _key_file(secserver)
    seen: list[str] = []
    with secserver.client("alice") as alice:
        for location in (str(key), "../../auth/" + key.name, "weights.bin"):
            model = _with_external_data(source, location)
            r = alice.post("/upload", data={"name": "evil-upload"}, files={"model": model})
            seen.append(r.text)
            assert 400 <= r.status_code < 500, r.text
            assert "external file" in r.text
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w:gz") as tar:
            data = (source / "model.onnx").read_bytes()
            info = tarfile.TarInfo("evil/model.onnx")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            link = tarfile.TarInfo("evil/metadata.json")
            link.type, link.linkname = tarfile.SYMTYPE, str(key)
            tar.addfile(link)
        r = alice.post("/upload", content=archive.getvalue())
        seen.append(r.text)
        assert 400 <= r.status_code < 500, r.text
        r = alice.post("/v2/models/evil-upload/infer", json=_infer_body())
        seen.append(r.text)
        assert r.status_code == 404, r.text
    assert_no_leak(secserver, *seen)
    assert secserver.healthy()


def _external_data_in_a_function_default(location: str, length: int) -> bytes:
    """The red team's model: a local function's attribute default (ONNX IR 9) is a tensor
    with external data, taken by a Constant node through ``ref_attr_name``."""
    import onnx
    from onnx import TensorProto, helper

    ext = TensorProto(name="w", data_type=TensorProto.UINT8, dims=[length])
    ext.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = ext.external_data.add()
        entry.key, entry.value = k, v
    const = helper.make_node("Constant", [], ["c"])
    ref = onnx.AttributeProto(name="value", ref_attr_name="w", type=onnx.AttributeProto.TENSOR)
    const.attribute.append(ref)
    fn = onnx.FunctionProto(name="Leak", domain="evil", input=["x"], output=["y"])
    fn.node.extend(
        [
            const,
            helper.make_node("Cast", ["c"], ["cf"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["x", "cf"], ["y"]),
        ]
    )
    fn.attribute_proto.append(helper.make_attribute("w", ext))
    fn.opset_import.extend([helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        [helper.make_node("Leak", ["x"], ["y"], domain="evil")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", length])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", length])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("evil", 1)]
    model = helper.make_model(graph, opset_imports=opsets, functions=[fn])
    model.ir_version = 9
    return bytes(model.SerializeToString())


def test_external_data_in_a_function_attribute_default_is_refused(secserver: SecServer) -> None:
    key = _key_file(secserver)
    size = key.stat().st_size
    relative = os.path.relpath(key, Path.cwd())
    seen: list[str] = []
    with secserver.client("alice") as alice:
        for location in (relative, key.name, str(key)):
            model = _external_data_in_a_function_default(location, size)
            r = alice.post("/upload", data={"name": "leak-fn"}, files={"model": model})
            seen.append(r.text)
            assert 400 <= r.status_code < 500, r.text
            assert "external file" in r.text
        body = {"inputs": [{"name": "x", "shape": [1, size], "datatype": "FP32",
                            "data": [0.0] * size}]}  # fmt: skip
        r = alice.post("/v2/models/leak-fn/infer", json=body)
        seen.append(r.text)
        assert r.status_code == 404, r.text
    assert_no_leak(secserver, *seen)
    assert secserver.healthy()


def test_ort_never_resolves_external_files_even_behind_the_check(tmp_path: Path) -> None:
    from mlaas4hep.serve.runtime import session_options

    (tmp_path / "secret.bin").write_bytes(b"s" * 16)
    model = _external_data_in_a_function_default("secret.bin", 16)
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        cpu = ["CPUExecutionProvider"]
        with pytest.raises(Exception, match=r"[Ee]xternal data path"):  # ORT's own Fail type
            ort.InferenceSession(model, session_options(1), providers=cpu)
    finally:
        os.chdir(cwd)


def test_a_version_with_external_data_is_refused_at_load(
    secserver: SecServer, tmp_path: Path
) -> None:
    # A version that reached the shared repository by other means (an older release, a
    # hand copy): the load refuses it and the version before keeps serving.
    source = write_sample_model(tmp_path / "v1", LAYERS, seed=6)
    with secserver.client("alice") as alice:
        assert _upload(alice, "alice-loadcheck", source).status_code == 201
        version = secserver.data_dir / "models" / "alice-loadcheck" / "2"
        version.mkdir()
        (version / "weights.bin").symlink_to(_key_file(secserver))
        (version / "model.onnx").write_bytes(_with_external_data(source, "weights.bin"))
        r = alice.post("/v2/repository/models/alice-loadcheck/load")
        seen = [r.text]
        assert r.status_code == 200, r.text  # version 1 keeps serving
        index = alice.post("/v2/repository/index").json()
        seen.append(json.dumps(index))
        (entry,) = [e for e in index if e["name"] == "alice-loadcheck" and e["version"] == "2"]
        assert entry["state"] == "UNAVAILABLE", entry
        assert "external file" in entry["reason"], entry
        r = alice.post("/v2/models/alice-loadcheck/infer", json=_infer_body())
        seen.append(r.text)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "1", r.text
        r = alice.post("/v2/models/alice-loadcheck/versions/2/infer", json=_infer_body())
        seen.append(r.text)
        assert r.status_code == 404, r.text
    assert_no_leak(secserver, *seen)
    assert secserver.healthy()


# -- a job's output under the attacker's control (the fake job plants it) ----------------


@pytest.fixture(scope="module")
def fakeserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecServer]:
    server = SecServer(tmp_path_factory.mktemp("models-fake") / "data", fake=True)
    server.headers("alice")  # creates the issuer key before the service starts
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _fake_job(client: httpx.Client, deploy: str | None, **fake: Any) -> str:
    doc = pipeline_doc("hostile", **fake)
    if deploy:
        doc["deploy"] = {"name": deploy}
    r = client.post("/api/v1/jobs", json=doc)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_publishing_a_jobs_output_follows_no_link(fakeserver: SecServer, tmp_path: Path) -> None:
    source = write_sample_model(tmp_path / "good", LAYERS, seed=7)
    key = str(_key_file(fakeserver))
    good = base64.b64encode((source / "model.onnx").read_bytes()).decode()
    external = base64.b64encode(_with_external_data(source, "weights.bin")).decode()
    seen: list[str] = []
    with fakeserver.client("alice") as alice, _ui_client(fakeserver, "alice") as alice_ui:
        assert _upload(alice, "alice-model", source).status_code == 201
        jobs = {
            # the original attack: external data through a link to the issuer key
            "external": _fake_job(
                alice, "evil-ext", plant={"model.onnx": external}, links={"weights.bin": key}
            ),
            # metadata.json (an allow-listed name) as a link to the key
            "metadata": _fake_job(
                alice, "evil-meta", plant={"model.onnx": good}, links={"metadata.json": key}
            ),
            # the same output, deployed later from the UI
            "ui": _fake_job(alice, None, plant={"model.onnx": good}, links={"README.md": key}),
        }
        with fakeserver.client("bob") as bob:
            bobs = _fake_job(bob, None, plant={"model.onnx": good})
            assert wait_job(bob, bobs, 60)["state"] == "succeeded"
            with _ui_client(fakeserver, "bob") as bob_ui:
                r = bob_ui.post(
                    f"/ui/jobs/{bobs}/deploy", data={"csrf_token": CSRF, "name": "alice-model"}
                )
                seen.append(r.text)
                assert r.status_code == 403, r.text  # a UI deploy over alice's model
                assert "belongs to another user" in r.text
        for what in ("external", "metadata"):
            job = wait_job(alice, jobs[what], 60)
            seen.append(json.dumps(job))
            assert job["state"] == "failed", (what, job)
            assert "cannot deploy the model" in job["reason"], job
        assert "external file" in wait_job(alice, jobs["external"], 1)["reason"]
        assert "links are refused" in wait_job(alice, jobs["metadata"], 1)["reason"]
        assert wait_job(alice, jobs["ui"], 60)["state"] == "succeeded"
        r = alice_ui.post(
            f"/ui/jobs/{jobs['ui']}/deploy", data={"csrf_token": CSRF, "name": "evil-ui"}
        )
        seen.append(r.text)
        assert r.status_code in (400, 422), r.text
        assert "README.md" in r.text
        assert "links are refused" in r.text
        for name in ("evil-ext", "evil-meta", "evil-ui"):
            r = alice.post(f"/v2/models/{name}/infer", json=_infer_body())
            seen.append(r.text)
            assert r.status_code == 404, (name, r.text)
        r = alice.post("/v2/models/alice-model/infer", json=_infer_body())
        assert r.json()["model_version"] == "1", r.text
    assert not (fakeserver.data_dir / "models" / "evil-ext").exists()
    assert_no_leak(fakeserver, *seen)
    assert fakeserver.healthy()


def _constant_folding_bomb(elements: int = 1 << 28) -> bytes:
    """The red team's 200-byte model: ONNX Runtime folds ConstantOfShape([2**28]) into a
    1 GiB tensor (and more) while it builds a session."""
    from onnx import TensorProto, helper

    shape = helper.make_tensor("s", TensorProto.INT64, [1], [elements])
    one = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("Constant", [], ["shape"], value=shape),
        helper.make_node("ConstantOfShape", ["shape"], ["big"], value=one),
        helper.make_node("ReduceSum", ["big"], ["r"], keepdims=1),
        helper.make_node("Add", ["x", "r"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def test_a_constant_folding_bomb_is_refused_without_growing_the_service(
    secserver: SecServer,
) -> None:
    import psutil

    assert secserver.proc is not None
    web = psutil.Process(secserver.proc.pid)
    before = web.memory_info().rss
    with secserver.client("alice") as alice:
        r = alice.post("/upload", data={"name": "bomb"}, files={"model": _constant_folding_bomb()})
    assert 400 <= r.status_code < 500, r.text
    assert "MiB to load" in r.text
    grown = web.memory_info().rss - before
    assert grown < 200 * 1024**2, f"the service grew by {grown >> 20} MiB"
    assert_no_leak(secserver, r.text)
    assert secserver.healthy()
