"""The hardening suite: corrupted inputs, hostile uploads, overload and a soak run.

Every test here drives real processes (``mlaas4hep serve`` on a free loopback port) and
records what it measured with the ``figures`` fixture. At the end of the session the
figures are written as one JSON object to ``$MLAAS4HEP_HARDENING_FIGURES`` (default:
``hardening-figures.json`` in pytest's base temporary directory) and printed in the
terminal summary; docs/reliability.md quotes them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

_FIGURES = pytest.StashKey[dict[str, dict[str, Any]]]()
_FIGURES_PATH = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    # Until pyproject.toml lists it (strict markers would refuse it otherwise).
    config.addinivalue_line(
        "markers", "hardening: robustness suite (corrupt files, hostile uploads, overload, soak)"
    )
    config.stash[_FIGURES] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.hardening)


class Figures:
    """Measured numbers, grouped by property: ``figures.record("overload", p99_s=0.4)``."""

    def __init__(self, store: dict[str, dict[str, Any]]) -> None:
        self._store = store

    def record(self, section: str, **values: Any) -> None:
        self._store.setdefault(section, {}).update(values)


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Figures:
    default = tmp_path_factory.getbasetemp() / "hardening-figures.json"
    request.config.stash[_FIGURES_PATH] = Path(
        os.environ.get("MLAAS4HEP_HARDENING_FIGURES", default)
    )
    return Figures(request.config.stash[_FIGURES])


def pytest_unconfigure(config: pytest.Config) -> None:
    data = config.stash.get(_FIGURES, {})
    path = config.stash.get(_FIGURES_PATH, None)
    if data and path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    data = config.stash.get(_FIGURES, {})
    if not data:
        return
    path = config.stash.get(_FIGURES_PATH, None)
    terminalreporter.section("hardening figures")
    terminalreporter.write_line(json.dumps(data, indent=1, sort_keys=True))
    if path is not None:
        terminalreporter.write_line(f"(written to {path} at the end of the session)")
