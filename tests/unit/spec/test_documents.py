"""The hardened YAML/JSON reader: anchors, depth and size refused before any expansion."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlaas4hep.cli import main
from mlaas4hep.documents import MAX_DEPTH, check_depth, load_json, load_yaml
from mlaas4hep.errors import DocumentError, PayloadTooLarge, SpecError
from mlaas4hep.jobs.service import parse_spec
from mlaas4hep.spec import load_spec

LIMIT = 1_000_000


def alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x,x,x,x,x,x,x,x,x]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ",".join([f"*a{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


HOSTILE = {
    "alias-bomb": (alias_bomb(), "anchor or alias"),
    "lone-anchor": ("a: &x 1\n", "anchor or alias"),
    "merge-key": ("base: {a: 1}\nother:\n  <<: {b: 2}\n", "merge key"),
    "deep-list-json": ("[" * 100_000 + "]" * 100_000, "deeper than"),
    "deep-list-yaml-flow": ("[" * 100_000, "deeper than"),
    "deep-map-json": ('{"a":' * 20_000 + "1" + "}" * 20_000, "deeper than"),
    "deep-map-yaml-flow": ("{a: " * 20_000 + "1" + "}" * 20_000, "deeper than"),
    "deep-map-yaml-block": ("".join(" " * i + "a:\n" for i in range(200)), "deeper than"),
    "deep-list-yaml-block": ("".join(" " * i + "-\n" for i in range(200)), "deeper than"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_yaml_is_refused_fast_with_flat_memory(case: str) -> None:
    text, fragment = HOSTILE[case]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(DocumentError, match=fragment):
        load_yaml(text, what="the spec", limit=LIMIT)
    assert time.perf_counter() - start < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


def test_error_names_the_line() -> None:
    with pytest.raises(DocumentError, match=r"line 2, column 4"):
        load_yaml("ok: 1\nb: &b [1]\n", what="the spec", limit=LIMIT)


def test_depth_limit_is_exact() -> None:
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert load_yaml(ok, what="x", limit=LIMIT) is not None
    assert load_json(ok, what="x", limit=LIMIT) is not None
    assert load_yaml(ok.replace("[", "- ").replace("]", ""), what="x", limit=LIMIT) is not None
    deeper = "[" + ok + "]"
    for load in (load_yaml, load_json):
        with pytest.raises(DocumentError, match="deeper than 64"):
            load(deeper, what="x", limit=LIMIT)


def test_size_is_checked_before_parsing() -> None:
    with pytest.raises(PayloadTooLarge):
        load_yaml(b"a: 1\n" * 1000, what="x", limit=100)
    with pytest.raises(PayloadTooLarge):
        load_json(b"[" + b"1," * 100 + b"1]", what="x", limit=100)


def test_not_utf8_and_not_yaml() -> None:
    with pytest.raises(DocumentError, match="not UTF-8"):
        load_yaml(b"\xff\xfe", what="x", limit=LIMIT)
    with pytest.raises(DocumentError, match="not valid YAML"):
        load_yaml("a: [1, 2", what="x", limit=LIMIT)
    with pytest.raises(DocumentError, match="not valid JSON"):
        load_json("{'a': 1}", what="x", limit=LIMIT)


def test_check_depth_on_parsed_values() -> None:
    value: Any = 1
    for _ in range(100):
        value = {"a": [value]}
    with pytest.raises(DocumentError):
        check_depth(value, what="x")


def test_plain_yaml_and_json_still_load() -> None:
    text = "name: demo\ndata:\n  files: [a.root, b.root]\n  tree: Events\nlr: 0.001\n"
    assert load_yaml(text, what="x", limit=LIMIT)["data"]["tree"] == "Events"
    assert load_yaml('{"a": [1, 2.5, null]}', what="x", limit=LIMIT) == {"a": [1, 2.5, None]}
    assert load_yaml("{a: 1}", what="x", limit=LIMIT) == {"a": 1}  # flow YAML, not JSON


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@given(st.lists(json_values, max_size=4) | st.dictionaries(st.text(max_size=8), json_values))
def test_json_text_loads_the_same_through_both_readers(value: Any) -> None:
    # Documents are objects or arrays (specs, bodies); JSON text takes orjson's path.
    text = json.dumps(value)
    assert load_json(text, what="x", limit=LIMIT) == value
    assert load_yaml(text, what="x", limit=LIMIT) == value


def test_every_spec_reader_uses_it(tmp_path: Path) -> None:
    bomb = alias_bomb()
    with pytest.raises(SpecError, match="anchor or alias"):
        load_spec(bomb)
    with pytest.raises(SpecError, match="anchor or alias"):
        parse_spec(bomb.encode(), LIMIT)
    with pytest.raises(SpecError, match="deeper than"):
        parse_spec(b"[" * 100_000, LIMIT)


@pytest.mark.parametrize("command", [["run", "--out", "OUT"], ["preview"]])
def test_cli_prints_one_line_for_a_hostile_spec(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    args = [a.replace("OUT", str(tmp_path / "out")) for a in command]
    assert main([*args, str(path)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "anchor or alias" in err
    assert "Traceback" not in err


def test_job_output_json_readers_survive_deep_documents() -> None:
    from mlaas4hep.jobs.progress import parse_line

    assert parse_line('{"a":' * 100_000 + "1" + "}" * 100_000) is None
    assert parse_line('{"epoch": 3, "epochs": 10}') == {"epoch": 3, "epochs": 10}


@pytest.mark.parametrize(
    "doc",
    [
        "\x00",  # the reader refuses control characters in its constructor
        "name: a\x07b",
        "epochs: " + "9" * 5000,  # over Python's int_max_str_digits
        "when: 2001-13-45",  # a YAML timestamp out of range
    ],
    ids=["nul", "bell", "huge-int", "bad-date"],
)
def test_unreadable_values_are_document_errors(doc: str) -> None:
    with pytest.raises(DocumentError):
        load_yaml(doc, what="the spec", limit=1 << 20)
