"""Reading the deployment files the way their tools would, without a container engine.

``compose_file()`` parses the file, then interpolates ``${NAME:-default}`` in its values like
docker compose (defaults only: the test sets none of these names); ``k8s_objects()``
loads every manifest the kustomization lists; ``dockerfile_stages()`` splits the Dockerfile
into stages of ``(instruction, arguments)``; ``settings_paths()`` lists every setting an
``MLAAS4HEP_*`` variable can name, from the settings models themselves.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from mlaas4hep.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str) -> str:
    """Compose-style variable substitution with the defaults (``$$`` is a literal ``$``)."""

    def one(match: re.Match[str]) -> str:
        name, op, default = match.groups()
        if op in (":?", "?"):
            msg = f"${{{name}}} is required; a plain `docker compose up` would fail"
            raise AssertionError(msg)
        return default or ""

    return _VAR.sub(one, text.replace("$$", "\0")).replace("\0", "$")


def compose_file() -> dict[str, Any]:
    """The compose file as compose sees it: parsed, then every string value interpolated."""
    loaded = _interpolated(yaml.safe_load(COMPOSE.read_text()))
    assert isinstance(loaded, dict)
    return loaded


def _interpolated(node: Any) -> Any:
    if isinstance(node, str):
        return interpolate(node)
    if isinstance(node, dict):
        return {key: _interpolated(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolated(value) for value in node]
    return node


def k8s_objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objects = []
    for name in kustomization["resources"]:
        objects += [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]
    return objects


def kustomization() -> dict[str, Any]:
    loaded = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def dockerfile_stages(path: Path = DOCKERFILE) -> list[list[tuple[str, str]]]:
    """Stages of ``(INSTRUCTION, arguments)`` with continuation lines joined."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip().removesuffix("\\") + " "
        if not raw.rstrip().endswith("\\"):
            if current.strip():
                lines.append(current.strip())
            current = ""
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word.upper(), rest.strip()))
    return stages


def exec_form(arguments: str) -> list[str]:
    """A JSON-array (exec form) instruction argument, e.g. ENTRYPOINT or CMD."""
    value = json.loads(arguments)
    assert isinstance(value, list), f"{arguments!r} is not in exec form"
    return [str(v) for v in value]


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in stage:
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def settings_paths() -> set[tuple[str, ...]]:
    """Every settings path, e.g. ``("executor", "lease_s")``, ``("inference", "repository")``."""
    from mlaas4hep.auth.settings import AuthSettings
    from mlaas4hep.serve.settings import InferenceSettings

    paths = _model_paths(Settings, ())
    for section, cls in (("auth", AuthSettings), ("inference", InferenceSettings)):
        paths |= {(section, f.name) for f in dataclasses.fields(cls)}
    try:
        from mlaas4hep.api.ui.settings import UiSettings
    except ImportError:
        pass
    else:
        paths |= {("ui", f.name) for f in dataclasses.fields(UiSettings)}
    return paths


def _model_paths(model: type[BaseModel], prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
    out = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out |= _model_paths(annotation, (*prefix, name))
        else:
            out.add((*prefix, name))
    return out


def env_path(name: str) -> tuple[str, ...]:
    assert name.startswith(ENV_PREFIX), name
    return tuple(name[len(ENV_PREFIX) :].lower().split("__"))


def cpu(quantity: str | int) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)
