"""The cross-user authorization matrix over every route of the real service (issue 7).

One real ``mlaas4hep serve`` process (job API, inference routes V2 + TFaaS and the web UI in
one app, the embedded local issuer, fake jobs). The routes are enumerated from the route
table of an app built by the same factory with the same options; every route must have an
entry in ``CASES`` or ``PUBLIC`` below, so a new route cannot escape the matrix. For each
authenticated route:

* no token, a malformed, expired, forged (other key, same ``kid``), wrong-audience or
  ``alg: none`` token: 401 with ``WWW-Authenticate: Bearer``;
* a valid token lacking the scope the route needs (docs/security.md): 403 naming it;
* bob on alice's job or dataset: 404 (a job or dataset of someone else does not exist for
  the caller); bob on alice's model: 403 (models are governed by ``storage.*:/models/NAME``
  scopes, checked before the model is looked up); listings never show alice's resources to
  bob;
* alice on her own resource: 2xx (the UI's form posts: a 303 to the next page);
* a member of the admin group sees alice's jobs and datasets.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.routing import iter_route_contexts
from jobs_server import JobServer

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "jobs"))
from jobs_helpers import pipeline_doc

from mlaas4hep.api.ui.session import CSRF_COOKIE, SESSION_COOKIE
from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.data.samples import write_sample
from mlaas4hep.serve.samples import write_sample_model

pytestmark = pytest.mark.slow

ADMIN_GROUP = "/mlaas/admin"  # the default auth.admin_group
MODEL = "alice-model"  # alice's model; alice-2 .. alice-9 are made fresh by destructive checks
FEATURES = 4
COMPUTE = ("compute.create", "compute.read", "compute.cancel", "compute.modify")
DATA = ("storage.read:/nonexistent",)  # the input paths of jobs_helpers.pipeline_doc
CSRF = "matrix-csrf-token"


def model_scopes(name: str) -> tuple[str, ...]:
    return tuple(f"storage.{a}:/models/{name}" for a in ("read", "create", "modify"))


ALICE_MODELS = (MODEL, *(f"alice-{i}" for i in range(2, 10)))
ALICE_SCOPES = (
    *COMPUTE,
    *DATA,
    *(s for m in ALICE_MODELS for s in model_scopes(m)),
    "mlaas.metrics",
)
BOB_SCOPES = (*COMPUTE, *DATA, *model_scopes("bob-model"))


# -- the service and alice's resources -----------------------------------------------------


@dataclass
class World:
    server: JobServer
    issuer: LocalIssuer
    tmp: Path
    job: str = ""  # alice's succeeded job
    job2: str = ""  # another of alice's jobs (the runs compare view takes two or more)
    artifact: str = ""  # one of its artifacts
    dataset: str = ""  # alice's dataset
    partial: str = ""  # the sha256 of alice's unfinished (resumable) upload
    fresh: Iterator[str] = field(default_factory=lambda: iter(ALICE_MODELS[1:]))
    datasets: Iterator[int] = field(default_factory=lambda: iter(range(1000)))

    def token(self, user: str, scopes: tuple[str, ...], groups: tuple[str, ...] = ()) -> str:
        return self.issuer.mint(user, scopes, groups=groups)

    def client(
        self, token: str | None, headers: dict[str, str] | None = None, session: str = ""
    ) -> httpx.Client:
        """A client sending *token* as bearer token (*session*: as the UI's session cookie)."""
        sent = {"Accept": "application/json", **(headers or {})}  # UI: a 401, not a redirect
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        cookies = {CSRF_COOKIE: CSRF}
        if session:
            cookies[SESSION_COOKIE] = session
        return httpx.Client(
            base_url=self.server.url,
            headers=sent,
            cookies=cookies,
            timeout=30,
            follow_redirects=False,
        )

    def alice(self) -> httpx.Client:
        return self.client(self.token("alice", ALICE_SCOPES))

    def new_job(self, *, running: bool = False) -> str:
        """A succeeded job of alice's (*running*: one that runs for a minute)."""
        doc = pipeline_doc("matrix", steps=60, sleep=1) if running else pipeline_doc("matrix")
        with self.alice() as c:
            r = c.post("/api/v1/jobs", json=doc)
            assert r.status_code == 201, r.text
            job = str(r.json()["id"])
            if running:
                return job
            deadline = time.monotonic() + 90
            while (state := c.get(f"/api/v1/jobs/{job}").json()["state"]) != "succeeded":
                assert state in ("queued", "running"), state
                assert time.monotonic() < deadline, "alice's job did not finish"
                time.sleep(0.2)
        return job

    def new_dataset(self) -> str:
        path = write_sample(self.tmp / "tiny.root", "signal", 50, seed=1)
        name = f"tiny-{next(self.datasets)}.root"
        with self.alice() as c:
            r = c.post("/api/v1/datasets", params={"name": name}, content=path.read_bytes())
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

    def new_partial(self) -> str:
        """Alice's unfinished upload: the first half of a new file; its sha256."""
        data = self.new_root_bytes()
        sha = hashlib.sha256(data).hexdigest()
        with self.alice() as c:
            r = c.put(
                f"/api/v1/datasets/uploads/{sha}",
                params={"name": f"part-{sha[:8]}.root", "size": len(data), "offset": 0},
                content=data[: len(data) // 2],
            )
            assert r.status_code == 200, r.text
        return sha

    def new_root_bytes(self) -> bytes:
        """A ROOT file nobody uploaded yet (a new seed each time)."""
        seed = 100 + next(self.datasets)
        return write_sample(self.tmp / f"r{seed}.root", "signal", 20, seed=seed).read_bytes()

    def new_model(self, name: str | None = None) -> str:
        name = name or next(self.fresh)
        src = write_sample_model(self.tmp / "models" / name, (FEATURES, 8, 1), seed=3)
        files = {
            "model": ("model.onnx", (src / "model.onnx").read_bytes()),
            "metadata": ("metadata.json", (src / "metadata.json").read_bytes()),
        }
        with self.alice() as c:
            r = c.post("/upload", data={"name": name}, files=files)
            assert r.status_code == 201, r.text
        return name


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("authz")
    server = JobServer(tmp / "data").start()
    try:
        w = World(server, LocalIssuer(server.data_dir), tmp)
        w.job, w.dataset, w.partial = w.new_job(), w.new_dataset(), w.new_partial()
        w.job2 = w.new_job()
        w.new_model(MODEL)
        with w.alice() as c:
            items = c.get(f"/api/v1/jobs/{w.job}/artifacts").json()["items"]
        assert items, "the fake job left no artifact"
        w.artifact = items[0]["name"]
        yield w
    finally:
        server.stop()


# -- the route table --------------------------------------------------------------------

Send = Callable[[World, httpx.Client, dict[str, str]], httpx.Response]


def _path(template: str, params: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: params[m.group(1)], template)


def call(method: str, **kwargs: Any) -> Callable[[str], Send]:
    """A sender for route *template*: fills the path parameters, sends *kwargs*."""

    def for_template(template: str) -> Send:
        def send(w: World, c: httpx.Client, params: dict[str, str]) -> httpx.Response:
            extra = {k: v(w, params) if callable(v) else v for k, v in kwargs.items()}
            return c.request(method, _path(template, params), **extra)

        return send

    return for_template


def _two_runs(w: World, p: dict[str, str]) -> dict[str, list[str]]:
    """The compare view's query: the job of the case and another of alice's."""
    return {"id": [p["job_id"], w.job2]}


def _v2_body(w: World, p: dict[str, str]) -> dict[str, Any]:
    row = {"name": "features", "shape": [1, FEATURES], "datatype": "FP32"}
    row["data"] = [0.5] * FEATURES
    return {"inputs": [row]}


def _upload_files(w: World, p: dict[str, str]) -> dict[str, Any]:
    src = write_sample_model(w.tmp / "upload" / p["name"], (FEATURES, 8, 1), seed=5)
    return {
        "model": ("model.onnx", (src / "model.onnx").read_bytes()),
        "metadata": ("metadata.json", (src / "metadata.json").read_bytes()),
    }


def _whole_upload(w: World, c: httpx.Client, p: dict[str, str]) -> httpx.Response:
    """A complete content-addressed upload of a new file (owner: 201)."""
    data = w.new_root_bytes()
    sha = hashlib.sha256(data).hexdigest()
    params = {"name": f"whole-{sha[:8]}.root", "size": str(len(data)), "offset": "0"}
    return c.put(f"/api/v1/datasets/uploads/{sha}", params=params, content=data)


def _root_bytes(w: World, p: dict[str, str]) -> bytes:
    return write_sample(w.tmp / "upload.root", "signal", 20, seed=2).read_bytes()


@dataclass(frozen=True)
class Case:
    """How one route is exercised and what the policy says about it.

    ``needs``: scopes of which the caller must hold one (empty: any valid token, which is
    what the docs say for that route). ``resource``: the kind of alice's resource in the
    path (or ``listing`` for a list filtered by owner). ``fresh``: the owner check changes
    the resource, so it gets a new one (``running``: a running job, ``unused``: a model
    name nobody uploaded yet). ``owner``: the success statuses.
    """

    send: Send
    needs: tuple[str, ...]
    resource: str | None = None  # job | dataset | upload | model | listing
    fresh: str = ""  # "" | yes | running | unused
    owner: tuple[int, ...] = (200,)
    listing_key: str = ""  # what alice's resource is called in a listing body


READ, CREATE = ("compute.read",), ("compute.create",)
INFER = ("mlaas.infer", f"storage.read:/models/{MODEL}")
M_READ = (f"storage.read:/models/{MODEL}",)
M_MODIFY = (f"storage.modify:/models/{MODEL}",)
M_CREATE = (f"storage.create:/models/{MODEL}", f"storage.modify:/models/{MODEL}")
UI_FORM = {"data": {"csrf_token": CSRF}}
UI_OK = (200, 303)


def _cases() -> dict[tuple[str, str], Case]:
    api = "/api/v1"
    j, d = f"{api}/jobs/{{job_id}}", f"{api}/datasets/{{dataset_id}}"
    spec = {"json": pipeline_doc("matrix-submit")}
    v2m, v2v = "/v2/models/{name}", "/v2/models/{name}/versions/{version}"
    repo = "/v2/repository/models/{name}"
    table: dict[tuple[str, str], tuple[Callable[[str], Send], Any]] = {
        # the job API: ownership -> 404 for everyone but the owner (and admins)
        ("POST", f"{api}/jobs"): (call("POST", **spec), {"needs": CREATE, "owner": (201,)}),
        ("GET", f"{api}/jobs"): (call("GET"), {"needs": READ, "resource": "listing"}),
        ("GET", j): (call("GET"), {"needs": READ, "resource": "job"}),
        ("GET", f"{j}/logs"): (call("GET"), {"needs": READ, "resource": "job"}),
        ("POST", f"{j}/cancel"): (
            call("POST"),
            {"needs": ("compute.cancel",), "resource": "job", "fresh": "running", "owner": (202,)},
        ),
        ("DELETE", j): (
            call("DELETE"),
            {"needs": ("compute.modify",), "resource": "job", "fresh": "yes", "owner": (204,)},
        ),
        ("GET", f"{j}/artifacts"): (call("GET"), {"needs": READ, "resource": "job"}),
        ("GET", f"{j}/artifacts/{{name:path}}"): (call("GET"), {"needs": READ, "resource": "job"}),
        ("POST", f"{api}/datasets"): (
            call("POST", params={"name": "up.root"}, content=_root_bytes),
            {"needs": CREATE, "owner": (201,)},
        ),
        ("GET", f"{api}/datasets"): (call("GET"), {"needs": READ, "resource": "listing"}),
        # resumable uploads: each caller's partial files are their own (bob: 404)
        ("GET", f"{api}/datasets/uploads/{{sha256}}"): (
            call("GET"),
            {"needs": READ, "resource": "upload"},
        ),
        ("PUT", f"{api}/datasets/uploads/{{sha256}}"): (
            lambda template: _whole_upload,
            {"needs": CREATE, "owner": (201,)},
        ),
        ("DELETE", f"{api}/datasets/uploads/{{sha256}}"): (
            call("DELETE"),
            {"needs": ("compute.modify",), "resource": "upload", "fresh": "yes", "owner": (204,)},
        ),
        ("GET", d): (call("GET"), {"needs": READ, "resource": "dataset"}),
        ("DELETE", d): (
            call("DELETE"),
            {"needs": ("compute.modify",), "resource": "dataset", "fresh": "yes", "owner": (204,)},
        ),
        # TFaaS: models by storage scopes -> 403
        ("POST", "/json"): (
            call("POST", json=lambda w, p: {"model": p["name"], "values": [0.5] * FEATURES}),
            {"needs": INFER, "resource": "model"},
        ),
        ("GET", "/models"): (call("GET"), {"needs": (), "resource": "listing"}),
        ("POST", "/upload"): (
            call("POST", data=lambda w, p: {"name": p["name"]}, files=_upload_files),
            {"needs": M_CREATE, "resource": "model", "fresh": "unused", "owner": (201,)},
        ),
        ("DELETE", "/delete"): (
            call("DELETE", params=lambda w, p: {"model": p["name"]}),
            {"needs": M_MODIFY, "resource": "model", "fresh": "yes"},
        ),
        # Open Inference Protocol V2
        ("POST", f"{v2m}/infer"): (
            call("POST", json=_v2_body),
            {"needs": INFER, "resource": "model"},
        ),
        ("POST", f"{v2v}/infer"): (
            call("POST", json=_v2_body),
            {"needs": INFER, "resource": "model"},
        ),
        ("GET", "/v2"): (call("GET"), {"needs": ()}),
        ("GET", v2m): (call("GET"), {"needs": M_READ, "resource": "model"}),
        ("GET", v2v): (call("GET"), {"needs": M_READ, "resource": "model"}),
        ("GET", f"{v2m}/ready"): (call("GET"), {"needs": M_READ, "resource": "model"}),
        ("GET", f"{v2v}/ready"): (call("GET"), {"needs": M_READ, "resource": "model"}),
        ("GET", f"{v2m}/bundle"): (call("GET"), {"needs": M_READ, "resource": "model"}),
        ("GET", f"{v2v}/bundle"): (call("GET"), {"needs": M_READ, "resource": "model"}),
        ("GET", f"{v2m}/config"): (call("GET"), {"needs": M_READ, "resource": "model"}),
        ("GET", f"{v2v}/config"): (call("GET"), {"needs": M_READ, "resource": "model"}),
        ("GET", f"{v2m}/stats"): (call("GET"), {"needs": M_READ, "resource": "model"}),
        ("GET", f"{v2v}/stats"): (call("GET"), {"needs": M_READ, "resource": "model"}),
        ("GET", "/v2/models/stats"): (call("GET"), {"needs": (), "resource": "listing"}),
        ("POST", "/v2/repository/index"): (
            call("POST", json={}),
            {"needs": (), "resource": "listing"},
        ),
        ("POST", "/v2/repository/models/{name}/load"): (
            call("POST"),
            {"needs": M_MODIFY, "resource": "model"},
        ),
        ("POST", "/v2/repository/models/{name}/unload"): (
            call("POST"),
            {"needs": M_MODIFY, "resource": "model", "fresh": "yes"},
        ),
        # the model registry (serve/registry_routes.py): aliases and the serving policy
        ("GET", f"{repo}/registry"): (call("GET"), {"needs": M_READ, "resource": "model"}),
        ("PUT", f"{repo}/aliases/{{alias}}"): (
            call("PUT", json={"version": 1}),
            {"needs": M_MODIFY, "resource": "model", "fresh": "yes"},
        ),
        ("POST", f"{repo}/aliases/{{alias}}/rollback"): (  # alice: nothing to roll back yet
            call("POST"),
            {"needs": M_MODIFY, "resource": "model", "owner": (404,)},
        ),
        ("DELETE", f"{repo}/aliases/{{alias}}"): (  # alice: no such alias yet
            call("DELETE"),
            {"needs": M_MODIFY, "resource": "model", "owner": (404,)},
        ),
        ("PUT", f"{repo}/policy"): (
            call("PUT", json={"policy": "latest"}),
            {"needs": M_MODIFY, "resource": "model"},
        ),
        ("GET", "/metrics"): (call("GET"), {"needs": ("mlaas.metrics",)}),  # labels name models
        # runs (jobs with their names, tags, parameters and metrics): bob sees none of alice's
        ("GET", f"{api}/runs"): (call("GET"), {"needs": READ, "resource": "listing"}),
        ("GET", f"{api}/runs/compare"): (
            call("GET", params=_two_runs),
            {"needs": READ, "resource": "job"},
        ),
        ("GET", f"{api}/runs/{{job_id}}/spec"): (call("GET"), {"needs": READ, "resource": "job"}),
        ("GET", "/ui/runs"): (call("GET"), {"needs": READ, "resource": "listing"}),
        ("GET", "/ui/runs/compare"): (
            call("GET", params=_two_runs),
            {"needs": READ, "resource": "job"},
        ),
        # the web UI (same dependency, which also takes the session cookie)
        ("GET", "/ui/jobs"): (call("GET"), {"needs": READ, "resource": "listing"}),
        ("GET", "/ui/jobs/rows"): (call("GET"), {"needs": READ, "resource": "listing"}),
        ("GET", "/ui/jobs/{job_id}"): (call("GET"), {"needs": READ, "resource": "job"}),
        ("GET", "/ui/jobs/{job_id}/status"): (call("GET"), {"needs": READ, "resource": "job"}),
        ("POST", "/ui/jobs/{job_id}/cancel"): (
            call("POST", **UI_FORM),
            {"needs": ("compute.cancel",), "resource": "job", "fresh": "running", "owner": UI_OK},
        ),
        ("POST", "/ui/jobs/{job_id}/deploy"): (
            call("POST", **UI_FORM),
            {"needs": READ, "resource": "job", "owner": ()},  # () : the fake job has no model
        ),
        ("GET", "/ui/jobs/{job_id}/artifacts/{name:path}"): (
            call("GET"),
            {"needs": READ, "resource": "job"},
        ),
        ("GET", "/ui/submit"): (call("GET"), {"needs": CREATE}),
        ("POST", "/ui/submit"): (
            call("POST", data={"csrf_token": CSRF, "spec": _yaml(pipeline_doc("ui-submit"))}),
            {"needs": CREATE, "owner": UI_OK},
        ),
        ("POST", "/ui/validate"): (
            call(
                "POST",
                content=_yaml(pipeline_doc("ui-validate")),
                headers={"x-csrf-token": CSRF, "content-type": "application/yaml"},
            ),
            {"needs": CREATE},
        ),
        ("GET", "/ui/models"): (call("GET"), {"needs": (), "resource": "listing"}),
        ("GET", "/ui/models/{name}"): (call("GET"), {"needs": M_READ, "resource": "model"}),
        ("POST", "/ui/models/{name}/predict"): (
            call("POST", data={"csrf_token": CSRF, "value": ["0.5"] * FEATURES}),
            {"needs": INFER, "resource": "model"},
        ),
        ("POST", "/ui/models/{name}/promote"): (  # alice: the confirmation dialog
            call("POST", data={"csrf_token": CSRF, "alias": "production", "version": "1"}),
            {"needs": M_MODIFY, "resource": "model"},
        ),
        ("POST", "/ui/models/{name}/rollback"): (  # alice: the page says why it cannot
            call("POST", data={"csrf_token": CSRF, "alias": "production"}),
            {"needs": M_MODIFY, "resource": "model", "owner": (422,)},
        ),
        ("POST", "/ui/models/{name}/policy"): (
            call("POST", data={"csrf_token": CSRF, "policy": "latest"}),
            {"needs": M_MODIFY, "resource": "model", "owner": UI_OK},
        ),
        ("GET", "/ui/datasets"): (call("GET"), {"needs": READ, "resource": "listing"}),
        ("POST", "/ui/datasets"): (
            call(
                "POST",
                params={"name": "ui.root"},
                content=_root_bytes,
                headers={"x-csrf-token": CSRF},
            ),
            {"needs": CREATE, "owner": (201,)},
        ),
    }
    return {key: Case(make(key[1]), **opts) for key, (make, opts) in table.items()}


def _yaml(doc: dict[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(doc))


CASES = _cases()

#: Routes that answer without a token, on purpose.
PUBLIC = {
    ("GET", "/openapi.json"): "the API description; no user data",
    ("GET", "/docs"): "Swagger UI page (static)",
    ("GET", "/docs/assets/{digest}/{name}"): (
        "Swagger UI and ReDoc files (static, from the fastapi-offline package)"
    ),
    ("GET", "/redoc"): "ReDoc page (static)",
    ("GET", "/healthz"): "liveness probe (load balancers, Kubernetes)",
    ("GET", "/readyz"): "readiness probe",
    ("GET", "/v2/health/live"): "V2 liveness probe (orchestrators probe without tokens)",
    ("GET", "/v2/health/ready"): "V2 readiness probe",
    ("GET", "/mlaas4hep/local-issuer/.well-known/openid-configuration"): (
        "the local issuer's discovery document: public by definition"
    ),
    ("GET", "/mlaas4hep/local-issuer/jwks"): "the local issuer's public keys",
    ("GET", "/"): "redirect to the UI",
    ("GET", "/ui/"): "redirect to the job list (which authenticates)",
    ("GET", "/ui/login"): "the login page",
    ("POST", "/ui/login/local"): (
        "local sign-in for a chosen name: only a direct loopback socket of the service's own uid"
    ),
    ("POST", "/ui/login/token"): (
        "token sign-in: a pasted access token, validated like a bearer token"
    ),
    ("GET", "/ui/login/oidc"): "starts the OIDC authorization code flow",
    ("GET", "/ui/login/callback"): "OIDC redirect target (state + PKCE checked)",
    ("POST", "/ui/logout"): "clears the session cookie",
    ("MOUNT", "/ui/static"): "the UI's own CSS and JavaScript",
}


def served_routes() -> set[tuple[str, str]]:
    """Every (method, path) of an app built like ``mlaas4hep serve`` builds it."""
    import tempfile

    from mlaas4hep.api.app import create_app
    from mlaas4hep.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp)), run_executor=False, with_inference=True)
        routes = set()
        for route in iter_route_contexts(app.routes):
            methods = route.methods or {"MOUNT"}
            routes |= {(m, str(route.path)) for m in methods if m != "HEAD"}
    return routes


ALL_ROUTES = served_routes()


def test_every_route_is_in_the_matrix() -> None:
    unlisted = ALL_ROUTES - set(CASES) - set(PUBLIC)
    assert not unlisted, f"routes missing from the authorization matrix: {sorted(unlisted)}"
    stale = (set(CASES) | set(PUBLIC)) - ALL_ROUTES
    assert not stale, f"matrix entries for routes that no longer exist: {sorted(stale)}"


def test_the_live_service_serves_the_enumerated_routes(world: World) -> None:
    # The route table above comes from an app built in this process; the documented paths
    # of the running server must be the same set.
    paths = set(httpx.get(f"{world.server.url}/openapi.json").json()["paths"])
    normalised = {re.sub(r"\{(\w+):\w+\}", r"{\1}", p) for _, p in ALL_ROUTES}
    assert paths <= normalised, sorted(paths - normalised)


# -- tokens ------------------------------------------------------------------------------


def _key(w: World) -> Any:
    pem = (w.server.data_dir / "auth" / "local-issuer-key.pem").read_bytes()
    return serialization.load_pem_private_key(pem, password=None)


def _claims(w: World, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": w.issuer.issuer,
        "sub": "alice",
        "aud": w.issuer.audience,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "scope": " ".join(ALICE_SCOPES),
        "wlcg.ver": "1.0",
    }
    return {**claims, **over}


def _signed(w: World, key: Any, **over: Any) -> str:
    return jwt.encode(_claims(w, **over), key, algorithm="ES256", headers={"kid": w.issuer.kid})


BAD_TOKENS: dict[str, Callable[[World], str]] = {
    "malformed": lambda w: "not-a-jwt",
    "expired": lambda w: _signed(
        w,
        _key(w),
        iat=int(time.time()) - 7200,
        nbf=int(time.time()) - 7200,
        exp=int(time.time()) - 3600,
    ),
    "forged": lambda w: _signed(w, ec.generate_private_key(ec.SECP256R1())),
    "wrong_audience": lambda w: _signed(w, _key(w), aud="https://other.example"),
    "alg_none": lambda w: jwt.encode(_claims(w), None, algorithm="none"),
    "tampered": lambda w: _tamper(_signed(w, _key(w))),
}


def _tamper(token: str) -> str:
    import base64
    import json

    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "mallory"
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{raw}.{sig}"


# -- the matrix --------------------------------------------------------------------------

AUTHED = sorted(CASES)


def _params(w: World, case: Case, *, fresh: str = "") -> dict[str, str]:
    job = w.new_job(running=fresh == "running") if fresh and case.resource == "job" else w.job
    dataset = w.new_dataset() if fresh and case.resource == "dataset" else w.dataset
    name = MODEL
    if fresh and case.resource == "model":
        name = next(w.fresh) if fresh == "unused" else w.new_model()
    if case.resource == "job":
        name = w.artifact  # {name} of the artifact routes
    partial = w.new_partial() if fresh and case.resource == "upload" else w.partial
    return {
        "job_id": job,
        "dataset_id": dataset,
        "name": name,
        "version": "1",
        "sha256": partial,
        "alias": "production",
    }


def _id(key: tuple[str, str]) -> str:
    return f"{key[0]} {key[1]}"


@pytest.mark.parametrize("key", AUTHED, ids=_id)
def test_without_a_valid_token_is_401(world: World, key: tuple[str, str]) -> None:
    case = CASES[key]
    params = _params(world, case)
    valid = world.token("alice", ALICE_SCOPES)
    tokens: dict[str, str | None] = {"none": None}
    tokens |= {name: make(world) for name, make in BAD_TOKENS.items()}
    clients = {what: world.client(token) for what, token in tokens.items()}
    # oauth2-proxy headers from a peer that is not a configured proxy are ignored
    forwarded = {"X-Forwarded-User": "alice", "X-Forwarded-Access-Token": valid,
                 "X-Forwarded-Groups": ADMIN_GROUP, "X_Forwarded_User": "alice"}  # fmt: skip
    clients["forwarded_untrusted"] = world.client(None, forwarded)
    if not key[1].startswith("/ui/"):  # only the UI (CSRF-protected) takes the cookie
        clients["session_cookie_on_api"] = world.client(None, session=valid)
    for what, client in clients.items():
        with client as c:
            r = case.send(world, c, params)
        token = tokens.get(what)
        assert r.status_code == 401, (what, r.status_code, r.text)
        assert r.headers.get("www-authenticate", "").startswith("Bearer"), what
        assert "alice" not in r.text, what
        assert token is None or token not in r.text, what


@pytest.mark.parametrize("key", [k for k in AUTHED if CASES[k].needs], ids=_id)
def test_missing_scope_is_403(world: World, key: tuple[str, str]) -> None:
    case = CASES[key]
    granted = tuple(s for s in ALICE_SCOPES if s not in case.needs)
    with world.client(world.token("alice", granted)) as c:
        r = case.send(world, c, _params(world, case))
    assert r.status_code == 403, (r.status_code, r.text)
    assert any(n in r.text for n in case.needs), r.text  # names the scope needed


@pytest.mark.parametrize("key", [k for k in AUTHED if CASES[k].resource], ids=_id)
def test_bob_cannot_reach_alices_resources(world: World, key: tuple[str, str]) -> None:
    case = CASES[key]
    with world.client(world.token("bob", BOB_SCOPES)) as c:
        r = case.send(world, c, _params(world, case))
    if case.resource == "listing":
        assert r.status_code == 200, r.text
        for secret in (world.job, world.dataset, MODEL):
            assert secret not in r.text, (secret, r.text)
        return
    expected = 403 if case.resource == "model" else 404
    assert r.status_code == expected, (r.status_code, r.text)
    # whatever bob did, alice's resources are still there
    with world.alice() as c:
        assert c.get(f"/api/v1/jobs/{world.job}").status_code == 200
        assert c.get(f"/api/v1/datasets/{world.dataset}").status_code == 200
        assert c.get(f"/v2/models/{MODEL}/ready").status_code == 200


@pytest.mark.parametrize("key", [k for k in AUTHED if CASES[k].owner], ids=_id)
def test_alice_reaches_her_own(world: World, key: tuple[str, str]) -> None:
    case = CASES[key]
    with world.alice() as c:
        r = case.send(world, c, _params(world, case, fresh=case.fresh))
    assert r.status_code in case.owner, (r.status_code, r.text)
    if case.resource == "listing":
        assert MODEL in r.text or world.job in r.text or world.dataset in r.text, r.text


ADMIN_VISIBLE = [
    k
    for k in AUTHED
    if k[0] == "GET" and CASES[k].needs and CASES[k].resource in ("job", "dataset", "listing")
]


@pytest.mark.parametrize("key", ADMIN_VISIBLE, ids=_id)
def test_admin_group_sees_alices_jobs_and_datasets(world: World, key: tuple[str, str]) -> None:
    case = CASES[key]
    admin = world.token("root", (*COMPUTE, *DATA), groups=(ADMIN_GROUP,))
    with world.client(admin) as c:
        r = case.send(world, c, _params(world, case))
    assert r.status_code == 200, (r.status_code, r.text)


def _bob_submits(world: World, doc: dict[str, Any]) -> httpx.Response:
    with world.client(world.token("bob", BOB_SCOPES)) as c:
        return c.post("/api/v1/jobs", json=doc)


def test_bob_cannot_read_alices_dataset_through_a_job(world: World) -> None:
    with world.alice() as c:
        info = c.get(f"/api/v1/datasets/{world.dataset}").json()
    by_name = pipeline_doc("steal")
    by_name["data"]["datasets"][0]["files"] = [f"dataset:{info['name']}"]
    r = _bob_submits(world, by_name)
    # dataset:NAME names the caller's own uploads only: alice's is as absent as no dataset
    assert r.status_code == 422, r.text
    assert "you have no dataset of that name" in r.json()["detail"]
    by_path = pipeline_doc("steal")
    path = world.server.data_dir / "datasets"
    by_path["data"]["datasets"][0]["files"] = [str(next(path.rglob("*.root")))]
    r = _bob_submits(world, by_path)
    assert r.status_code == 403, r.text  # a path needs storage.read on it
    assert "storage.read" in r.text


def test_bob_cannot_deploy_over_alices_model_through_a_job(world: World) -> None:
    doc = {**pipeline_doc("steal"), "deploy": {"name": MODEL}}
    r = _bob_submits(world, doc)
    assert r.status_code == 403, r.text
    assert f"storage.create:/models/{MODEL}" in r.text


@pytest.mark.parametrize("key", sorted(k for k in PUBLIC if k[0] == "GET"), ids=_id)
def test_public_routes_reveal_nothing_of_alices(world: World, key: tuple[str, str]) -> None:
    with world.client(None) as c:
        r = c.get(key[1])
    assert r.status_code < 500, r.text
    for secret in (world.job, world.dataset, MODEL, "alice"):
        assert secret not in r.text, (secret, key)
