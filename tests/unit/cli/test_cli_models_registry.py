"""``mlaas4hep models aliases|promote|rollback|policy`` against the app (as alice), and how
``models list`` shows a version the serving policy does not load."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import cli_service, publish_sample_model
from fastapi.testclient import TestClient

from mlaas4hep.cli import main
from mlaas4hep.cli.models_registry import state_cell


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    publish_sample_model(tmp_path)
    publish_sample_model(tmp_path)  # version 2
    with cli_service(tmp_path, monkeypatch) as tc:
        yield tc


def _out(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_promote_rollback_aliases_and_policy(
    service: TestClient, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _out(capsys, "models", "promote", "tiny", "1", "--alias", "production", "--yes")
    assert out.strip() == "tiny@production: nothing -> version 1"
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["models", "promote", "tiny", "2", "--alias", "production"]) == 2
    assert "(version 1 -> version 2)" in capsys.readouterr().err  # asks; no terminal
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    change = json.loads(_out(capsys, "models", "promote", "tiny", "2", "--alias", "production",
                             "--json"))  # fmt: skip
    assert (change["previous"], change["version"]) == (1, 2)
    out = _out(capsys, "models", "rollback", "tiny", "--alias", "production", "--yes")
    assert out.strip() == "tiny@production: version 2 -> version 1"
    assert main(["models", "rollback", "tiny", "--alias", "production", "--yes"]) == 2
    assert "no earlier version to roll back to" in capsys.readouterr().err
    view = json.loads(_out(capsys, "models", "aliases", "tiny", "--json"))
    assert view["aliases"] == {"production": 1}
    assert "production" in _out(capsys, "models", "aliases", "tiny")
    out = _out(capsys, "models", "policy", "tiny", "aliased")
    assert out.strip() == "model tiny: policy aliased; loaded versions: 1"
    listing = _out(capsys, "models", "list")
    assert "not loaded" in listing
    assert "not loaded (policy: aliased)" in listing
    assert main(["models", "policy", "tiny", "newest"]) == 2
    assert "'latest:N'" in capsys.readouterr().err


def test_list_styles() -> None:
    assert state_cell("READY", "") == ("READY", "green")
    assert state_cell("UNAVAILABLE", "not loaded (policy: latest)") == ("not loaded", "dim")
    assert state_cell("UNAVAILABLE", "load failed: bad") == ("UNAVAILABLE", "red")
