"""The fast paths of V2 inference give the general path's answers and errors, exactly.

``codec.decode_request`` decodes a plain JSON body without walking every value, and the
infer route skips FastAPI's parameter solving (``http.direct_route``). Each is compared
with the general path on the same inputs: the reference decoder ``_decode_general``, and
at the route, the same JSON body sent with ``Inference-Header-Content-Length`` (which
takes the general decoder and answers the same JSON).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from mlaas4hep.auth.principal import Principal
from mlaas4hep.documents import MAX_DEPTH
from mlaas4hep.errors import AuthError
from mlaas4hep.serve.app import create_inference_app
from mlaas4hep.serve.codec import _decode_general, _decode_plain_json, decode_request
from mlaas4hep.serve.errors import InvalidInput
from mlaas4hep.serve.samples import write_sample_model
from mlaas4hep.serve.settings import InferenceSettings

ROW = [0.5, -1.0, 2.0, 3.0]


def _doc(**extra: Any) -> dict[str, Any]:
    tensor = {"name": "features", "shape": [1, 4], "datatype": "FP32", "data": ROW}
    return {"inputs": [tensor], **extra}


def _input(**changes: Any) -> dict[str, Any]:
    tensor: dict[str, Any] = {"name": "features", "shape": [1, 4], "datatype": "FP32"}
    tensor["data"] = ROW
    tensor.update(changes)
    return {"inputs": [{k: v for k, v in tensor.items() if v is not ...}]}


def _nest(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def _outcome(decode: Any, body: bytes) -> tuple[Any, ...]:
    # numpy's cast warnings (e.g. 1e5 as FP16) are part of the answer: the same ones.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            request = decode(body)
        except InvalidInput as exc:
            return ("error", str(exc), {str(w.message) for w in caught})
    inputs = {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in request.inputs.items()}
    answer = (request.id, inputs, request.datatypes, request.outputs, request.binary_output)
    return ("ok", answer, {str(w.message) for w in caught})


def _same_as_general(body: bytes) -> tuple[Any, ...]:
    fast = _outcome(lambda b: decode_request(b, None), body)
    assert fast == _outcome(lambda b: _decode_general(b, None), body)
    return fast


# Bodies the fast decoder answers itself (checked below), then ones it hands back.
COMMON = [
    _doc(),
    _doc(id="req-7", outputs=[{"name": "score"}]),
    _doc(id=12, parameters={"binary_data_output": True}),
    _doc(outputs=[{"name": "score", "parameters": {"binary_data": False}}]),
    _doc(outputs=[{"name": "nope"}]),  # unknown outputs are the data plane's error
    _input(shape=[2, 4], data=[ROW, ROW]),
    _input(shape=[2, 4], data=ROW + ROW),
    _input(datatype="FP64"),
    _input(datatype="INT64", data=[1, 2, 3, 4]),
    _input(datatype="FP32", data=[1, 2, 3, 4]),
    _input(datatype="BOOL", data=[True, False, True, True]),
    _input(datatype="FP16"),
    _input(datatype="INT32"),  # the wrong dtype for the model: the data plane says so
    _input(shape=[4, 1]),  # a wrong shape for the model: likewise
    _input(shape=[0, 4], data=[]),
    _input(parameters={}),
    _input(parameters={"other": [1, 2]}),
    {"inputs": [_input()["inputs"][0], {**_input()["inputs"][0], "name": "other"}]},
    _doc(extra=_nest(MAX_DEPTH - 1)),  # exactly at the depth limit
    _input(parameters={"a": _nest(MAX_DEPTH - 4)}),
]
UNUSUAL = [
    {},
    [],
    {"inputs": []},
    {"inputs": {}},
    {"inputs": [1]},
    _input(name=None),
    _input(name=7),
    _input(shape=None),
    _input(shape=[1, -4]),
    _input(shape=[True, 4]),
    _input(shape=[1.0, 4]),
    _input(shape=[1] * 33, data=_nest(33)),
    _input(shape=[2**62, 2**3]),
    _input(shape=[2, 4]),  # too few elements
    _input(data=[*ROW, 1.0]),
    _input(data=[[0.5, 1.0], [2.0]]),  # ragged
    _input(data=[None, 1.0, 2.0, 3.0]),
    _input(data=[{"a": 1}, 1.0, 2.0, 3.0]),
    _input(data=["0.5", "1", "2", "3"]),  # numpy parses number strings: both do
    _input(data=["x", "1", "2", "3"]),
    _input(data=...),
    _input(data=5.0, shape=[]),
    _input(datatype="BYTES"),
    _input(datatype="fp32"),
    _input(datatype=None),
    _input(datatype="INT8", data=[1, 2, 3, 1000]),
    _input(datatype="UINT8", data=[1, 2, 3, -1]),
    _input(parameters={"binary_data_size": 16}),
    _input(parameters={"binary_data_size": 0}, data=...),
    _input(parameters=[1]),
    {"inputs": [_input()["inputs"][0], _input()["inputs"][0]]},  # the same name twice
    _doc(outputs={"name": "score"}),
    _doc(outputs=[{"nom": "score"}]),
    _doc(outputs=["score"]),
    _doc(parameters=[1]),
    _doc(id=["a", ["b"]]),
    _doc(extra=_nest(MAX_DEPTH)),  # one level too deep
    _input(parameters={"a": _nest(MAX_DEPTH - 3)}),
    _input(shape=[1] * 32, data=_nest(32)),
]


@pytest.mark.parametrize("doc", COMMON, ids=range(len(COMMON)))
def test_common_bodies_take_the_fast_path_with_the_same_answer(doc: Any) -> None:
    body = json.dumps(doc).encode()
    assert _decode_plain_json(body) is not None
    assert _same_as_general(body)[0] == "ok"


@pytest.mark.parametrize("doc", UNUSUAL, ids=range(len(UNUSUAL)))
def test_unusual_bodies_give_the_general_answer_or_error(doc: Any) -> None:
    _same_as_general(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"\xff\xfe", b"null", b'{"inputs": [1,]}', b"[" * 2000 + b"]" * 2000, b"NaN"],
)
def test_malformed_json_gives_the_general_error(body: bytes) -> None:
    assert _decode_plain_json(body) is None
    assert _same_as_general(body)[0] == "error"


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)
_NUMBERS = st.recursive(
    st.integers(-300, 300) | st.floats(-1e5, 1e5) | st.booleans(),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=16,
)
_TENSOR = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["features", "x"]) | _VALUES,
        "shape": st.lists(st.integers(-1, 4), max_size=3) | _VALUES,
        "datatype": st.sampled_from(["FP32", "FP16", "INT8", "UINT8", "BOOL", "BYTES"]) | _VALUES,
        "data": _NUMBERS | _VALUES,
    },
    optional={"parameters": st.dictionaries(st.sampled_from(["binary_data_size", "x"]), _VALUES)},
)
_REQUEST = st.fixed_dictionaries(
    {"inputs": st.lists(_TENSOR, min_size=1, max_size=2) | _VALUES},
    optional={
        "id": _VALUES,
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.text(max_size=3) | _VALUES},
                optional={"parameters": st.dictionaries(st.just("binary_data"), _VALUES)},
            )
        )
        | _VALUES,
        "parameters": st.dictionaries(st.just("binary_data_output"), _VALUES) | _VALUES,
    },
)


@settings(max_examples=400, deadline=None)
@given(_REQUEST)
def test_any_request_decodes_as_the_general_path_does(doc: dict[str, Any]) -> None:
    _same_as_general(json.dumps(doc).encode())


# ---- the infer route ------------------------------------------------------------------------


def _authenticate(header: str | None, peer: str | None) -> Principal:
    if header != "Bearer alice":
        raise AuthError("send a bearer token")
    return Principal(issuer="test", subject="alice")


def _authorize(principal: Principal, action: str, model: str) -> bool:
    return model != "private"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    repo = Path(tmp_path_factory.mktemp("repo"))
    write_sample_model(repo / "mlp" / "1", (4, 8, 2), seed=1)
    write_sample_model(repo / "private" / "1", (4, 8, 2), seed=2)
    settings = InferenceSettings(repository=repo, poll_interval_s=0)
    app = create_inference_app(settings, authenticate=_authenticate, authorize=_authorize)
    with TestClient(app) as test_client:
        yield test_client


AUTH = {"Authorization": "Bearer alice"}
ROUTE_BODIES = [*COMMON, *UNUSUAL, b"{", b"", b'{"inputs": 1}']


def _post(client: TestClient, body: bytes, general: bool, path: str) -> tuple[int, Any]:
    headers = {**AUTH, "Inference-Header-Content-Length": str(len(body))} if general else AUTH
    response = client.post(path, content=body, headers=headers)
    return response.status_code, response.content


@pytest.mark.parametrize("doc", ROUTE_BODIES, ids=range(len(ROUTE_BODIES)))
def test_the_route_answers_as_the_general_path(client: TestClient, doc: Any) -> None:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    path = "/v2/models/mlp/infer"
    fast = _post(client, body, False, path)
    if body:  # an empty body has no JSON part to point at
        assert fast == _post(client, body, True, path)
    assert fast[0] in (200, 400), fast


def test_the_route_answers_what_the_model_computes(client: TestClient) -> None:
    ok = client.post("/v2/models/mlp/infer", json=_doc(id="a"), headers=AUTH)
    assert ok.status_code == 200, ok.text
    answer = ok.json()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("mlp", "1", "a")
    assert [o["shape"] for o in answer["outputs"]] == [[1, 2]]
    binary = client.post(
        "/v2/models/mlp/infer", json=_doc(parameters={"binary_data_output": True}), headers=AUTH
    )
    length = int(binary.headers["Inference-Header-Content-Length"])
    values = np.frombuffer(binary.content[length:], dtype="<f4")
    np.testing.assert_allclose(values, answer["outputs"][0]["data"])


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/v2/models/mlp/infer", {}, 401),
        ("/v2/models/mlp/infer", {"Authorization": "Bearer bob"}, 401),
        ("/v2/models/private/infer", AUTH, 403),
        ("/v2/models/missing/infer", AUTH, 404),
        ("/v2/models/mlp/versions/1/infer", AUTH, 200),
        ("/v2/models/mlp/versions/2/infer", AUTH, 404),
        ("/v2/models/mlp/versions/x/infer", AUTH, 404),
        ("/v2/models/mlp/infer?version=1", AUTH, 200),
        ("/v2/models/mlp/infer?version=3", AUTH, 404),
        ("/v2/models/mlp/infer", {**AUTH, "Inference-Header-Content-Length": "x"}, 400),
        ("/v2/models/mlp/infer", {**AUTH, "Content-Encoding": "br"}, 415),
    ],
)
def test_the_route_keeps_every_check(
    client: TestClient, path: str, headers: dict[str, str], status: int
) -> None:
    response = client.post(path, json=_doc(), headers=headers)
    assert response.status_code == status, response.text
    if status != 200:
        assert set(response.json()) == {"error"}
    assert response.headers.get("www-authenticate", "").startswith("Bearer") == (status == 401)


def test_the_route_caps_and_inflates_bodies(client: TestClient) -> None:
    import gzip

    body = json.dumps(_doc()).encode()
    packed = client.post(
        "/v2/models/mlp/infer",
        content=gzip.compress(body),
        headers={**AUTH, "Content-Encoding": "gzip"},
    )
    assert packed.status_code == 200, packed.text
    assert packed.content == client.post("/v2/models/mlp/infer", content=body, headers=AUTH).content
    bomb = gzip.compress(b" " * (80 << 20))  # past the 64 MiB default once inflated
    refused = client.post(
        "/v2/models/mlp/infer", content=bomb, headers={**AUTH, "Content-Encoding": "gzip"}
    )
    assert refused.status_code == 413, refused.text


def test_the_route_is_still_described_in_openapi(client: TestClient) -> None:
    schema = client.app.openapi()  # type: ignore[attr-defined]
    assert "post" in schema["paths"]["/v2/models/{name}/infer"]
    assert "post" in schema["paths"]["/v2/models/{name}/versions/{version}/infer"]


def test_the_route_is_direct_when_its_router_is_included(tmp_path: Path) -> None:
    """The job API includes the inference router: its infer route keeps the direct
    handler there too (one authentication, errors in the protocol's shape)."""
    from fastapi import FastAPI

    from mlaas4hep.serve.app import create_inference_service

    write_sample_model(tmp_path / "mlp" / "1", (4, 8, 2), seed=1)
    calls: list[str | None] = []

    def counting(header: str | None, peer: str | None) -> Principal:
        calls.append(header)
        return _authenticate(header, peer)

    settings = InferenceSettings(repository=tmp_path, poll_interval_s=0, auth_cache_s=0)
    service = create_inference_service(settings, authenticate=counting, authorize=_authorize)
    app = FastAPI(lifespan=service.lifespan)
    app.include_router(service.router)
    with TestClient(app) as outer:
        ok = outer.post("/v2/models/mlp/infer", json=_doc(), headers=AUTH)
        assert ok.status_code == 200, ok.text
        assert calls == ["Bearer alice"]
        for body, status in ((b"{", 400), (json.dumps(_input(shape=[2, 4])).encode(), 400)):
            bad = outer.post("/v2/models/mlp/infer", content=body, headers=AUTH)
            assert (bad.status_code, set(bad.json())) == (status, {"error"})
        denied = outer.post("/v2/models/private/infer", json=_doc(), headers=AUTH)
        assert (denied.status_code, set(denied.json())) == (403, {"error"})
        anonymous = outer.post("/v2/models/mlp/infer", json=_doc())
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
