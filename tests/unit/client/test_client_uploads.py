"""Spec rewriting for ``mlaas4hep submit``: local files become ``dataset:NAME``, read the
way ``mlaas4hep run`` reads them (cwd, then the spec's directory; list lines relative to
the list); URLs and datasets stay as written. No service: ``put`` records the paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlaas4hep.client.localize import expand, localize
from mlaas4hep.client.uploads import free_name
from mlaas4hep.errors import MissingFileError
from mlaas4hep.spec import PipelineSpec, validate_spec


def _spec(sig: list[str], bkg: list[str]) -> PipelineSpec:
    return validate_spec(
        {
            "name": "t",
            "data": {
                "datasets": [
                    {"name": "sig", "files": sig, "label": 1},
                    {"name": "bkg", "files": bkg, "label": 0},
                ]
            },
            "preprocess": {"features": {"scalars": ["MET_pt"]}},
        }
    )


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"root" + path.name.encode())
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in ("data/a1.root", "data/a2.root", "data/b.root", "specs/near.root"):
        _touch(tmp_path / name)
    _touch(tmp_path / "lists/sub/c.root")
    (tmp_path / "lists/files.txt").write_text(
        "# local and remote\nsub/c.root\nroot://eos//store/x.root\n\n"
    )
    return tmp_path


def _localize(spec: PipelineSpec, cwd: Path, spec_dir: Path, **kw: object) -> tuple:
    seen: list[Path] = []

    def put(path: Path) -> str:
        seen.append(path)
        return f"dataset:{path.name}"

    out = localize(spec, put, cwd=cwd, spec_dir=spec_dir, **kw)  # type: ignore[arg-type]
    return out, seen


def test_relative_paths_globs_and_lists_become_datasets(tree: Path) -> None:
    spec = _spec(["data/a*.root", "@lists/files.txt"], ["data/b.root", "dataset:old.root"])
    out, seen = _localize(spec, tree, tree / "specs")
    assert out.data.datasets[0].files == [
        "dataset:a1.root",
        "dataset:a2.root",
        "dataset:c.root",  # relative to the list file, not to the working directory
        "root://eos//store/x.root",  # a URL in a list is kept as written
    ]
    assert out.data.datasets[1].files == ["dataset:b.root", "dataset:old.root"]
    assert seen == [
        tree / "data/a1.root",
        tree / "data/a2.root",
        tree / "lists/sub/c.root",
        tree / "data/b.root",
    ]
    assert isinstance(out, PipelineSpec)  # the typed spec travels
    assert spec.data.datasets[0].files[0] == "data/a*.root"  # the original is untouched


def test_the_spec_directory_is_the_fallback_and_absolute_paths_work(tree: Path) -> None:
    spec = _spec(["near.root"], [str(tree / "data/b.root")])
    out, seen = _localize(spec, tree / "data", tree / "specs")
    assert out.data.datasets[0].files == ["dataset:near.root"]
    assert seen == [tree / "specs/near.root", tree / "data/b.root"]


def test_one_file_named_twice_is_uploaded_once(tree: Path) -> None:
    spec = _spec(["data/a1.root", "data/a*.root"], ["./data/a1.root"])
    out, seen = _localize(spec, tree, tree)
    assert seen == [tree / "data/a1.root", tree / "data/a2.root"]
    assert out.data.datasets[0].files == ["dataset:a1.root", "dataset:a2.root"]
    assert out.data.datasets[1].files == ["dataset:a1.root"]


def test_remote_entries_and_datasets_are_untouched(tree: Path) -> None:
    files = ["root://eos.cern.ch//store/a.root", "HTTPS://h/b.root", "dataset:x.root"]
    service_side = ["/store/mc/not-local.root", "/eos/shared/ttH/*.root", "/data/on-service.root"]
    spec = _spec(files, service_side)  # absolute, not here: the service's policy decides
    out, seen = _localize(spec, tree, tree)
    assert out == spec
    assert seen == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("data/missing.root", "input file 'data/missing.root' does not exist"),
        ("nothing/*.root", "glob 'nothing/\\*.root' matches no file"),
        ("@nolist.txt", "the file list '@nolist.txt' does not exist"),
    ],
)
def test_missing_local_inputs_say_where_they_were_looked_for(
    tree: Path, entry: str, message: str
) -> None:
    with pytest.raises(MissingFileError, match=message):
        _localize(_spec([entry], ["data/b.root"]), tree, tree / "specs")


def test_a_file_sent_with_the_job_is_left_to_the_service(tree: Path) -> None:
    out, seen = _localize(_spec(["@sent.txt"], ["data/b.root"]), tree, tree, keep=["sent.txt"])
    assert out.data.datasets[0].files == ["@sent.txt"]
    assert seen == [tree / "data/b.root"]


def test_expand_reads_lists_relative_to_the_list(tree: Path) -> None:
    items = expand("@files.txt", tree / "lists", tree)
    assert items == [tree / "lists/sub/c.root", "root://eos//store/x.root"]


def test_names_are_the_file_name_or_a_hash_prefixed_one() -> None:
    h1, h2 = "a" * 64, "b" * 64
    assert free_name("signal.root", h1, {}) == "signal.root"
    assert free_name("signal.root", h1, {"signal.root": h1}) == "signal.root"
    assert free_name("signal.root", h2, {"signal.root": h1}) == "signal-bbbbbbbb.root"
    assert free_name("my file (1).root", h1, {}) == "my_file__1_.root"
    assert free_name(".hidden", h1, {}) == "hidden"
    assert free_name("README", h2, {"README": h1}) == "README-bbbbbbbb"
