"""A path on the submitter's machine is refused at submission, saying how to upload it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from jobs_helpers import pipeline_doc

from mlaas4hep.auth.principal import Principal
from mlaas4hep.config import Settings
from mlaas4hep.errors import PermissionDenied, SpecError
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.policy import UPLOAD_REMEDY, authorize
from mlaas4hep.jobs.service import JobService, UserFile, pipeline_validator
from mlaas4hep.jobs.store import JobStore


@pytest.fixture
def service(settings: Settings) -> Iterator[JobService]:
    store = JobStore(settings.db_url)
    yield JobService(store, DatasetStore(store, settings), settings, pipeline_validator)
    store.close()


def caller(*scopes: str) -> Principal:
    return Principal("https://issuer.test", "alice", scopes={"compute.create", *scopes})


def doc(*files: str) -> dict[str, object]:
    d = pipeline_doc("local")
    d["data"]["datasets"] = [  # type: ignore[index]
        {"name": "sig", "files": list(files), "label": 1},
        {"name": "bkg", "files": ["root://h//store/b.root"], "label": 0},
    ]
    return d


@pytest.mark.parametrize("entry", ["data/signal.root", "./x.root", "data/*.root", "file:x.root"])
def test_a_relative_path_is_refused_with_the_remedy(service: JobService, entry: str) -> None:
    with pytest.raises(SpecError) as info:
        authorize(service, caller("storage.read:/"), doc(entry))
    message = str(info.value)
    assert f"input {entry!r} is a path on your machine" in message
    assert UPLOAD_REMEDY in message
    assert "mlaas4hep datasets upload FILE" in message


def test_a_file_sent_with_the_job_is_not_a_local_path(service: JobService) -> None:
    sent = [UserFile("extra.root", b"root")]
    sub = authorize(service, caller("storage.read:/"), doc("extra.root"), sent)
    assert sub.spec is not None
    assert sub.spec.data.datasets[0].files == ["extra.root"]
    sub = authorize(service, caller("storage.read:/"), doc("ext*.root"), sent)
    assert sub.spec is not None


def test_an_absolute_path_without_a_grant_names_the_scope_and_the_remedy(
    service: JobService,
) -> None:
    with pytest.raises(PermissionDenied) as info:
        authorize(service, caller("storage.read:/store"), doc("/home/me/signal.root"))
    assert "storage.read:/home/me/signal.root" in str(info.value)
    assert UPLOAD_REMEDY in str(info.value)
