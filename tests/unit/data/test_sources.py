from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import uproot

from mlaas4hep.data.samples import write_sample
from mlaas4hep.data.sources import file_identity, open_tree, resolve_files
from mlaas4hep.errors import (
    DataSourceError,
    MissingFileError,
    NotRootFileError,
    TreeNotFoundError,
)


@pytest.fixture
def tree_dir(tmp_path: Path, sample_files: dict[str, Path]) -> Path:
    for name in ("b.root", "a.root", "c.root"):
        shutil.copyfile(sample_files["signal"], tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub.root").mkdir()
    return tmp_path


def test_globs_are_sorted_files_only(tree_dir: Path) -> None:
    got = resolve_files([str(tree_dir / "*.root")])
    assert got == [str(tree_dir / n) for n in ("a.root", "b.root", "c.root")]


def test_paths_urls_and_lists_keep_order_without_duplicates(tree_dir: Path) -> None:
    listing = tree_dir / "files.txt"
    listing.write_text(
        "# my files\nc.root\n\n" + str(tree_dir / "a.root") + "  # absolute\nhttps://h/x.root\n"
    )
    got = resolve_files(["root://eos.cern.ch//eos/x.root", f"@{listing}", str(tree_dir / "c.root")])
    assert got == [
        "root://eos.cern.ch//eos/x.root",
        str(tree_dir / "c.root"),
        str(tree_dir / "a.root"),
        "https://h/x.root",
    ]


def test_store_names_use_the_redirector_and_proxy() -> None:
    got = resolve_files(
        ["/store/mc/a.root", "root://site//b.root", "http://h/c.root"],
        redirector="root://cms-xrd-global.cern.ch/",
        xrootd_proxy="root://proxy:1094",
    )
    assert got == [
        "root://proxy:1094//root://cms-xrd-global.cern.ch//store/mc/a.root",
        "root://proxy:1094//root://site//b.root",
        "http://h/c.root",
    ]


@pytest.mark.parametrize(
    ("pattern", "match"),
    [
        ("missing.root", "does not exist"),
        ("*.nothing", "matches no file"),
        ("sub.*", "matches only directories"),
        ("sub.root", "is a directory"),
        ("@nolist.txt", "file list"),
        ("/store/mc/x.root", "redirector"),
    ],
)
def test_nothing_usable_is_a_missing_file_error(
    tree_dir: Path, monkeypatch: pytest.MonkeyPatch, pattern: str, match: str
) -> None:
    monkeypatch.chdir(tree_dir)
    with pytest.raises(MissingFileError, match=match):
        resolve_files([pattern])


def test_unknown_scheme_and_empty_input() -> None:
    with pytest.raises(DataSourceError, match="'s3'"):
        resolve_files(["s3://bucket/x.root"])
    with pytest.raises(MissingFileError, match="no input files"):
        resolve_files([])


def test_open_tree_picks_the_only_tree(sample_files: dict[str, Path]) -> None:
    with open_tree(str(sample_files["signal"])) as tree:
        assert tree.name == "Events"
        assert tree.num_entries == 3000


@pytest.fixture
def two_trees(tmp_path: Path) -> Path:
    path = tmp_path / "two.root"
    with uproot.recreate(path) as f:
        f["Events"] = {"x": [1, 2, 3]}
        f["Runs"] = {"y": [1]}
        f["hist"] = (  # a histogram is not a tree and is never picked
            np.array([1.0, 2.0]),
            np.array([0.0, 1.0, 2.0]),
        )
    return path


def test_several_trees_need_a_name(two_trees: Path) -> None:
    with pytest.raises(TreeNotFoundError, match=r"several trees \['Events', 'Runs'\]"):
        open_tree(str(two_trees)).__enter__()
    with open_tree(str(two_trees), "Runs") as tree:
        assert tree.num_entries == 1
    with pytest.raises(TreeNotFoundError, match=r"no tree 'Event' .* closest: 'Events'"):
        open_tree(str(two_trees), "Event").__enter__()
    with pytest.raises(TreeNotFoundError, match="no tree 'hist'"):
        open_tree(str(two_trees), "hist").__enter__()


def test_file_without_trees(tmp_path: Path) -> None:
    path = tmp_path / "h.root"
    with uproot.recreate(path) as f:
        f["hist"] = (np.array([1.0]), np.array([0.0, 1.0]))
    with pytest.raises(TreeNotFoundError, match="no TTree or RNTuple"):
        open_tree(str(path)).__enter__()


def test_bad_files(tmp_path: Path, sample_files: dict[str, Path]) -> None:
    data = sample_files["signal"].read_bytes()
    (tmp_path / "text.root").write_text("hello, not ROOT\n")
    (tmp_path / "empty.root").write_bytes(b"")
    (tmp_path / "cut.root").write_bytes(data[: len(data) // 2])
    cases = {
        "text.root": (NotRootFileError, "not a ROOT file"),
        "empty.root": (NotRootFileError, "not a ROOT file"),
        "cut.root": (NotRootFileError, "truncated"),
        "nothere.root": (MissingFileError, "does not exist"),
        ".": (MissingFileError, "directory"),
    }
    for name, (exc, match) in cases.items():
        with pytest.raises(exc, match=match):
            open_tree(str(tmp_path / name)).__enter__()


def test_file_identity_changes_when_rewritten(tmp_path: Path) -> None:
    path = write_sample(tmp_path / "s.root", "signal", 100, seed=1)
    first = file_identity(str(path))
    assert first["path"] == str(path.resolve())
    assert file_identity(str(path)) == first
    write_sample(path, "signal", 100, seed=2)  # same size is possible: mtime differs
    os.utime(path, ns=(first["mtime_ns"] + 10**9, first["mtime_ns"] + 10**9))
    assert file_identity(str(path)) != first
