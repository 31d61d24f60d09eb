"""Friend trees and Parquet outputs: exact identifiers, entry alignment, atomic appearance."""

from __future__ import annotations

import errno
import gc
import importlib.util
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot

from mlaas4hep.data import friend
from mlaas4hep.data.friend import open_output
from mlaas4hep.errors import DataQualityError, DataSourceError, OutputWriteError

FORMATS = ["root", "parquet"]
IDS = {
    "run": np.dtype(np.uint32),
    "luminosityBlock": np.dtype(np.uint32),
    "event": np.dtype(np.uint64),
    "offset": np.dtype(np.int64),
}
COLUMNS = ["m_score", "m_pass"]
BIG = np.uint64(2**63 + 2**53 + 1)  # above 2**53: a float64 round trip would change it


def make_chunk(start: int, n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    idx = np.arange(start, start + n)
    ids = {
        "run": np.full(n, 4_000_000_000, np.uint32),
        "luminosityBlock": (idx // 7).astype(np.uint32),
        "event": BIG + idx.astype(np.uint64),
        "offset": -(2**62) - idx.astype(np.int64),
    }
    columns = {"m_score": (idx / 3.0).astype(np.float32), "m_pass": idx % 3 == 0}
    return ids, columns


def read_back(path: Path, fmt: str) -> dict[str, np.ndarray]:
    if fmt == "root":
        with uproot.open(path) as f:
            return dict(f["Events"].arrays(library="np"))
    table = pq.read_table(path)
    return {name: table[name].to_numpy() for name in table.column_names}


def write_all(path: Path, fmt: str, sizes: list[int]) -> Path:
    with open_output(path, fmt, tree="Events", ids=IDS, columns=COLUMNS) as writer:
        start = 0
        for n in sizes:
            writer.write(*make_chunk(start, n))
            start += n
        assert writer.entries == sum(sizes)
        return writer.commit()


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_keeps_dtypes_values_and_order_over_chunks(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(friend, "BASKET_ENTRIES", 1000)
    sizes = [300, 0, 1, 999, 2500, 17, 700]
    path = write_all(tmp_path / f"out.{fmt}", fmt, sizes)
    got = read_back(path, fmt)
    want_ids, want_cols = make_chunk(0, sum(sizes))
    assert list(got) == [*IDS, *COLUMNS]
    for name, dtype in IDS.items():
        assert got[name].dtype == dtype, name
        np.testing.assert_array_equal(got[name], want_ids[name])
    assert got["event"][-1] == BIG + np.uint64(sum(sizes) - 1)
    assert got["m_score"].dtype == np.float32
    assert got["m_pass"].dtype == np.bool_
    np.testing.assert_array_equal(got["m_score"], want_cols["m_score"])
    np.testing.assert_array_equal(got["m_pass"], want_cols["m_pass"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left


@pytest.mark.parametrize("fmt", FORMATS)
def test_small_chunks_are_buffered_into_large_baskets(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(friend, "BASKET_ENTRIES", 1000)
    path = write_all(tmp_path / f"out.{fmt}", fmt, [300] * 10)  # flushes at 1200, 2400, end
    if fmt == "root":
        with uproot.open(path) as f:
            branch = f["Events"]["event"]
            sizes = [branch.basket_entry_start_stop(i) for i in range(branch.num_baskets)]
        assert sizes == [(0, 1200), (1200, 2400), (2400, 3000)]
    else:
        meta = pq.ParquetFile(path).metadata
        rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert rows == [1200, 1200, 600]


def test_a_buffered_chunk_does_not_see_later_changes_to_the_callers_arrays(tmp_path: Path) -> None:
    ids, cols = make_chunk(0, 10)
    path = tmp_path / "out.root"
    with open_output(path, "root", tree="Events", ids=IDS, columns=COLUMNS) as writer:
        writer.write(ids, cols)
        ids["event"][:] = 0  # a caller reusing its buffers
        cols["m_score"][:] = -1
    got = read_back(path, "root")
    np.testing.assert_array_equal(got["event"], make_chunk(0, 10)[0]["event"])
    np.testing.assert_array_equal(got["m_score"], make_chunk(0, 10)[1]["m_score"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_entries_give_a_valid_empty_output(tmp_path: Path, fmt: str) -> None:
    path = write_all(tmp_path / f"empty.{fmt}", fmt, [])
    got = read_back(path, fmt)
    assert list(got) == [*IDS, *COLUMNS]
    assert all(len(a) == 0 for a in got.values())
    assert got["event"].dtype == np.uint64


@pytest.mark.parametrize("fmt", FORMATS)
def test_float64_scores_are_narrowed_and_identifiers_may_be_big_endian(
    tmp_path: Path, fmt: str
) -> None:
    ids, cols = make_chunk(0, 5)
    ids["event"] = ids["event"].astype(">u8")
    cols["m_score"] = cols["m_score"].astype(np.float64)
    path = tmp_path / f"out.{fmt}"
    with open_output(path, fmt, tree="Events", ids=IDS, columns=COLUMNS) as writer:
        writer.write(ids, cols)
    got = read_back(path, fmt)
    assert got["m_score"].dtype == np.float32
    np.testing.assert_array_equal(got["event"], make_chunk(0, 5)[0]["event"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_abort_leaves_nothing_and_keeps_an_older_output(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"out.{fmt}"
    path.write_bytes(b"previous run")
    writer = open_output(path, fmt, tree="Events", ids=IDS, columns=COLUMNS)
    writer.write(*make_chunk(0, 10))
    assert len(list(tmp_path.iterdir())) == 2  # the temporary file beside the target
    writer.abort()
    writer.abort()  # idempotent
    assert list(tmp_path.iterdir()) == [path]
    assert path.read_bytes() == b"previous run"
    with pytest.raises(OutputWriteError, match="already aborted"):
        writer.write(*make_chunk(0, 10))


def fail_inside(path: Path, fmt: str) -> None:
    with open_output(path, fmt, tree="Events", ids=IDS, columns=COLUMNS) as writer:
        writer.write(*make_chunk(0, 10))
        raise RuntimeError("input died")


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_exception_in_the_block_leaves_no_partial_file(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(RuntimeError, match="input died"):
        fail_inside(tmp_path / f"out.{fmt}", fmt)
    assert list(tmp_path.iterdir()) == []


def test_the_output_appears_only_at_commit(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.root"  # the folder is created
    writer = open_output(path, "root", tree="Events", ids=IDS, columns=COLUMNS)
    writer.write(*make_chunk(0, 10))
    assert not path.exists()
    assert writer.commit() == path
    assert path.exists()
    with pytest.raises(OutputWriteError, match="already committed"):
        writer.commit()
    writer.abort()  # after commit: nothing to drop, the output stays
    assert path.exists()


def test_the_output_mode_follows_the_umask_not_mkstemp(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_all(tmp_path / "out.root", "root", [5])
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_dropped_writer_removes_its_temporary_file(tmp_path: Path) -> None:
    writer = open_output(tmp_path / "out.root", "root", tree="Events", ids=IDS, columns=COLUMNS)
    writer.write(*make_chunk(0, 10))
    del writer
    gc.collect()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_failing_write_is_typed_names_the_path_and_cleans_up(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk cannot be had here without root mounts; the sink's write raises as uproot
    # and pyarrow do then.
    def full(self: object, arrays: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    sink = friend._RootSink if fmt == "root" else friend._ParquetSink
    monkeypatch.setattr(sink, "append", full)
    path = tmp_path / f"out.{fmt}"
    writer = open_output(path, fmt, tree="Events", ids=IDS, columns=COLUMNS)
    writer.write(*make_chunk(0, 10))
    with pytest.raises(OutputWriteError, match="No space left") as info:
        writer.commit()
    assert str(path) in str(info.value)
    assert isinstance(info.value, DataSourceError)
    assert list(tmp_path.iterdir()) == []


def test_an_unusable_folder_is_a_typed_error_naming_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputWriteError, match="cannot create the output") as info:
        open_output(blocker / "out.root", "root", tree="Events", ids=IDS, columns=COLUMNS)
    assert str(blocker / "out.root") in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fmt": "csv"}, "unknown output format 'csv'"),
        ({"columns": ["tth-classifier_score"]}, "unusable: \\['tth-classifier_score'\\]"),
        ({"columns": ["run"]}, "repeated: \\['run'\\]"),
        ({"columns": []}, "at least one column"),
        ({"ids": {"event": np.dtype("U8")}}, "only numbers"),
        ({"tree": ""}, "tree name ''"),
    ],
)
def test_a_bad_layout_is_refused_before_any_file(
    tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    args: dict[str, Any] = {"fmt": "root", "tree": "Events", "ids": IDS, "columns": COLUMNS}
    args.update(kwargs)
    fmt = args.pop("fmt")
    with pytest.raises(DataQualityError, match=match):
        open_output(tmp_path / "out.root", fmt, **args)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda i, c: i.update(event=i["event"].astype(np.int64)), "'event' must be a 1-D uint64"),
        (lambda i, c: i.update(run=i["run"].astype(np.uint64)), "'run' must be a 1-D uint32"),
        (
            lambda i, c: c.update(m_pass=c["m_pass"].astype(np.float32)),
            "'m_pass' must be a 1-D bool",
        ),
        (
            lambda i, c: c.update(m_score=c["m_score"].astype(np.int32)),
            "'m_score' must be a 1-D float",
        ),
        (lambda i, c: c.update(m_score=c["m_score"][:3]), "differ in length"),
        (lambda i, c: c.pop("m_pass"), "missing \\['m_pass'\\]"),
        (lambda i, c: i.update(extra=i["run"]), "extra \\['extra'\\]"),
    ],
)
def test_a_chunk_that_does_not_match_the_layout_is_refused(
    tmp_path: Path, change: Any, match: str
) -> None:
    ids, cols = make_chunk(0, 5)
    change(ids, cols)
    path = tmp_path / "out.root"
    with open_output(path, "root", tree="Events", ids=IDS, columns=COLUMNS) as writer:
        with pytest.raises(DataQualityError, match=match) as info:
            writer.write(ids, cols)
        assert str(path) in str(info.value)
        writer.abort()
    assert list(tmp_path.iterdir()) == []


def friend_of_sample(source: Path, out: Path) -> Path:
    """A friend of ``source`` whose score is its MET_pt, written in chunks of 700."""
    with uproot.open(source) as f:
        tree = f["Events"]
        ids_types = {
            n: tree[n].interpretation.to_dtype for n in ("run", "luminosityBlock", "event")
        }
        with open_output(out, "root", tree="Events", ids=ids_types, columns=COLUMNS) as writer:
            for arrays in tree.iterate([*ids_types, "MET_pt"], step_size=700, library="np"):
                met = arrays.pop("MET_pt")
                writer.write(arrays, {"m_score": met, "m_pass": met > 20})
    return out


def test_the_friend_tree_aligns_entry_by_entry_with_its_source(
    tmp_path: Path, sample_files: dict[str, Path]
) -> None:
    source = sample_files["signal"]
    path = friend_of_sample(source, tmp_path / "signal.m.friend.root")
    with uproot.open(source) as src, uproot.open(path) as out:
        tree = out["Events"]
        assert tree.num_entries == src["Events"].num_entries
        assert tree.typenames() == {
            "run": "uint32_t",
            "luminosityBlock": "uint32_t",
            "event": "uint64_t",
            "m_score": "float",
            "m_pass": "bool",
        }
        want = src["Events"].arrays(["run", "luminosityBlock", "event", "MET_pt"], library="np")
        got = tree.arrays(library="np")
    for name in ("run", "luminosityBlock", "event"):
        np.testing.assert_array_equal(got[name], want[name])
    np.testing.assert_array_equal(got["m_score"], want["MET_pt"])


ROOT_CHECK = textwrap.dedent(
    """
    import sys
    import ROOT

    source, friend = sys.argv[1], sys.argv[2]
    f = ROOT.TFile.Open(source)
    tree = f.Get("Events")
    assert tree.AddFriend("scores=Events", friend), "AddFriend failed"
    df = ROOT.RDataFrame(tree)
    mismatched = df.Filter(
        "scores.run != run || scores.event != event || scores.m_score != MET_pt"
        " || scores.m_pass != (MET_pt > 20)"
    ).Count().GetValue()
    g = ROOT.TFile.Open(friend)
    print(tree.GetEntries(), g.Get("Events").GetEntries(), mismatched, g.IsZombie(),
          g.TestBit(ROOT.TFile.kRecovered))
    """
)


def test_root_itself_reads_the_friend_tree_and_joins_it_by_entry(
    tmp_path: Path, sample_files: dict[str, Path]
) -> None:
    if importlib.util.find_spec("ROOT") is None:
        pytest.skip("ROOT is not installed: pip install 'root>=0.1a12' (in the dev extra)")
    source = sample_files["signal"]
    path = friend_of_sample(source, tmp_path / "signal.m.friend.root")
    # A child process: ROOT's import sets signal handlers and warns (alpha wheel).
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", ROOT_CHECK, str(source), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    n = uproot.open(source)["Events"].num_entries
    assert proc.stdout.split()[-5:] == [str(n), str(n), "0", "False", "False"]
