"""Model owner records: who may read, infer on and modify a model (issue 15.3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import PermissionDenied, SpecError
from mlaas4hep.serve.ownership import OWNER_FILE, ModelOwners, parse_sharing

ISS = "https://issuer.example"
ALICE = Principal(ISS, "alice", name="alice")
BOB = Principal(ISS, "bob", name="bob")
HIGGS = Principal(ISS, "carol", groups=frozenset({"/cms/higgs/tth"}))
TOP = Principal(ISS, "dave", groups=frozenset({"/cms/top"}))
ADMIN = Principal(ISS, "root", groups=frozenset({"/mlaas/admin"}), is_admin=True)
ACTIONS = ("read", "infer", "create", "modify")


def test_unclaimed_then_claimed(tmp_path: Path) -> None:
    owners = ModelOwners(tmp_path)
    assert owners.record("m") is None
    owners.check(BOB, "modify", "m")  # nothing to protect yet
    record = owners.claim("m", ALICE.key, "alice")
    assert record.owner == ALICE.key
    assert all(record.allows(ALICE, a) and record.allows(ADMIN, a) for a in ACTIONS)
    assert not any(record.allows(BOB, a) for a in ACTIONS)
    with pytest.raises(PermissionDenied, match="belongs to another user") as caught:
        owners.check(BOB, "infer", "m")
    assert "alice" not in str(caught.value)  # the owner is not named
    doc = json.loads((tmp_path / "m" / OWNER_FILE).read_text())
    assert doc["owner"] == ALICE.key
    assert doc["groups"] == {}


def test_first_claim_wins(tmp_path: Path) -> None:
    owners = ModelOwners(tmp_path)
    owners.claim("m", ALICE.key)
    assert ModelOwners(tmp_path).claim("m", BOB.key).owner == ALICE.key
    assert not list((tmp_path / "m").glob(".owner-*"))


def test_group_sharing(tmp_path: Path) -> None:
    owners = ModelOwners(tmp_path)
    record = owners.claim("m", ALICE.key, groups=parse_sharing("/cms/higgs:read,/cms/top:modify"))
    assert record.allows(HIGGS, "infer")
    assert not record.allows(HIGGS, "modify")
    assert record.allows(TOP, "modify")
    assert record.allows(TOP, "read")
    assert not record.allows(BOB, "read")
    public = owners.share("m", parse_sharing("*:read"))
    assert owners.record("m") == public  # the cache follows the replaced file
    assert public.allows(BOB, "infer")
    assert not public.allows(BOB, "modify")
    assert not public.allows(TOP, "modify")


def test_legacy_models_belong_to_the_admin_group(tmp_path: Path) -> None:
    (tmp_path / "old" / "1").mkdir(parents=True)
    record = ModelOwners(tmp_path).record("old")
    assert record is not None
    assert record.legacy
    assert record.allows(BOB, "infer")
    assert record.allows(BOB, "read")
    assert not record.allows(ALICE, "modify")
    assert record.allows(ADMIN, "modify")
    with pytest.raises(PermissionDenied, match="only an admin"):
        ModelOwners(tmp_path).check(ALICE, "modify", "old")


@pytest.mark.parametrize("content", [b"not json", b'{"owner": 3}', b"[]"])
def test_unreadable_record_denies_all_but_admins(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / OWNER_FILE).write_bytes(content)
    record = ModelOwners(tmp_path).record("m")
    assert record is not None
    assert record.broken
    assert not record.allows(ALICE, "read")
    assert record.allows(ADMIN, "modify")


def test_symlinked_record_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "forged.json"
    elsewhere.write_text(json.dumps({"owner": BOB.key}))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / OWNER_FILE).symlink_to(elsewhere)
    record = ModelOwners(tmp_path).record("m")
    assert record is not None
    assert record.broken


@pytest.mark.parametrize("text", ["cms:read", "/cms:write", "/cms", "*:admin"])
def test_bad_sharing_is_refused(text: str) -> None:
    with pytest.raises(SpecError, match="invalid sharing entry"):
        parse_sharing(text)
