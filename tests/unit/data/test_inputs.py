"""The one reading of a ``files`` entry: what submission checks is what the reader reads."""

from __future__ import annotations

import pytest

from mlaas4hep.data.inputs import classify, resolve_inputs, scope_path
from mlaas4hep.data.sources import is_remote
from mlaas4hep.errors import DataSourceError, SpecError


def _no_dataset(name: str) -> str:
    raise SpecError(f"no dataset {name!r}")


def resolve(*entries: str, lists: dict[str, bytes] | None = None, **kw: str) -> list:
    return resolve_inputs(
        entries, lists=lists or {}, dataset=_no_dataset, list_dir="/jobs/j/input", **kw
    )


@pytest.mark.parametrize(
    "url",
    ["root://h//a.root", "xroot://h//a.root", "ROOT://h//a.root", "XROOT://h//a.root",
     "HTTPS://h/a.root", "Http://h/a.root", "  root://h//a.root "],
)  # fmt: skip
def test_every_scheme_spelling_is_remote_for_reader_and_checks_alike(url: str) -> None:
    assert classify(url).kind == "remote"
    assert is_remote(url)  # the reader's own test: the same definition
    (item,) = resolve(url)
    assert item.remote
    assert item.scope_path == "/a.root"


def test_scope_paths_are_normalised_and_globs_need_their_fixed_part() -> None:
    assert resolve("root://h//store/user/a/../b/x.root")[0].scope_path == "/store/user/b/x.root"
    assert resolve("/data/alice/../bob/x.root")[0].scope_path == "/data/bob/x.root"
    assert resolve("/data/bob/*/x.root")[0].scope_path == "/data/bob"
    assert resolve("file:///data/bob/x.root")[0].scope_path == "/data/bob/x.root"
    assert resolve("local.root")[0].scope_path is None
    assert resolve("../../x.root")[0].scope_path == "../../x.root"  # no scope grants it
    assert scope_path(classify("../*.root")) == ".."


def test_lists_come_only_from_the_jobs_own_files_and_are_expanded() -> None:
    text = b"# mine\n/data/alice/a.root\nroot://h//store/bob/b.root  # bob's\nrel.root\n"
    items = resolve("@files.txt", lists={"files.txt": text})
    assert [i.entry for i in items] == [
        "/data/alice/a.root",
        "root://h//store/bob/b.root",
        "/jobs/j/input/rel.root",
    ]
    assert [i.scope_path for i in items][:2] == ["/data/alice/a.root", "/store/bob/b.root"]
    assert items[1].remote
    for bad in ("@/etc/passwd", "@../files.txt", "@other.txt"):
        with pytest.raises(SpecError, match="not among the files sent with the job") as info:
            resolve(bad, lists={"files.txt": text})
        assert "root:" not in str(info.value)


def test_a_binary_or_empty_list_is_refused_without_its_content() -> None:
    with pytest.raises(SpecError, match="not UTF-8") as info:
        resolve("@l.txt", lists={"l.txt": b"\xff\xfesecret"})
    assert "secret" not in str(info.value)
    with pytest.raises(SpecError, match="names no file"):
        resolve("@l.txt", lists={"l.txt": b"# only a comment\n"})


def test_unsupported_schemes_and_home_paths_are_refused() -> None:
    with pytest.raises(DataSourceError, match="unsupported URL scheme 's3'"):
        resolve("s3://bucket/x.root")
    with pytest.raises(SpecError, match="no home directory"):
        resolve("~bob/x.root")


def test_redirected_store_names_need_the_network() -> None:
    assert not resolve("/store/a.root")[0].remote
    assert resolve("/store/a.root", redirector="root://xrd")[0].remote


def test_the_reader_never_quotes_a_list_line(tmp_path) -> None:
    from mlaas4hep.data.sources import resolve_files

    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(DataSourceError) as info:
        resolve_files([f"@{secret}"])
    assert "root:x" not in str(info.value)
    assert "entry 1" in str(info.value)
