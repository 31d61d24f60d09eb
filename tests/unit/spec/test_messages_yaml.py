"""YAML mistakes are reported with the file, the line and column, and an indentation hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlaas4hep.documents import load_yaml
from mlaas4hep.errors import DocumentError, SpecError
from mlaas4hep.spec import load_spec

LIMIT = 1_000_000
INDENT = "check the indentation of line {}"

# name -> (document, the line the message must blame, a fragment of the hint)
MISTAKES = {
    "key-dedented-in-list-item": (
        "name: x\ndata:\n  datasets:\n    - name: a\n      files: [a]\n     label: 1\n",
        6,
        INDENT,
    ),
    "key-indented-too-far": ("name: x\ndata:\n  tree: Events\n   datasets: 3\n", 4, INDENT),
    "key-indented-too-little": ("name: x\ndata:\n  tree: Events\n datasets: 3\n", 4, INDENT),
    "list-item-dedented": ("items:\n  - a\n  - b\n - c\n", 4, INDENT),
    "list-under-a-mapping": ("name: x\ndata:\n  tree: Events\n  - a\n", 4, INDENT),
    "tab-indent": ("name: x\ndata:\n\ttree: Events\n", 3, "tab"),
    "unquoted-colon": ("name: x\npreprocess:\n  define:\n    HT: a: b\n", 4, "quote"),
    "key-without-colon": ("name: x\ndata\n  tree: Events\n", 2, "':'"),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_yaml_mistakes_name_the_file_line_and_a_remedy(case: str, tmp_path: Path) -> None:
    text, line, hint = MISTAKES[case]
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "<unicode string>" not in message
    assert str(path) in message
    assert f"line {line}, column " in message
    assert hint.format(line) in message
    if hint == INDENT:
        assert "use spaces" in message


def test_the_bad_line_is_shown_with_a_caret() -> None:
    text = "name: x\ndata:\n  tree: Events\n   datasets: 3\n"
    with pytest.raises(DocumentError) as info:
        load_yaml(text, what="'p.yaml'", limit=LIMIT)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("'p.yaml' is not valid YAML/JSON: line 4, column 12:")
    shown = [ln for ln in lines if "datasets: 3" in ln]
    assert shown, lines
    caret = lines[lines.index(shown[0]) + 1]
    assert caret.index("^") == shown[0].index("datasets: 3") + len("datasets")


def test_a_relative_path_is_named_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("specs").mkdir()
    Path("specs/p.yaml").write_text("name: [unclosed\n")
    with pytest.raises(
        SpecError, match=r"^'specs/p.yaml' is not valid YAML/JSON: line 2, column 1"
    ):
        load_spec("specs/p.yaml")


def test_a_control_character_is_located() -> None:
    with pytest.raises(DocumentError) as info:
        load_yaml("a: 1\nb: x\x07y\n", what="'p.yaml'", limit=LIMIT)
    message = str(info.value)
    assert "<unicode string>" not in message
    assert "line 2, column 5" in message
