"""The container image, compose file and Kubernetes manifests agree with the code.

No container engine or cluster runs here, so the files are checked by parsing them: every
command is a real `mlaas4hep` sub-command with real flags (parsed by the CLI's own parser),
every `MLAAS4HEP_*` variable is a setting that validates (loaded by the service's own
settings loader), every probe path is a route of the app that role serves, ports, volumes,
secrets, selectors and service names point at things that exist.
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import (
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    K8S,
    ROOT,
    compose_file,
    cpu,
    dockerfile_env,
    dockerfile_stages,
    env_path,
    exec_form,
    k8s_objects,
    kustomization,
    memory,
    settings_paths,
)
from sqlalchemy.engine import make_url

from mlaas4hep import __version__
from mlaas4hep.auth.settings import AuthSettings
from mlaas4hep.cli import build_parser
from mlaas4hep.config import ENV_PREFIX, Settings, load_settings
from mlaas4hep.serve.settings import InferenceSettings

ROLES = {"api", "inference", "executor"}
HTTP_ROLES = {"api", "inference"}


# ---- shared checks ---------------------------------------------------------------------


def mlaas_role(argv: list[str]) -> str:
    """Parse *argv* (after `mlaas4hep`) with the real CLI parser; return the serve role."""
    try:
        args = build_parser(argv).parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`mlaas4hep {' '.join(argv)}` is not a valid command line ({exc})")
    assert args.command == "serve", argv
    assert args.only in ROLES, f"{argv}: run one role per container (--only api|executor|...)"
    return str(args.only)


def check_settings(env: dict[str, str]) -> Settings:
    """Load *env* as the service would; every section must validate, no variable unknown."""
    known = settings_paths()
    for name in env:
        assert name.startswith(ENV_PREFIX), f"{name}: not a mlaas4hep setting"
        assert env_path(name) in known, f"{name} names no setting; known: {sorted(known)}"
    settings = load_settings(environ=env)
    AuthSettings.from_mapping(settings.auth)
    InferenceSettings.from_mapping(settings.inference, settings.data_dir)
    return settings


def check_dask(argv: list[str]) -> None:
    scripts = importlib.metadata.entry_points(group="console_scripts", name="dask")
    assert scripts, "the `dask` command is not installed with the service's dependencies"
    assert argv[0] in {"scheduler", "worker"}, argv


class Routes:
    """Whether a path is served by the app of a role, asked of the real app factories.

    FastAPI includes routers lazily, so the route table is not a flat list to read: a GET
    through the app (no lifespan, no token) answers 404 only when no route matches.
    """

    def __init__(self, apps: dict[str, Any]) -> None:
        from fastapi.testclient import TestClient

        self._clients = {role: TestClient(app) for role, app in apps.items()}

    def serves(self, role: str, path: str) -> bool:
        return self._clients[role].get(path).status_code != 404


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> Routes:
    from mlaas4hep.api.app import create_app
    from mlaas4hep.serve.app import create_inference_app

    tmp = tmp_path_factory.mktemp("apps")
    # TestClient sends Host: testserver; the service answers listed names only.
    settings = Settings(data_dir=tmp / "data", allowed_hosts=["testserver"])
    api = create_app(settings, run_executor=False, with_inference=True)

    def nobody(header: str | None, peer: str | None) -> Any:
        raise AssertionError("not called")

    inference = create_inference_app(
        InferenceSettings(repository=tmp / "models"), authenticate=nobody
    )
    found = Routes({"api": api, "inference": inference})
    assert not found.serves("api", "/no-such-route")  # the check can fail
    assert not found.serves("inference", "/healthz")
    return found


# ---- the image ---------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_slim_non_root_with_a_healthcheck() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    final = stages[-1]
    words = [w for w, _ in final]
    base = final[0][1].split()[0]
    assert "slim" in base
    user = next(rest for w, rest in final if w == "USER")
    assert user.split(":")[0] not in {"0", "root"}
    installs = " ".join(rest for w, rest in final if w == "RUN" and "apt-get install" in rest)
    for tool in ("build-essential", "gcc", "g++", "make ", "git", "curl"):
        assert tool not in installs, f"build tool {tool!r} in the final image"
    assert any("COPY --from=" in f"{w} {rest}" for w, rest in final), "copies from the build"
    assert "HEALTHCHECK" in words
    assert exec_form(next(r for w, r in final if w == "ENTRYPOINT"))[-1] == "mlaas4hep"
    assert mlaas_role(exec_form(next(r for w, r in final if w == "CMD"))) == "api"
    env = dockerfile_env(final)
    settings = check_settings({k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})
    expose = next(r for w, r in final if w == "EXPOSE")
    assert int(expose) == settings.port
    assert settings.host == "0.0.0.0"


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    stages = dockerfile_stages()
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    for stage in stages:
        for word, rest in stage:
            if word != "COPY" or rest.startswith("--from"):
                continue
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert any(source.rstrip("/") == a or source.startswith(a) for a in allowed)
    extras = re.search(r"ARG EXTRAS=(\S+)", DOCKERFILE.read_text())
    assert extras is not None
    pyproject = (ROOT / "pyproject.toml").read_text()
    for extra in extras.group(1).split(","):
        assert re.search(rf"^{extra} = \[", pyproject, re.M), f"no extra {extra!r}"


class _Probe(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/v2/health/live" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def probe_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Probe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_image_healthcheck_script_answers_for_either_role(probe_server: int) -> None:
    script = DEPLOY / "container" / "healthcheck.py"
    env = {**os.environ, "MLAAS4HEP_PORT": str(probe_server)}
    assert subprocess.run([sys.executable, str(script)], env=env, check=False).returncode == 0
    with ThreadingHTTPServer(("127.0.0.1", 0), _Probe) as idle:
        closed = int(idle.server_address[1])
    env["MLAAS4HEP_PORT"] = str(closed)
    failed = subprocess.run([sys.executable, str(script)], env=env, capture_output=True)
    assert failed.returncode == 1


# ---- compose -----------------------------------------------------------------------------


def _image_entrypoint() -> list[str]:
    final = dockerfile_stages()[-1]
    return exec_form(next(r for w, r in final if w == "ENTRYPOINT"))


def _mlaas_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    image = compose["x-mlaas-image"]["image"]
    return {n: s for n, s in compose["services"].items() if s.get("image") == image}


def test_compose_has_every_part_of_the_architecture() -> None:
    compose = compose_file()
    services = compose["services"]
    roles: dict[str, int] = {}
    for service in _mlaas_services(compose).values():
        if service.get("entrypoint", _image_entrypoint())[-1] == "mlaas4hep":
            role = mlaas_role(service["command"])
            roles[role] = roles.get(role, 0) + service.get("deploy", {}).get("replicas", 1)
    assert roles["api"] >= 1
    assert roles["executor"] >= 1
    assert roles["inference"] >= 2
    assert {"postgres", "dask-scheduler", "dask-worker", "xrootd-proxy", "oauth2-proxy"} <= set(
        services
    )
    assert services["oauth2-proxy"]["profiles"] == ["oauth2-proxy"]  # optional
    image = compose["x-mlaas-image"]
    assert image["image"].endswith(f":{__version__}")
    assert (COMPOSE.parent / image["build"]["context"] / image["build"]["dockerfile"]).is_file()


def test_compose_mlaas_services_are_consistent_with_the_code(
    routes: Routes,
) -> None:
    compose = compose_file()
    volumes = set(compose["volumes"])
    db_services = compose["services"]
    for name, service in _mlaas_services(compose).items():
        entrypoint = service.get("entrypoint", _image_entrypoint())
        if entrypoint[-1] == "dask":
            check_dask(service["command"])
            continue
        role = mlaas_role(service["command"])
        settings = check_settings({k: str(v) for k, v in service["environment"].items()})
        mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}
        assert str(settings.data_dir) in mounts, f"{name}: data_dir is not on the shared volume"
        assert mounts[str(settings.data_dir)] in volumes
        url = make_url(settings.db_url)
        postgres = db_services[str(url.host)]["environment"]
        assert (url.username, url.database) == (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"])
        assert url.password == postgres["POSTGRES_PASSWORD"]
        if role in HTTP_ROLES:
            published = [p.rsplit(":", 1)[1] for p in service["ports"]]
            wanted = [str(settings.port)]
            if role == "inference":
                inference = InferenceSettings.from_mapping(settings.inference, settings.data_dir)
                wanted.append(str(inference.grpc_port))
                assert inference.grpc_host == "0.0.0.0"
                limit = float(service["deploy"]["resources"]["limits"]["cpus"])
                assert inference.workers * inference.threads == limit, "one core per thread"
                host_ports = [p.split(":")[1] for p in service["ports"]]
                assert len(set(host_ports)) == len(host_ports)
            assert published == wanted, f"{name}: ports {service['ports']}"
            assert settings.host == "0.0.0.0"
        else:
            assert "ports" not in service
            assert service["healthcheck"] == {"disable": True}, "no HTTP port to check"
        if role == "inference":
            repository = InferenceSettings.from_mapping(settings.inference, settings.data_dir)
            assert repository.repository.is_relative_to(settings.data_dir)
        if role == "executor" and settings.executor.kind == "dask":
            address = settings.executor.address or ""
            host, port = address.removeprefix("tcp://").split(":")
            scheduler = db_services[host]["command"]
            assert scheduler[scheduler.index("--port") + 1] == port
            worker = db_services["dask-worker"]
            assert address in worker["command"]
            assert mounts[str(settings.data_dir)] in {v.split(":")[0] for v in worker["volumes"]}
    assert routes.serves("api", "/healthz")


def test_compose_oauth2_proxy_is_the_only_trusted_proxy() -> None:
    compose = compose_file()
    proxy = compose["services"]["oauth2-proxy"]
    address = ipaddress.ip_address(proxy["networks"]["backend"]["ipv4_address"])
    subnet = compose["networks"]["backend"]["ipam"]["config"][0]["subnet"]
    assert address in ipaddress.ip_network(subnet)
    upstream = proxy["environment"]["OAUTH2_PROXY_UPSTREAMS"]
    host, port = upstream.removeprefix("http://").rstrip("/").split(":")
    api_env = compose["services"][host]["environment"]
    assert mlaas_role(compose["services"][host]["command"]) == "api"
    assert port == api_env["MLAAS4HEP_PORT"]
    trusted = yaml.safe_load(api_env["MLAAS4HEP_AUTH__TRUSTED_PROXIES"])
    assert [ipaddress.ip_network(t) for t in trusted] == [ipaddress.ip_network(f"{address}/32")]
    assert proxy["environment"]["OAUTH2_PROXY_PASS_ACCESS_TOKEN"] == "true"  # noqa: S105 (a flag)
    issuers = yaml.safe_load(api_env["MLAAS4HEP_AUTH__ISSUERS"])
    assert proxy["environment"]["OAUTH2_PROXY_OIDC_ISSUER_URL"] == issuers[0]["issuer"]


def test_compose_xrootd_services_use_the_shared_configs() -> None:
    compose = compose_file()
    found = 0
    for name, service in compose["services"].items():
        mounted = [v for v in service.get("volumes", []) if v.split(":")[0].endswith(".cfg")]
        for volume in mounted:
            source, target = volume.split(":")[:2]
            cfg = (COMPOSE.parent / source).resolve()
            assert cfg.is_relative_to(DEPLOY / "xrootd"), f"{name}: {source}"
            assert cfg.is_file(), f"{name}: {source} does not exist"
            assert service["command"][service["command"].index("-c") + 1] == target
            needed = set(re.findall(r"\$\((XRD_[A-Z_]+)\)", cfg.read_text()))
            assert needed <= set(service["environment"]), f"{name}: {needed}"
            found += 1
    assert found >= 1
    xrootd_image = dockerfile_stages(DEPLOY / "container" / "xrootd.Dockerfile")[-1]
    assert next(r for w, r in xrootd_image if w == "USER") != "root"


# ---- Kubernetes --------------------------------------------------------------------------


def _by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _container_env(
    container: dict[str, Any], objects: list[dict[str, Any]]
) -> dict[str, str | None]:
    configmaps, secrets = _by_kind(objects, "ConfigMap"), _by_kind(objects, "Secret")
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] in secrets, f"no Secret {ref['name']!r}"
            assert ref["key"] in secrets[ref["name"]]["stringData"], ref
            env[item["name"]] = secrets[ref["name"]]["stringData"][ref["key"]]
    return env


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_kustomization_lists_every_manifest_and_the_image() -> None:
    listed = set(kustomization()["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    images = kustomization()["images"]
    assert [i["newTag"] for i in images] == [__version__]
    for deployment in _by_kind(k8s_objects(), "Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["image"] == images[0]["name"]


def test_k8s_deployments_are_consistent_with_the_code(routes: Routes) -> None:
    objects = k8s_objects()
    claims = _by_kind(objects, "PersistentVolumeClaim")
    seen_roles = set()
    for name, deployment in _by_kind(objects, "Deployment").items():
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        assert _selects(spec["selector"], spec["template"]["metadata"]["labels"]), name
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert cpu(requests["cpu"]) <= cpu(limits["cpu"]), name
        assert memory(requests["memory"]) <= memory(limits["memory"]), name
        command = container.get("command", _image_entrypoint())
        if command[-1] == "dask":
            check_dask(container["args"])
            assert "MLAAS4HEP_DATABASE_URL" not in _container_env(container, objects)
            continue
        role = mlaas_role(container["args"])
        seen_roles.add(role)
        env = _container_env(container, objects)
        settings = check_settings({k: str(v) for k, v in env.items()})
        volumes = {v["name"]: v for v in pod["volumes"]}
        data = next(
            m for m in container["volumeMounts"] if m["mountPath"] == str(settings.data_dir)
        )
        assert volumes[data["name"]]["persistentVolumeClaim"]["claimName"] in claims
        if role not in HTTP_ROLES:
            assert "ports" not in container
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if role == "inference":
            _check_inference_processes(settings, ports, limits)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert ports[get["port"]] == settings.port, f"{name} {probe}"
            assert routes.serves(role, get["path"]), f"{name} {probe}: no route {get['path']}"
    assert seen_roles == ROLES
    for claim in claims.values():
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # shared by all replicas


def _check_inference_processes(
    settings: Settings, ports: dict[str, int], limits: dict[str, Any]
) -> None:
    """gRPC on its named port, on every interface; one process per core, one ONNX Runtime
    thread each (docs/inference.md, "Processes and threads"); the supervisor runs them."""
    inference = InferenceSettings.from_mapping(settings.inference, settings.data_dir)
    assert ports["grpc"] == inference.grpc_port
    assert inference.grpc_host == "0.0.0.0"
    assert inference.workers * inference.threads == cpu(limits["cpu"])
    assert inference.workers > 1


def test_k8s_inference_grpc_is_reachable_through_the_service_and_the_policies() -> None:
    objects = k8s_objects()
    service = _by_kind(objects, "Service")["mlaas4hep-inference"]
    assert "grpc" in {p["targetPort"] for p in service["spec"]["ports"]}
    (container,) = _by_kind(objects, "Deployment")["mlaas4hep-inference"]["spec"]["template"][
        "spec"
    ]["containers"]
    grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    allowed = set()
    for policy in _by_kind(objects, "NetworkPolicy").values():
        selector = policy["spec"]["podSelector"]
        labels = {"app.kubernetes.io/name": "mlaas4hep", "app.kubernetes.io/component": "inference"}
        if selector and _selects(selector, labels):
            for rule in policy["spec"].get("ingress", []):
                allowed |= {p["port"] for p in rule.get("ports", [])}
    assert grpc_port in allowed


def test_k8s_services_hpa_pdb_and_ingress_point_at_real_things(
    routes: Routes,
) -> None:
    objects = k8s_objects()
    deployments = _by_kind(objects, "Deployment")
    services = _by_kind(objects, "Service")

    def pods_of(selector: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            d
            for d in deployments.values()
            if _selects(selector, d["spec"]["template"]["metadata"]["labels"])
        ]

    for name, service in services.items():
        (deployment,) = pods_of({"matchLabels": service["spec"]["selector"]})
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        names = {p["name"] for p in container["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names, name
    (hpa,) = _by_kind(objects, "HorizontalPodAutoscaler").values()
    target = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
    (container,) = target["spec"]["template"]["spec"]["containers"]
    assert mlaas_role(container["args"]) == "inference"
    assert "cpu" in container["resources"]["requests"]  # utilisation needs a request
    assert hpa["spec"]["minReplicas"] >= 2
    budgets = _by_kind(objects, "PodDisruptionBudget").values()
    covered = set()
    for pdb in budgets:
        (deployment,) = pods_of(pdb["spec"]["selector"])
        assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
        covered.add(mlaas_role(deployment["spec"]["template"]["spec"]["containers"][0]["args"]))
    assert covered == HTTP_ROLES
    (ingress,) = _by_kind(objects, "Ingress").values()
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            service = services[backend["name"]]
            assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
            (deployment,) = pods_of({"matchLabels": service["spec"]["selector"]})
            role = mlaas_role(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
            assert routes.serves(role, path["path"]), f"{role} does not serve {path['path']}"


def test_k8s_network_policies_select_pods_and_keep_jobs_off_the_database() -> None:
    objects = k8s_objects()
    deployments = _by_kind(objects, "Deployment")
    labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    policies = _by_kind(objects, "NetworkPolicy")
    db_port = make_url(str(_by_kind(objects, "Secret")["mlaas4hep-db"]["stringData"]["url"])).port
    egress_ports: dict[str, set[int]] = {}
    for name, policy in policies.items():
        selector = policy["spec"]["podSelector"]
        if selector:
            assert any(_selects(selector, lab) for lab in labels), f"{name} selects nothing"
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            for peer in rule.get("to", []) + rule.get("from", []):
                if "podSelector" in peer:
                    assert any(_selects(peer["podSelector"], lab) for lab in labels), name
        for rule in policy["spec"].get("egress", []):
            component = selector["matchLabels"]["app.kubernetes.io/component"]
            egress_ports.setdefault(component, set()).update(
                p["port"] for p in rule.get("ports", [])
            )
    assert "default-deny-ingress" in policies
    assert db_port in egress_ports["executor"]
    assert db_port not in egress_ports["dask-worker"]  # job processes run there
    assert 1094 in egress_ports["dask-worker"]  # XRootD proxy / XCache


# ---- the docs ---------------------------------------------------------------------------


def _documented() -> set[str]:
    text = (ROOT / "docs" / "deployment.md").read_text()
    return set(re.findall(r"^\| `(MLAAS4HEP_[A-Z0-9_]+)`", text, re.M))


def _used() -> set[str]:
    names = set(re.findall(r"\b(MLAAS4HEP_[A-Z0-9_]+)\b", COMPOSE.read_text()))
    for path in K8S.glob("*.yaml"):
        names |= set(re.findall(r"\b(MLAAS4HEP_[A-Z0-9_]+)\b", path.read_text()))
    return names


def test_every_variable_used_is_in_the_one_table_and_names_a_setting() -> None:
    documented = _documented()
    assert _used() <= documented, sorted(_used() - documented)
    known = settings_paths()
    for name in documented:
        assert env_path(name) in known, f"docs/deployment.md documents {name}: no such setting"


def test_yaml_files_parse_strictly() -> None:
    # Duplicate keys are silently merged by PyYAML; a strict re-read catches them.
    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader: Strict, node: yaml.MappingNode) -> dict[Any, Any]:
        keys = [k.value for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
        assert len(keys) == len(set(keys)), f"duplicate keys at line {node.start_mark.line}"
        return loader.construct_mapping(node)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    for path in [COMPOSE, *sorted(K8S.glob("*.yaml"))]:
        for _doc in yaml.load_all(Path(path).read_text(), Loader=Strict):
            pass
