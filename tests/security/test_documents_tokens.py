"""Issue 15 items 4, 5 and 8 (part): hostile documents and tokens against the real service.

- YAML alias bombs, lists nested 100,000 deep and mappings nested 20,000 deep, on every
  route that parses YAML or JSON: a 4xx within a second, flat server memory, healthy after;
- a flood of tokens with made-up key ids leaves /healthz and inference latency within 2x;
- ID tokens and non-access-token ``typ`` values are refused;
- a V2 shape whose element count overflows int64 is a 400, not a 500;
- an unreachable token issuer is a 503 with Retry-After on every API, naming no URL.
"""

from __future__ import annotations

import json
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import psutil
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from security_server import SecServer, assert_no_leak

from mlaas4hep.api.ui.session import CSRF_COOKIE
from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.cli.token import DEFAULT_SCOPES
from mlaas4hep.loopback import free_port
from mlaas4hep.serve.samples import write_sample_model

MODEL = "docs-tokens-model"
MAX_RSS_GROWTH = 100 * 1024 * 1024
FLOOD_SECONDS = 3.0
FLOOD_CONNECTIONS = 8


def _alias_bomb() -> str:
    """Nine levels of nine aliases: ~700 bytes that expand to 9**9 strings."""
    lines = ["a0: &a0 [x,x,x,x,x,x,x,x,x]"]
    for level in range(1, 9):
        refs = ",".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


ALIAS_BOMB = _alias_bomb()
DEEP_LIST = "[" * 100_000 + "]" * 100_000
DEEP_MAP_JSON = '{"a":' * 20_000 + "1" + "}" * 20_000
DEEP_MAP_YAML = "{a: " * 20_000 + "1" + "}" * 20_000


@pytest.fixture(scope="module")
def model(secserver: SecServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small model of alice's, uploaded through TFaaS /upload."""
    src = write_sample_model(tmp_path_factory.mktemp("model"), (4, 8, 1), seed=1)
    files = {
        "model": ("model.onnx", (src / "model.onnx").read_bytes()),
        "metadata": ("metadata.json", (src / "metadata.json").read_bytes()),
    }
    with secserver.client("alice") as client:
        r = client.post("/upload", data={"name": MODEL}, files=files)
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 60
        while client.get(f"/v2/models/{MODEL}/ready").status_code != 200:
            assert time.monotonic() < deadline, "the uploaded model never became ready"
            time.sleep(0.2)
    return MODEL


def _rss(server: SecServer) -> int:
    assert server.proc is not None
    process = psutil.Process(server.proc.pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def _refused_fast(server: SecServer, send: Callable[[], httpx.Response]) -> httpx.Response:
    """Send one hostile request: answered 4xx within 1 s, server memory flat, healthy after."""
    before = _rss(server)
    start = time.monotonic()
    response = send()
    elapsed = time.monotonic() - start
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert _rss(server) - before < MAX_RSS_GROWTH
    assert server.healthy()
    assert_no_leak(server, response.content)
    return response


def _problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert "Traceback" not in body["detail"]
    return body


# ---- item 4: hostile documents ----------------------------------------------------------

JOB_BODIES = {
    "alias-bomb-yaml": (ALIAS_BOMB, "application/yaml", "anchor or alias"),
    "deep-list-json": (DEEP_LIST, "application/json", "deeper than"),
    "deep-list-yaml": (DEEP_LIST, "application/yaml", "deeper than"),
    "deep-map-json": (DEEP_MAP_JSON, "application/json", "deeper than"),
    "deep-map-yaml": (DEEP_MAP_YAML, "application/yaml", "deeper than"),
    "merge-key-yaml": ("name: x\n<<: {version: 1}\n", "application/yaml", "merge key"),
}


@pytest.mark.parametrize("case", sorted(JOB_BODIES))
def test_job_api_refuses_hostile_specs(secserver: SecServer, case: str) -> None:
    body, ctype, fragment = JOB_BODIES[case]
    with secserver.client("alice") as client:

        def send() -> httpx.Response:
            return client.post("/api/v1/jobs", content=body, headers={"Content-Type": ctype})

        response = _refused_fast(secserver, send)
    assert response.status_code == 422
    assert fragment in _problem(response)["detail"]


@pytest.mark.parametrize("case", ["alias-bomb-yaml", "deep-list-json", "deep-map-yaml"])
def test_job_api_refuses_hostile_multipart_specs(secserver: SecServer, case: str) -> None:
    body, _, fragment = JOB_BODIES[case]
    with secserver.client("alice") as client:

        def send() -> httpx.Response:
            files = {"spec": ("pipeline.yaml", body.encode(), "application/yaml")}
            return client.post("/api/v1/jobs", files=files)

        response = _refused_fast(secserver, send)
    assert response.status_code == 422
    assert fragment in _problem(response)["detail"]


@pytest.mark.parametrize("case", ["alias-bomb-yaml", "deep-list-json", "deep-map-yaml"])
def test_ui_form_refuses_hostile_specs(secserver: SecServer, case: str) -> None:
    body, _, fragment = JOB_BODIES[case]
    with secserver.client("alice") as client:
        client.cookies.set(CSRF_COOKIE, "docs-t0k3n")

        def form() -> httpx.Response:
            return client.post("/ui/submit", data={"csrf_token": "docs-t0k3n", "spec": body})

        response = _refused_fast(secserver, form)
        assert response.status_code == 422
        assert fragment in response.text

        def validate() -> httpx.Response:
            headers = {"X-CSRF-Token": "docs-t0k3n", "Content-Type": "application/yaml"}
            return client.post("/ui/validate", content=body, headers=headers)

        checked = validate()
        assert checked.status_code == 200
        assert checked.json()["ok"] is False
        assert fragment in checked.json()["detail"]


V2_BODIES = {
    "deep-list": DEEP_LIST,
    "deep-map": DEEP_MAP_JSON,
    "deep-data": json.dumps(
        {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32"}]}
    ).replace('"datatype"', '"data": ' + "[" * 100 + "1" + "]" * 100 + ', "datatype"'),
    "yaml-bomb": ALIAS_BOMB,
}


@pytest.mark.parametrize("case", sorted(V2_BODIES))
def test_v2_infer_refuses_hostile_json(secserver: SecServer, model: str, case: str) -> None:
    with secserver.client("alice") as client:

        def send() -> httpx.Response:
            return client.post(f"/v2/models/{model}/infer", content=V2_BODIES[case])

        response = _refused_fast(secserver, send)
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize(
    "body", [DEEP_LIST, DEEP_MAP_JSON, ALIAS_BOMB], ids=["list", "map", "yaml"]
)
def test_tfaas_json_refuses_hostile_json(secserver: SecServer, model: str, body: str) -> None:
    with secserver.client("alice") as client:
        response = _refused_fast(secserver, lambda: client.post("/json", content=body))
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


def test_model_metadata_upload_refuses_deep_json(secserver: SecServer, tmp_path: Path) -> None:
    src = write_sample_model(tmp_path / "m", (4, 8, 1), seed=2)
    files = {
        "model": ("model.onnx", (src / "model.onnx").read_bytes()),
        "metadata": ("metadata.json", DEEP_LIST.encode()),
    }
    with secserver.client("alice") as client:

        def send() -> httpx.Response:
            return client.post("/upload", data={"name": "deep-metadata"}, files=files)

        response = _refused_fast(secserver, send)
        assert "deeper than" in response.json()["error"]
        assert client.get("/v2/models/deep-metadata").status_code == 404


# ---- item 8: V2 shape overflow ----------------------------------------------------------


@pytest.mark.parametrize("shape", [[2**62, 4], [2**40, 2**40], [1] * 100])
def test_v2_shape_overflow_is_400(secserver: SecServer, model: str, shape: list[int]) -> None:
    body = {"inputs": [{"name": "features", "shape": shape, "datatype": "FP32", "data": [1.0]}]}
    with secserver.client("alice") as client:
        response = _refused_fast(
            secserver, lambda: client.post(f"/v2/models/{model}/infer", json=body)
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert "more than" in error or "the limit is" in error


# ---- item 8: only access tokens ---------------------------------------------------------


def _local_token(server: SecServer, header: dict[str, Any], **claims: Any) -> str:
    """A token signed with the service's own local issuer key, with chosen header/claims."""
    issuer = LocalIssuer(server.data_dir)
    base = jwt.decode(issuer.mint("alice", DEFAULT_SCOPES), options={"verify_signature": False})
    base.update(claims)
    body = {k: v for k, v in base.items() if v is not None}
    return jwt.encode(body, issuer._key, algorithm="ES256", headers={"kid": issuer.kid, **header})


ID_TOKENS = {
    "typ-JWT": ({"typ": "JWT"}, {}),
    "no-typ": ({"typ": None}, {}),
    "id-token-nonce": ({"typ": "at+jwt"}, {"nonce": "n-0S6_WzA2Mj"}),
    "id-token-at-hash": ({"typ": "at+jwt"}, {"at_hash": "77QmUPtjPfzWtF2AnpK9RQ"}),
    "id-token-auth-time": ({"typ": "at+jwt"}, {"auth_time": 1_700_000_000, "scope": None}),
}


@pytest.mark.parametrize("case", sorted(ID_TOKENS))
def test_only_access_tokens_are_accepted(secserver: SecServer, model: str, case: str) -> None:
    header, claims = ID_TOKENS[case]
    token = _local_token(secserver, header, **claims)
    auth = {"Authorization": f"Bearer {token}"}
    for method, path in (
        ("GET", "/api/v1/jobs"),
        ("GET", f"/v2/models/{model}"),
        ("GET", "/models"),
    ):
        response = httpx.request(method, secserver.url + path, headers=auth, timeout=30)
        assert response.status_code == 401, (path, response.text)
        assert_no_leak(secserver, response.content)
    good = _local_token(secserver, {"typ": "at+jwt"})
    r = httpx.get(secserver.url + "/api/v1/jobs", headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 200


# ---- item 5: unknown-kid flood ----------------------------------------------------------


def _rogue_token(server: SecServer) -> str:
    """Right issuer, made-up kid, a key nobody trusts: must cost the service nothing."""
    claims = jwt.decode(
        LocalIssuer(server.data_dir).mint("mallory"), options={"verify_signature": False}
    )
    key = ec.generate_private_key(ec.SECP256R1())
    kid = secrets.token_urlsafe(16)
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid, "typ": "at+jwt"})


def _median_latency(send: Callable[[], httpx.Response], n: int, expect: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = send()
        times.append(time.perf_counter() - start)
        assert response.status_code == expect, response.text[:200]
    return statistics.median(times)


def test_unknown_kid_flood_does_not_freeze_the_server(secserver: SecServer, model: str) -> None:
    infer_body = {
        "inputs": [
            {"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}
        ]
    }
    rogue = [_rogue_token(secserver) for _ in range(200)]
    with secserver.client("alice") as client:

        def health() -> httpx.Response:
            return client.get("/healthz")

        def infer() -> httpx.Response:
            return client.post(f"/v2/models/{model}/infer", json=infer_body)

        infer()  # warm the auth cache and the model
        idle = (_median_latency(health, 30, 200), _median_latency(infer, 30, 200))
        statuses: list[int] = []
        start = time.monotonic()
        period = FLOOD_SECONDS / (len(rogue) // FLOOD_CONNECTIONS)

        def flood(tokens: list[str]) -> None:
            # Paced: 200 requests over 8 connections in ~3 s, as a modest attacker would.
            with httpx.Client(base_url=secserver.url, timeout=30) as attacker:
                for i, token in enumerate(tokens):
                    time.sleep(max(0.0, start + i * period - time.monotonic()))
                    r = attacker.get(
                        f"/v2/models/{model}", headers={"Authorization": f"Bearer {token}"}
                    )
                    statuses.append(r.status_code)

        threads = [
            threading.Thread(target=flood, args=(rogue[i::FLOOD_CONNECTIONS],))
            for i in range(FLOOD_CONNECTIONS)
        ]
        for t in threads:
            t.start()
        time.sleep(0.3)  # the flood is under way
        busy = (_median_latency(health, 30, 200), _median_latency(infer, 30, 200))
        measured_during_flood = time.monotonic() - start < FLOOD_SECONDS
        for t in threads:
            t.join(30)
    figures = {"flood_requests": len(statuses), "idle_s": idle, "flood_s": busy}
    print(json.dumps(figures))  # the figures docs/security.md quotes (pytest -s shows them)
    assert measured_during_flood
    assert len(statuses) == len(rogue)
    assert set(statuses) == {401}
    floor = 0.02  # 20 ms: below it, scheduling noise on a 2-core runner decides
    for name, quiet, loaded in zip(("healthz", "infer"), idle, busy, strict=True):
        assert loaded <= max(2 * quiet, floor), (
            f"{name}: idle {quiet * 1e3:.1f} ms, flood {loaded * 1e3:.1f} ms"
        )
    assert secserver.healthy()


# ---- item 8: an unreachable issuer is a 503 everywhere ----------------------------------


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SecServer, str]]:
    """A service trusting an external issuer on a loopback port where nothing listens."""
    issuer = f"http://127.0.0.1:{free_port()}"
    env = {
        "MLAAS4HEP_AUTH__ISSUERS": json.dumps([{"issuer": issuer, "audience": "mlaas4hep"}]),
        "MLAAS4HEP_AUTH__LOCAL_ISSUER": "false",
    }
    server = SecServer(tmp_path_factory.mktemp("outage") / "data", extra_env=env).start()
    try:
        yield server, issuer
    finally:
        server.stop()


def test_issuer_outage_is_503_everywhere(outage: tuple[SecServer, str]) -> None:
    server, issuer = outage
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": "alice",
        "aud": "mlaas4hep",
        "iat": now,
        "exp": now + 300,
        "scope": "compute.read",
    }
    key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1", "typ": "at+jwt"})
    auth = {"Authorization": f"Bearer {token}"}
    for path in ("/api/v1/jobs", "/v2/models/any", "/models", "/v2/repository/index"):
        method = "POST" if path.endswith("index") else "GET"
        response = httpx.request(method, server.url + path, headers=auth, timeout=30)
        assert response.status_code == 503, (path, response.text)
        assert int(response.headers["retry-after"]) >= 1
        assert issuer not in response.text
        assert "127.0.0.1" not in response.text
        if path.startswith("/api/"):
            _problem(response)
        else:
            assert set(response.json()) == {"error"}
    assert server.healthy()
