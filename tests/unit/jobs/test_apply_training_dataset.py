"""``apply.training_dataset`` of an apply request: checked at submission against the
pinned version's ``spec.yaml``, and passed to ``mlaas4hep apply`` as ``--dataset``.

The CLI side (the dataset's own defines and cuts applied) is tested in
tests/integration/test_apply_dataset.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlaas4hep.auth.principal import Principal
from mlaas4hep.config import Settings
from mlaas4hep.errors import SpecError
from mlaas4hep.jobs.apply_job import apply_argv
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.deploy import model_repository
from mlaas4hep.jobs.layout import job_paths
from mlaas4hep.jobs.policy import authorize
from mlaas4hep.jobs.service import JobService, pipeline_validator
from mlaas4hep.jobs.store import JobStore
from mlaas4hep.serve.ownership import ModelOwners
from mlaas4hep.serve.samples import write_sample_model

ISSUER = "https://issuer.test"
ALICE = Principal(
    ISSUER, "alice", scopes=frozenset({"compute.create", "storage.read:/data", "mlaas.infer"})
)
SPEC = {
    "name": "tth",
    "data": {
        "datasets": [
            {"name": "ttH", "files": ["signal.root"], "label": 1, "cuts": ["nJet >= 4"]},
            {"name": "QCD", "files": ["background.root"], "label": 0},
        ]
    },
    "preprocess": {"features": {"scalars": ["MET_pt", "nJet", "HT", "nLepton"]}},
}


@pytest.fixture
def service(settings: Settings) -> Iterator[JobService]:
    store = JobStore(settings.db_url)
    yield JobService(store, DatasetStore(store, settings), settings, pipeline_validator)
    store.close()


def publish(settings: Settings, tmp_path: Path, name: str, spec: dict[str, Any] | None) -> None:
    source = write_sample_model(tmp_path / f"src-{name}", (4, 8, 1), seed=1)
    if spec is not None:
        (source / "spec.yaml").write_text(yaml.safe_dump(spec))
    repository = model_repository(settings)
    ModelOwners(repository.root).claim(name, f"{ISSUER}#alice", "alice", ())
    repository.publish(name, source)


def request(model: str, **apply: Any) -> dict[str, Any]:
    return {"name": "score", "apply": {"model": model, "files": ["/data/a.root"], **apply}}


def test_a_training_dataset_of_the_model_becomes_the_dataset_option(
    service: JobService, settings: Settings, tmp_path: Path
) -> None:
    publish(settings, tmp_path, "tth", SPEC)
    sub = authorize(service, ALICE, request("tth", training_dataset="ttH"))
    assert sub.document["apply"]["training_dataset"] == "ttH"
    job, _ = service.submit(sub)
    paths = job_paths(settings.data_dir, job.id)
    argv = apply_argv(settings, paths, job.spec, paths.partial(1))
    assert argv is not None
    assert argv[-2:] == ["--dataset=ttH", "--progress-json"]
    plain = authorize(service, ALICE, request("tth"))
    assert plain.document["apply"]["training_dataset"] is None


def test_an_unknown_training_dataset_is_refused_at_submission(
    service: JobService, settings: Settings, tmp_path: Path
) -> None:
    publish(settings, tmp_path, "tth", SPEC)
    expected = "model tth:1 has no training dataset 'tth'; its datasets: 'ttH', 'QCD'"
    with pytest.raises(SpecError, match=re.escape(expected)):
        authorize(service, ALICE, request("tth", training_dataset="tth"))
    with pytest.raises(SpecError, match="training_dataset"):
        authorize(service, ALICE, request("tth", training_dataset="a b"))
    # a version without spec.yaml (an uploaded model): the job itself says why
    publish(settings, tmp_path, "bare", None)
    bare = authorize(service, ALICE, request("bare", training_dataset="ttH"))
    assert bare.document["apply"]["training_dataset"] == "ttH"
