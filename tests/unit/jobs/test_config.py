"""Settings: defaults, YAML file, MLAAS4HEP_* variables, errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlaas4hep.config import Settings, load_settings
from mlaas4hep.errors import SpecError


def test_defaults_are_embedded_sqlite_on_loopback(tmp_path: Path) -> None:
    s = load_settings(environ={"MLAAS4HEP_DATA_DIR": str(tmp_path)})
    assert s.host == "127.0.0.1"
    assert s.db_url == f"sqlite:///{tmp_path / 'mlaas4hep.db'}"
    assert s.limits.memory_bytes == 4 * 1024**3
    assert s.executor.job_command[-1] == "run"


def test_file_then_environment_nested_and_lists(tmp_path: Path) -> None:
    cfg = tmp_path / "svc.yaml"
    cfg.write_text("port: 9000\nexecutor: {workers: 4, lease_s: 10}\nauth: {local_issuer: true}\n")
    env = {
        "MLAAS4HEP_EXECUTOR__WORKERS": "8",
        "MLAAS4HEP_EXECUTOR__JOB_COMMAND": '["/bin/true", "x"]',
        "MLAAS4HEP_LIMITS__CPU_S": "null",
        "MLAAS4HEP_URL": "http://client-only",  # read by the CLI, ignored here
        "MLAAS4HEP_TOKEN_FILE": "/tmp/token",  # the CLI's token store
        "MLAAS4HEP_CACHE_DIR": "/tmp/cache",  # the client's model cache
        "OTHER": "x",
    }
    s = load_settings(cfg, env)
    assert s.port == 9000
    assert s.executor.workers == 8
    assert s.executor.lease_s == 10
    assert s.executor.job_command == ["/bin/true", "x"]
    assert s.limits.cpu_s is None
    assert s.auth == {"local_issuer": True}


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MLAAS4HEP_PORT": "70000"}, "port"),
        ({"MLAAS4HEP_EXECUTOR__SANDBOX": "docker"}, "executor.sandbox"),
        ({"MLAAS4HEP_EXECUTOR__BOGUS": "1"}, "executor.bogus"),
    ],
)
def test_invalid_values_name_the_field(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        load_settings(environ=env)


def test_unreadable_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: [1,\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_settings(bad, {})
    bad.write_text("- 1\n")
    with pytest.raises(SpecError, match="must hold a mapping"):
        load_settings(bad, {})


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValueError, match="frozen"):
        s.port = 1  # type: ignore[misc]
