"""The OpenAPI document tells the truth, and its pages need nothing but the service.

* the ``bearer`` scheme is declared and on exactly the routes that authenticate;
* each route documents the problem answers its code can give (derived from the error
  table), and the answers the app really gives are among them;
* ``/docs`` and ``/redoc`` load only the service's own assets (no CDN), under a CSP, and
  the assets are served with their content type and a year of caching.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers import FixedTokens, auth, host_settings, make_client
from fastapi.testclient import TestClient
from jobs_helpers import permissive

from mlaas4hep.api.app import create_app
from mlaas4hep.api.docs import OFFLINE_PATCHES, load_assets
from mlaas4hep.api.errors import PROBLEM_JSON, problem_responses, status_of_class
from mlaas4hep.errors import Conflict, IssuerUnavailable, NotFound, PermissionDenied, SpecError
from mlaas4hep.jobs.states import InvalidTransition
from mlaas4hep.jobs.store import IdempotencyKeyReused

JOBS = "/api/v1/jobs"
AUTH = {"401", "403", "503"}
#: Every error status each route can answer, read off the code it calls.
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("post", JOBS): AUTH | {"400", "404", "413", "422"},  # 404: a parent not among yours
    ("get", JOBS): AUTH | {"422"},
    ("get", JOBS + "/{job_id}"): AUTH | {"404"},
    ("delete", JOBS + "/{job_id}"): AUTH | {"404", "409"},
    ("get", JOBS + "/{job_id}/logs"): AUTH | {"404", "422"},
    ("post", JOBS + "/{job_id}/cancel"): AUTH | {"404", "409"},
    ("get", JOBS + "/{job_id}/artifacts"): AUTH | {"404"},
    ("get", JOBS + "/{job_id}/artifacts/{name}"): AUTH | {"404"},
    ("post", "/api/v1/datasets"): AUTH | {"409", "413", "422"},
    ("get", "/api/v1/datasets"): AUTH | {"422"},
    ("get", "/api/v1/datasets/{dataset_id}"): AUTH | {"404"},
    ("delete", "/api/v1/datasets/{dataset_id}"): AUTH | {"404"},
    ("get", "/api/v1/runs"): AUTH | {"422"},
    ("get", "/api/v1/runs/compare"): AUTH | {"404", "422"},
    ("get", "/api/v1/runs/{job_id}/spec"): AUTH | {"404"},
    ("get", "/healthz"): set(),
    ("get", "/readyz"): {"503"},
}
PROBES = ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready")
CDN_WORDS = ("cdn", "jsdelivr", "unpkg", "googleapis", "http://", "https://")


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with make_client(
        tmp_path_factory.mktemp("openapi"), run_executor=False, with_inference=True
    ) as c:
        yield c


@pytest.fixture(scope="module")
def document(app_client: TestClient) -> dict[str, Any]:
    return dict(app_client.get("/openapi.json").json())


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            yield method, path, op


def errors_of(op: dict[str, Any]) -> set[str]:
    return {code for code in op["responses"] if code >= "400"}


# -- security ------------------------------------------------------------------------------


def test_the_bearer_scheme_is_declared(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    assert scheme["bearerFormat"] == "JWT"
    assert "mlaas4hep token" in scheme["description"]


def test_authenticated_routes_carry_the_scheme_and_probes_do_not(
    document: dict[str, Any],
) -> None:
    api = [(m, p, op) for m, p, op in operations(document) if p.startswith("/api/v1/")]
    assert len(api) >= 12
    for method, path, op in api:
        assert op.get("security") == [{"bearer": []}], (method, path)
    for probe in PROBES:
        op = document["paths"][probe]["get"]
        assert "security" not in op, probe
        assert not {"401", "403"} & set(op["responses"]), probe


def test_every_api_route_answers_401_without_a_token_as_documented(
    app_client: TestClient, document: dict[str, Any]
) -> None:
    for method, path, op in operations(document):
        if not path.startswith("/api/v1/"):
            continue
        url = re.sub(r"\{[^}]+\}", "0" * 64, path)
        r = app_client.request(method.upper(), url)
        assert r.status_code == 401, (method, path, r.text)
        assert "401" in op["responses"], (method, path)
        assert r.headers["content-type"] == PROBLEM_JSON
        assert r.headers["www-authenticate"].startswith("Bearer")


# -- error answers -------------------------------------------------------------------------


def test_each_route_lists_the_errors_it_can_answer(document: dict[str, Any]) -> None:
    for (method, path), expected in EXPECTED.items():
        op = document["paths"][path][method]
        assert errors_of(op) == expected, (method, path)


def test_error_answers_are_problems_and_no_generic_validation_error(
    document: dict[str, Any],
) -> None:
    for method, path, op in operations(document):
        if not path.startswith("/api/v1/"):
            continue
        for code in errors_of(op):
            content = op["responses"][code]["content"]
            assert list(content) == [PROBLEM_JSON], (method, path, code)
            assert content[PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/Problem"}
        assert "headers" in op["responses"]["401"]
        assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
        assert "Retry-After" in op["responses"]["503"]["headers"]
    assert "Problem" in document["components"]["schemas"]


def test_descriptions_say_when_and_name_the_scope(document: dict[str, Any]) -> None:
    delete = document["paths"][JOBS + "/{job_id}"]["delete"]["responses"]
    assert "compute.modify" in delete["403"]["description"]
    assert "cancel it first" in delete["409"]["description"]
    submit = document["paths"][JOBS]["post"]["responses"]
    assert "Idempotency-Key" in submit["422"]["description"]
    assert "200" in submit  # the replay
    assert "Location" in submit["201"]["headers"]


def test_statuses_come_from_the_error_table() -> None:
    assert status_of_class(NotFound) == 404
    assert status_of_class(InvalidTransition) == 409  # a Conflict
    assert status_of_class(IdempotencyKeyReused) == 422  # the job API's own row wins
    assert status_of_class(PermissionDenied) == 403
    assert status_of_class(IssuerUnavailable) == 503
    merged = problem_responses((Conflict, "a"), (InvalidTransition, "b"), (SpecError, "c"))
    assert sorted(merged) == [409, 422]
    assert merged[409]["description"] == "Conflict: a; b"


def test_documented_answers_are_the_real_ones(app_client: TestClient) -> None:
    alice = auth("alice")
    cases = [
        ("get", f"{JOBS}/{'0' * 32}", {}, alice, 404),
        ("delete", f"{JOBS}/{'0' * 32}", {}, alice, 404),
        ("get", JOBS, {"params": {"limit": 0}}, alice, 422),
        ("get", JOBS, {"params": {"cursor": "nonsense"}}, alice, 422),
        ("post", JOBS, {"content": b"a: [", "headers": {"content-type": "text/yaml"}}, alice, 422),
        ("post", JOBS, {"json": {"name": "x"}}, auth("reader"), 403),
        (
            "post",
            JOBS,
            {"content": b"x", "headers": {"content-type": "multipart/form-data"}},  # no boundary
            alice,
            400,
        ),
    ]
    for method, url, kw, headers, status in cases:
        headers = {**headers, **kw.pop("headers", {})}
        r = app_client.request(method.upper(), url, headers=headers, **kw)
        assert r.status_code == status, (method, url, r.text)
        assert r.headers["content-type"] == PROBLEM_JSON


# -- the pages and their assets ------------------------------------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_pages_reference_only_local_assets(app_client: TestClient, page: str) -> None:
    r = app_client.get(page)
    assert r.status_code == 200
    html = r.text.lower()
    for word in CDN_WORDS:
        assert word not in html, word
    refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert refs
    assert all(ref.startswith("/docs/assets/") for ref in refs), refs
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self';" in csp  # no inline script, no eval
    assert "frame-ancestors 'none'" in csp
    for ref in refs:
        asset = app_client.get(ref)
        assert asset.status_code == 200, ref
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.headers["x-content-type-options"] == "nosniff"
        expected = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
        suffix = Path(ref).suffix
        assert asset.headers["content-type"].startswith(expected[suffix]), ref


def test_swagger_ui_starts_from_a_script_file(app_client: TestClient) -> None:
    html = app_client.get("/docs").text
    assert "<script>" not in html  # every script has a src
    init = re.search(r'src="(/docs/assets/[^"]+/swagger-init\.js)"', html)
    assert init is not None
    script = app_client.get(init.group(1)).text
    assert "SwaggerUIBundle(" in script
    assert "validatorUrl: null" in script  # no badge from validator.swagger.io
    assert 'data-openapi-url="/openapi.json"' in html


def test_the_served_redoc_names_no_cdn(app_client: TestClient) -> None:
    html = app_client.get("/redoc").text
    ref = re.search(r'src="(/docs/assets/[^"]+/redoc\.standalone\.js)"', html)
    assert ref is not None
    body = app_client.get(ref.group(1)).content
    assert b"cdn.redoc.ly" not in body
    assert len(OFFLINE_PATCHES["redoc.standalone.js"]) == 1


def test_assets_of_another_version_or_name_are_404(app_client: TestClient) -> None:
    assets = load_assets()
    bundle = assets["swagger-ui-bundle.js"]
    assert app_client.get(bundle.url).status_code == 200
    assert app_client.get(f"/docs/assets/{'0' * 16}/swagger-ui-bundle.js").status_code == 404
    assert app_client.get(f"/docs/assets/{bundle.digest}/../../openapi.json").status_code == 404
    assert app_client.get(f"/docs/assets/{bundle.digest}/index.html").status_code == 404


def test_pages_follow_the_root_path(tmp_path: Path) -> None:
    app = create_app(
        host_settings(tmp_path),
        authenticator=FixedTokens(),
        spec_validator=permissive,
        run_executor=False,
        with_ui=False,
    )
    with TestClient(app, root_path="/mlaas") as c:
        html = c.get("/docs").text
    assert 'data-openapi-url="/mlaas/openapi.json"' in html
    assert all(ref.startswith("/mlaas/docs/assets/") for ref in re.findall(r'src="([^"]+)"', html))


def test_fastapis_cdn_pages_are_gone(app_client: TestClient) -> None:
    assert app_client.get("/docs/oauth2-redirect").status_code == 404
    paths = {getattr(r, "path", "") for r in app_client.app.routes}  # type: ignore[attr-defined]
    assert {"/docs", "/redoc", "/docs/assets/{digest}/{name}"} <= paths
