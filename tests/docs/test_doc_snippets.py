"""The snippet extractor: what counts as a snippet, and ids that survive edits elsewhere."""

from __future__ import annotations

from pathlib import Path

from doc_snippets import example_header_snippet, markdown_snippets, model_card_snippets

DOC = """# Title

```bash
echo one
```

## Use it: now

Text.

```python
print(2)
```

```yaml
not: code
```

```console
$ echo three
three
```

```
untagged
```
"""


def test_blocks_tagged_shell_or_python_are_snippets_in_order() -> None:
    found = markdown_snippets(DOC, "doc.md")
    assert [(s.id, s.lang, s.line) for s in found] == [
        ("doc.md#title:1", "bash", 4),
        ("doc.md#use-it-now:1", "python", 12),
        ("doc.md#use-it-now:2", "bash", 20),
    ]
    assert found[2].code == "echo three\n"  # console: only the $ lines, without the prompt


def test_an_edit_in_another_section_keeps_the_ids() -> None:
    edited = DOC.replace("# Title\n", "# Title\n\nMore.\n\n```sh\necho new\n```\n")
    before = {s.id: s.code for s in markdown_snippets(DOC, "doc.md")}
    after = {s.id: s.code for s in markdown_snippets(edited, "doc.md")}
    assert {k: v for k, v in after.items() if "use-it-now" in k} == {
        k: v for k, v in before.items() if "use-it-now" in k
    }


def test_model_card_blocks_count_untagged_as_shell() -> None:
    assert [s.lang for s in model_card_snippets(DOC)] == ["bash", "python", "bash", "bash"]


def test_example_header_commands(tmp_path: Path) -> None:
    spec = tmp_path / "x.yaml"
    spec.write_text(
        "# A spec.\n#   mlaas4hep run x.yaml --out runs/x\nversion: 1\n# mlaas4hep no\n"
    )
    snippet = example_header_snippet(spec, "examples/x.yaml")
    assert snippet is not None
    assert (snippet.id, snippet.line, snippet.code) == (
        "examples/x.yaml#header:1",
        2,
        "mlaas4hep run x.yaml --out runs/x\n",
    )
