"""The model registry below HTTP: alias records, serving policies, version provenance and
the manager's load-then-switch (no HTTP; serve/registry.py, repository.py, manager.py)."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mlaas4hep.artifact import FEATURES_FILE, BundleFeatures
from mlaas4hep.errors import NotFound, SpecError
from mlaas4hep.serve.manager import ModelManager
from mlaas4hep.serve.metrics import InferenceMetrics
from mlaas4hep.serve.model_registry import bundle_defaults
from mlaas4hep.serve.registry import AliasTable, VersionRecord, check_alias, split_ref
from mlaas4hep.serve.repository import ModelRepository, VersionPolicy
from mlaas4hep.serve.settings import BatchPolicy


@pytest.fixture
def manager(tmp_path: Path) -> ModelManager:
    repo = ModelRepository(tmp_path / "repo", VersionPolicy(latest=1), BatchPolicy())
    return ModelManager(repo, ThreadPoolExecutor(1), InferenceMetrics(), threads=1)


def test_alias_table_promote_rollback_remove() -> None:
    table = AliasTable().promote("production", 1).promote("production", 2)
    table = table.promote("production", 3).promote("staging", 3)
    assert table.aliases == {"production": 3, "staging": 3}
    assert table.history["production"] == (1, 2)
    assert table.of_version(3) == ["production", "staging"]
    back = table.rollback("m", "production")
    assert (back.aliases["production"], back.history["production"]) == (2, (1,))
    back = back.rollback("m", "production")
    with pytest.raises(SpecError, match="no earlier version to roll back to"):
        back.rollback("m", "production")
    with pytest.raises(NotFound, match=r"no alias 'prod' \(aliases: production -> 1"):
        back.resolve("m", "prod")
    assert "staging" not in back.remove("m", "staging").aliases
    assert AliasTable.from_json(table.to_json(), "x") == table


@pytest.mark.parametrize("bad", ["Production", "1", "latest", "", "a@b", "x" * 65])
def test_alias_names_are_checked(bad: str) -> None:
    with pytest.raises(SpecError, match="invalid alias"):
        check_alias(bad)


def test_name_at_alias_references() -> None:
    assert split_ref("tth@production", None) == ("tth", "production")
    assert split_ref("tth", "3") == ("tth", "3")
    with pytest.raises(SpecError, match="give one"):
        split_ref("tth@production", "2")


@pytest.mark.parametrize(
    ("text", "described", "selected"),
    [
        ("latest", "latest", [4]),
        ("latest:2", "latest:2", [3, 4]),
        ("all", "all", [1, 2, 3, 4]),
        ("aliased", "aliased", []),
        ("versions:1,3", "versions:1,3", [1, 3]),
        ("2, 4", "versions:2,4", [2, 4]),
    ],
)
def test_policies_parse_describe_and_select(text: str, described: str, selected: list[int]) -> None:
    policy = VersionPolicy.parse(text)
    assert policy.describe() == described
    assert VersionPolicy.from_json(policy.to_json(), "x") == policy
    assert policy.select([1, 2, 3, 4]) == (selected or [4])  # aliased, no alias: newest
    # an aliased version is loaded whatever the policy; aliased loads nothing else
    assert policy.select([1, 2, 3, 4], {1}) == sorted({1, *selected})


@pytest.mark.parametrize("bad", ["newest", "latest:0", "versions:", "all:2", "0,1"])
def test_bad_policies_say_the_choices(bad: str) -> None:
    with pytest.raises(SpecError, match="'latest:N', 'all', 'aliased'"):
        VersionPolicy.parse(bad)


def test_commit_records_provenance_and_policy_keeps_batching(
    manager: ModelManager, model_dir: Path
) -> None:
    repo = manager.repository
    source = VersionRecord("job", "iss#alice", "alice", "job42")
    assert repo.publish("m", model_dir, record=source) == 1
    record = repo.record("m", 1)
    assert record is not None
    assert (record.source, record.source_job, record.owner_name) == ("job", "job42", "alice")
    assert record.created > 0
    (repo.root / "m" / "config.json").write_text('{"batching": {"max_batch_size": 7}}')
    repo.set_policy("m", VersionPolicy.parse("latest:3"))
    config = repo.config("m")
    assert (config.version_policy.latest, config.batching.max_batch_size) == (3, 7)
    assert config.policy_set


def test_an_aliased_version_stays_loaded_and_others_say_why(
    manager: ModelManager, model_dir: Path
) -> None:
    repo = manager.repository
    repo.publish("m", model_dir)
    asyncio.run(manager.sync())
    asyncio.run(manager.change_aliases("m", lambda t: t.promote("production", 1)))
    repo.publish("m", model_dir)
    repo.publish("m", model_dir)
    asyncio.run(manager.sync())
    assert manager.served_versions("m") == [1, 3]  # latest:1 plus the aliased one
    assert manager.resolve("m", "production") == 1
    assert manager.resolve("m", None) is None
    assert manager.get("m").version == 3
    index = {e.version: e for e in asyncio.run(manager.index())}
    assert (index[2].status, index[2].reason) == ("not loaded", "not loaded (policy: latest)")
    assert index[1].status == index[3].status == "serving"


def test_promotion_loads_first_then_switches(manager: ModelManager, model_dir: Path) -> None:
    repo = manager.repository
    repo.publish("m", model_dir)
    repo.publish("m", model_dir)
    repo.set_policy("m", VersionPolicy.parse("versions:1"))

    async def scenario() -> list[int]:
        await manager.sync()
        await manager.change_aliases("m", lambda t: t.promote("production", 1))
        assert manager.served_versions("m") == [1]  # version 2 not loaded yet
        seen: list[int] = []
        done = asyncio.Event()

        async def reader() -> None:  # a client asking for the alias all along
            while not done.is_set():
                version = manager.resolve("m", "production")
                assert version is not None
                seen.append(manager.get("m", version).version)  # NotFound = a window
                await asyncio.sleep(0)

        task = asyncio.create_task(reader())
        await manager.change_aliases("m", lambda t: t.promote("production", 2))
        seen.append(manager.get("m", manager.resolve("m", "production")).version)
        done.set()
        await task
        return seen

    seen = asyncio.run(scenario())
    assert seen[0] == 1
    assert seen[-1] == 2
    assert sorted(set(seen)) == [1, 2]
    assert json.loads((repo.root / "m" / "aliases.json").read_text())["aliases"] == {
        "production": 2
    }


def test_a_version_that_does_not_load_is_not_promoted(
    manager: ModelManager, model_dir: Path
) -> None:
    repo = manager.repository
    repo.publish("m", model_dir)
    asyncio.run(manager.sync())
    asyncio.run(manager.change_aliases("m", lambda t: t.promote("production", 1)))
    broken = repo.root / "m" / "2"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(SpecError, match="version 2 cannot be served: load failed"):
        asyncio.run(manager.change_aliases("m", lambda t: t.promote("production", 2)))
    with pytest.raises(NotFound, match="no version 9"):
        asyncio.run(manager.change_aliases("m", lambda t: t.promote("production", 9)))
    assert repo.aliases("m").aliases == {"production": 1}  # the record is unchanged
    assert manager.resolve("m", "production") == 1


def test_predict_form_defaults_come_from_the_normalisation(tmp_path: Path) -> None:
    def bundle(normalize: str) -> Path:
        features = BundleFeatures(
            features=("a", "b"),
            task="binary",
            n_classes=2,
            class_names=("bkg", "sig"),
            normalize=normalize,
            offset=(10.0, -1.0),
            scale=(4.0, 2.0),
        )
        d = tmp_path / normalize
        d.mkdir()
        (d / FEATURES_FILE).write_text(json.dumps(features.to_json()))
        return d

    standard = bundle_defaults(bundle("standard"))
    assert standard is not None
    assert standard.values == (10.0, -1.0)
    assert "means" in standard.source
    minmax = bundle_defaults(bundle("minmax"))
    assert minmax is not None
    assert minmax.values == (12.0, 0.0)
    assert bundle_defaults(bundle("none")) is None
    assert bundle_defaults(tmp_path) is None
