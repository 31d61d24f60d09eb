"""A job's ``deploy:`` needs modify rights on an existing model, at submission and at
publish time; its output directory is read as hostile (issue 15, items 2 and 3)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from mlaas4hep.auth.principal import Principal
from mlaas4hep.config import Settings
from mlaas4hep.errors import PermissionDenied
from mlaas4hep.jobs.deploy import check_deploy_rights, publish
from mlaas4hep.jobs.records import JobRecord
from mlaas4hep.jobs.states import State
from mlaas4hep.serve.intake import UnsafeModelFiles
from mlaas4hep.serve.ownership import ModelOwners
from mlaas4hep.serve.samples import write_sample_model

ISS = "https://issuer.example"
SCOPES = frozenset({"storage.create:/models", "storage.modify:/models"})
ALICE = Principal(ISS, "alice", SCOPES)
BOB = Principal(ISS, "bob", SCOPES)
ADMIN = Principal(ISS, "root", SCOPES, is_admin=True)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.model_validate({"data_dir": str(tmp_path / "data")})


def _repo(settings: Settings) -> Path:
    return settings.data_dir / "models"


def _job(owner: Principal, name: str) -> JobRecord:
    now = time.time()
    spec = json.dumps({"name": "j", "deploy": {"name": name}})
    return JobRecord(
        id="0" * 32, owner=owner.key, name="j", state=State.RUNNING, spec=spec,
        request_hash="", idempotency_key=None, needs_network=False, attempt=1,
        max_attempts=1, cancel_requested=False, worker=None, lease_until=None, pgid=None,
        created_at=now, updated_at=now, started_at=now, finished_at=None, reason=None,
        progress=None, result_dir=None,
    )  # fmt: skip


def _result(settings: Settings) -> Path:
    return write_sample_model(settings.data_dir / "jobs" / ("0" * 32) / "result", (4, 8, 1))


def test_check_deploy_rights(settings: Settings) -> None:
    check_deploy_rights(settings, BOB, "free")  # a new name: the create scope suffices
    ModelOwners(_repo(settings)).claim("alice-model", ALICE.key)
    with pytest.raises(PermissionDenied, match="belongs to another user"):
        check_deploy_rights(settings, BOB, "alice-model")
    check_deploy_rights(settings, ALICE, "alice-model")
    check_deploy_rights(settings, ADMIN, "alice-model")
    narrow = Principal(ISS, "alice", frozenset({"storage.create:/models/alice-model"}))
    with pytest.raises(PermissionDenied, match=r"storage.modify:/models/alice-model"):
        check_deploy_rights(settings, narrow, "alice-model")
    with pytest.raises(PermissionDenied, match=r"storage.create:/models/x"):
        check_deploy_rights(settings, Principal(ISS, "eve"), "x")


def test_publish_rechecks_ownership(settings: Settings) -> None:
    result = _result(settings)
    assert publish(settings, _job(ALICE, "m"), result) == ("m", 1)  # claims the name
    assert publish(settings, _job(ALICE, "m"), result) == ("m", 2)
    with pytest.raises(PermissionDenied, match="belongs to another user"):
        publish(settings, _job(BOB, "m"), result)
    assert sorted(p.name for p in (_repo(settings) / "m").iterdir() if p.name.isdigit()) == [
        "1",
        "2",
    ]
    assert not list(_repo(settings).glob(".staging-*"))


def test_publish_refuses_links_in_the_result(settings: Settings, tmp_path: Path) -> None:
    key = settings.data_dir / "auth" / "local-issuer-key.pem"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nSECRET\n")
    result = _result(settings)
    (result / "metadata.json").unlink()
    os.symlink(key, result / "metadata.json")
    with pytest.raises(UnsafeModelFiles, match=r"metadata.json") as caught:
        publish(settings, _job(ALICE, "m"), result)
    assert "SECRET" not in str(caught.value)
    assert ModelOwners(_repo(settings)).record("m") is None  # nothing claimed either
