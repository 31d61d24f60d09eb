"""The one submission policy (jobs/policy.py), without HTTP: what may run, decided once."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from jobs_helpers import pipeline_doc

from mlaas4hep.auth.principal import Principal
from mlaas4hep.config import Settings
from mlaas4hep.errors import ExpressionError, PermissionDenied, SpecError
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.policy import authorize, check_against_schemas
from mlaas4hep.jobs.service import JobService, UserFile, pipeline_validator
from mlaas4hep.jobs.store import JobStore
from mlaas4hep.spec import PipelineSpec, validate_spec

BASE = frozenset({"compute.create"})


@pytest.fixture
def service(settings: Settings) -> Iterator[JobService]:
    store = JobStore(settings.db_url)
    yield JobService(store, DatasetStore(store, settings), settings, pipeline_validator)
    store.close()


def alice(*scopes: str) -> Principal:
    return Principal("https://issuer.test", "alice", scopes=BASE | set(scopes))


def doc_with(*files: str, **extra: Any) -> dict[str, Any]:
    doc = pipeline_doc("policy")
    doc["data"]["datasets"] = [
        {"name": "sig", "files": list(files), "label": 1},
        {"name": "bkg", "files": list(files), "label": 0},
    ]
    doc["preprocess"] = {"features": {"scalars": ["MET_pt"]}, **extra}
    return doc


@pytest.mark.parametrize(
    "url",
    ["xroot://h//store/bob/x.root", "ROOT://h//store/bob/x.root", "HTTPS://h/store/bob/x.root"],
)
def test_every_remote_spelling_needs_its_scope_and_gets_the_network(
    service: JobService, url: str
) -> None:
    with pytest.raises(PermissionDenied, match=re.escape("storage.read:/store/bob/x.root")):
        authorize(service, alice("storage.read:/store/alice"), doc_with(url))
    sub = authorize(service, alice("storage.read:/store/bob"), doc_with(url))
    assert sub.needs_network
    assert isinstance(sub.spec, PipelineSpec)  # the typed spec travels
    assert sub.spec.data.datasets[0].files == [url]


def test_a_list_is_read_from_the_jobs_files_and_each_line_checked(service: JobService) -> None:
    lst = UserFile("files.txt", b"/data/alice/a.root\n/data/bob/secret.root\n")
    doc = doc_with("@files.txt")
    with pytest.raises(PermissionDenied, match=re.escape("storage.read:/data/bob/secret.root")):
        authorize(service, alice("storage.read:/data/alice"), doc, [lst])
    ok = UserFile("files.txt", b"/data/alice/a.root\n/data/alice/b.root\n")
    sub = authorize(service, alice("storage.read:/data/alice"), doc, [ok])
    assert sub.document["data"]["datasets"][0]["files"] == [
        "/data/alice/a.root",
        "/data/alice/b.root",
    ]
    assert not sub.needs_network
    with pytest.raises(SpecError, match="not among the files sent with the job") as info:
        authorize(service, alice("storage.read:/"), doc_with("@/etc/passwd"))
    assert "root:x" not in str(info.value)


def test_the_services_own_data_directory_is_reachable_only_as_a_dataset(
    service: JobService,
) -> None:
    inside = str(service.settings.data_dir.resolve() / "datasets" / "x" / "*.root")
    with pytest.raises(PermissionDenied, match="dataset:NAME"):
        authorize(service, alice("storage.read:/"), doc_with(inside))


def test_an_unknown_dataset_is_a_clear_422(service: JobService) -> None:
    with pytest.raises(SpecError, match="you have no dataset of that name"):
        authorize(service, alice(), doc_with("dataset:nope.root"))


def test_bad_expressions_are_refused_at_submission_with_a_caret(service: JobService) -> None:
    doc = doc_with("/data/a.root", cuts=["MET_pt >> 20"])
    with pytest.raises(ExpressionError) as info:
        authorize(service, alice("storage.read:/data"), doc)
    assert "^" in str(info.value)
    assert "preprocess.cuts[0]" in str(info.value)


SCHEMA = {
    "tree": "Events",
    "branches": [
        {"name": "MET_pt", "dtype": "float32", "kind": "flat"},
        {"name": "nJet", "dtype": "int32", "kind": "counter"},
        {"name": "Jet_pt", "dtype": "float32", "kind": "jagged"},
        {"name": "run", "dtype": "uint32", "kind": "flat"},
        {"name": "luminosityBlock", "dtype": "uint32", "kind": "flat"},
        {"name": "event", "dtype": "uint64", "kind": "flat"},
    ],
}


def test_branch_names_and_types_are_checked_against_a_recorded_schema() -> None:
    def spec(**pre: Any) -> PipelineSpec:
        return validate_spec(doc_with("/x.root", **pre))

    check_against_schemas(spec(define={"HT": "sum(Jet_pt[Jet_pt > 30])"}), {"dataset:a": SCHEMA})
    with pytest.raises(ExpressionError, match=r"(?s)dataset:a: .*'Jet_ptt'.*\^.*closest: 'Jet_pt'"):
        check_against_schemas(spec(define={"HT": "sum(Jet_ptt)"}), {"dataset:a": SCHEMA})
    with pytest.raises(ExpressionError, match="must be a condition"):
        check_against_schemas(spec(cuts=["MET_pt + 1"]), {"dataset:a": SCHEMA})
    bad_feature = doc_with("/x.root")
    bad_feature["preprocess"]["features"]["scalars"] = ["MET_ptx"]
    with pytest.raises(SpecError, match=r"'MET_ptx'.*closest: 'MET_pt'"):
        check_against_schemas(validate_spec(bad_feature), {"dataset:a": SCHEMA})
