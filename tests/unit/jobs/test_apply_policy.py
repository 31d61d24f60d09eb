"""Apply requests through the one submission policy (jobs/policy.py, jobs/apply_job.py).

Without HTTP and without running a job: read rights on the model (scopes and owner
record), the version pinned at submission, inputs resolved and checked like a pipeline's,
the bundle copied into the job's input, the job command built from the stored request.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlaas4hep.auth.principal import Principal
from mlaas4hep.config import Settings
from mlaas4hep.errors import Conflict, PermissionDenied, SpecError
from mlaas4hep.jobs.apply_job import apply_argv, model_dir, register_outputs
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.deploy import model_repository
from mlaas4hep.jobs.layout import job_paths
from mlaas4hep.jobs.policy import authorize
from mlaas4hep.jobs.service import JobService, UserFile, pipeline_validator
from mlaas4hep.jobs.store import JobStore
from mlaas4hep.serve.ownership import ModelOwners
from mlaas4hep.serve.samples import write_sample_model

ISSUER = "https://issuer.test"
BASE = frozenset({"compute.create", "storage.read:/data"})


@pytest.fixture
def service(settings: Settings) -> Iterator[JobService]:
    store = JobStore(settings.db_url)
    yield JobService(store, DatasetStore(store, settings), settings, pipeline_validator)
    store.close()


def user(name: str, *scopes: str, groups: tuple[str, ...] = ()) -> Principal:
    default = (f"storage.read:/models/{name}-model",) if not scopes else ()
    return Principal(ISSUER, name, scopes=BASE | set(scopes) | set(default), groups=groups)


def publish(settings: Settings, tmp_path: Path, name: str, owner: str, **share: str) -> int:
    repository = model_repository(settings)
    source = write_sample_model(tmp_path / f"src-{name}", (4, 8, 1), seed=len(name))
    ModelOwners(repository.root).claim(name, f"{ISSUER}#{owner}", owner, tuple(share.items()))
    return repository.publish(name, source)


def request(model: str, *files: str, **apply: Any) -> dict[str, Any]:
    return {
        "name": "score",
        "apply": {"model": model, "files": list(files or ["/data/a.root"]), **apply},
    }


def test_the_latest_version_is_pinned_and_the_bundle_copied(
    service: JobService, settings: Settings, tmp_path: Path
) -> None:
    publish(settings, tmp_path, "alice-model", "alice")
    publish(settings, tmp_path, "alice-model", "alice")
    sub = authorize(service, user("alice"), request("alice-model", "/data/a.root", tree="Events"))
    assert sub.document["apply"]["model"] == "alice-model:2"
    assert sub.spec is None
    assert not sub.needs_network
    job, created = service.submit(sub)
    assert created
    assert job.name == "score"
    paths = job_paths(settings.data_dir, job.id)
    bundle = model_dir(paths.input, "alice-model")
    assert sorted(p.name for p in bundle.iterdir()) == ["metadata.json", "model.onnx"]
    publish(settings, tmp_path, "alice-model", "alice")  # a later publish changes nothing
    argv = apply_argv(settings, paths, job.spec, paths.partial(1))
    assert argv is not None
    cmd = settings.executor.apply_command
    assert argv[: len(cmd)] == cmd
    assert argv[len(cmd) :] == [
        str(bundle), "/data/a.root", "--out", str(paths.partial(1)),
        "--format", "root", "--tree", "Events", "--progress-json",
    ]  # fmt: skip
    old = authorize(service, user("alice"), request("alice-model:1", only_passing=True))
    assert old.document["apply"]["model"] == "alice-model:1"


def test_read_rights_on_the_model_are_those_of_inference(
    service: JobService, settings: Settings, tmp_path: Path
) -> None:
    publish(settings, tmp_path, "bob-model", "bob")
    publish(settings, tmp_path, "team-model", "bob", **{"/cms/higgs": "read"})
    with pytest.raises(PermissionDenied, match="belongs to another user"):
        authorize(service, user("alice", "mlaas.infer"), request("bob-model"))
    with pytest.raises(PermissionDenied, match=re.escape("storage.read:/models/bob-model")):
        authorize(service, user("alice"), request("bob-model"))
    higgs = user("alice", "mlaas.infer", groups=("/cms/higgs",))
    assert authorize(service, higgs, request("team-model")).model is not None
    bob = user("bob", "storage.read:/models")
    assert authorize(service, bob, request("bob-model")).document["apply"]["model"] == "bob-model:1"


def test_a_missing_model_or_version_is_a_422_that_lists_no_other_model(
    service: JobService, settings: Settings, tmp_path: Path
) -> None:
    publish(settings, tmp_path, "bob-secret-model", "bob")
    with pytest.raises(SpecError, match="no model 'bob-secret'") as info:
        authorize(service, user("alice", "mlaas.infer"), request("bob-secret"))
    assert "bob-secret-model" not in str(info.value)
    publish(settings, tmp_path, "alice-model", "alice")
    with pytest.raises(SpecError, match=re.escape("has no version 7; versions: [1]")):
        authorize(service, user("alice"), request("alice-model:7"))


def test_inputs_are_resolved_and_checked_like_a_pipelines(
    service: JobService, settings: Settings, tmp_path: Path
) -> None:
    publish(settings, tmp_path, "alice-model", "alice")
    alice = user("alice")
    with pytest.raises(PermissionDenied, match=re.escape("storage.read:/etc/passwd")):
        authorize(service, alice, request("alice-model", "/data/a.root", "/etc/passwd"))
    inside = str(settings.data_dir.resolve() / "datasets" / "x.root")
    with pytest.raises(PermissionDenied, match="service's own data directory"):
        authorize(service, user("alice", "storage.read:/"), request("alice-model", inside))
    with pytest.raises(SpecError, match="relative path"):
        authorize(service, user("alice", "storage.read:/"), request("alice-model", "a.root"))
    with pytest.raises(SpecError, match="no dataset of that name"):
        authorize(service, alice, request("alice-model", "dataset:bobs.root"))
    lst = UserFile("files.txt", b"/data/a.root\nroot://h//data/b.root\n")
    sub = authorize(service, alice, request("alice-model", "@files.txt"), [lst])
    assert sub.document["apply"]["files"] == ["/data/a.root", "root://h//data/b.root"]
    assert sub.needs_network


@pytest.mark.parametrize(
    ("apply", "message"),
    [
        ({"format": "csv"}, "apply.format"),
        ({"fromat": "root"}, "apply.fromat: unknown field; closest: 'format'"),
        ({"register_dataset": True, "format": "parquet"}, "register_dataset needs format 'root'"),
        ({"model": "a/../b"}, "invalid model reference"),
        ({"files": []}, "apply.files"),
    ],
)
def test_a_bad_request_names_the_field(
    service: JobService, apply: dict[str, Any], message: str
) -> None:
    doc = request("alice-model")
    doc["apply"].update(apply)
    with pytest.raises(SpecError, match=re.escape(message)) as info:
        authorize(service, user("alice"), doc)
    assert "not a valid apply request" in str(info.value)


def test_a_pipeline_keeps_the_run_command(service: JobService, settings: Settings) -> None:
    paths = job_paths(settings.data_dir, "0" * 32)
    assert (
        apply_argv(settings, paths, json.dumps({"name": "x", "data": {}}), paths.partial(1)) is None
    )


def test_outputs_are_registered_all_or_none_without_following_links(
    service: JobService, settings: Settings, tmp_path: Path, sample_files: dict[str, Path]
) -> None:
    publish(settings, tmp_path, "alice-model", "alice")
    doc = request("alice-model", register_dataset=True)
    job, _ = service.submit(authorize(service, user("alice"), doc))
    result = job_paths(settings.data_dir, job.id).committed(1)
    result.mkdir()
    shutil.copyfile(sample_files["signal"], result / "sig.alice_model.friend.root")
    (result / "link.root").symlink_to(sample_files["background"])  # never followed
    (result / "notes.txt").write_text("not a ROOT output")
    names = register_outputs(settings, service.store, job, result)
    assert names == ["score.sig.alice_model.friend.root"]
    assert [d.name for d in service.datasets.list_datasets(job.owner)] == names
    # a hard link (to a secret, say) fails the registration, and nothing stays registered
    job2, _ = service.submit(authorize(service, user("alice"), {**doc, "name": "again"}))
    result2 = job_paths(settings.data_dir, job2.id).committed(1)
    result2.mkdir()
    shutil.copyfile(sample_files["signal"], result2 / "a.root")  # registered, then removed
    shutil.copyfile(sample_files["signal"], result2 / "b.root")
    os.link(result2 / "b.root", result2 / "c.root")
    with pytest.raises(SpecError, match="not a plain file"):
        register_outputs(settings, service.store, job2, result2)
    assert [d.name for d in service.datasets.list_datasets(job.owner)] == names
    with pytest.raises(Conflict, match="already have a dataset named"):
        register_outputs(settings, service.store, job, result)
