"""Find the runnable snippets of the documentation.

Where they come from:

- README.md and docs/*.md: fenced blocks tagged ``bash``/``sh``/``shell``/``console``
  (shell; in ``console`` blocks only the ``$ ``-prefixed lines) or ``python``;
- examples/*.yaml: the ``#   mlaas4hep ...`` command lines of each file's leading comment
  block, one snippet per file;
- a generated model card (README.md of a bundle): its fenced blocks (untagged: shell).

Each snippet has a stable id ``FILE#HEADING-SLUG:N``, N counting the snippets under that
heading from 1, so an edit elsewhere in the file does not renumber it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SHELL_TAGS = frozenset({"bash", "sh", "shell", "console"})
PYTHON_TAGS = frozenset({"python", "py"})
_FENCE = re.compile(r"^ {0,3}(```+|~~~+)\s*([\w+-]*)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_EXAMPLE_COMMAND = re.compile(r"^#\s+(mlaas4hep\s.*)$")


@dataclass(frozen=True)
class Snippet:
    """One runnable piece of the documentation."""

    id: str
    source: str  # the file, relative to the repository root (or "model-card")
    line: int  # the line of the file the code starts on (1-based)
    lang: str  # "bash" | "python"
    heading: str
    code: str

    @property
    def first_line(self) -> str:
        return next((ln for ln in self.code.splitlines() if ln.strip()), "")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading (lowercase, punctuation dropped, spaces to dashes)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-") or "top"


def markdown_snippets(text: str, source: str, *, untagged_as: str | None = None) -> list[Snippet]:
    """The shell and Python blocks of a Markdown document, in document order.

    *untagged_as*: the language of untagged blocks (the model card leaves its curl block
    untagged); by default untagged blocks are not code to run.
    """
    snippets: list[Snippet] = []
    heading, per_heading = "top", dict[str, int]()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            if m := _HEADING.match(lines[i]):
                heading = m.group(2)
            i += 1
            continue
        marker, tag = fence.group(1), fence.group(2).lower()
        end = next(
            (j for j in range(i + 1, len(lines)) if lines[j].lstrip().startswith(marker)),
            len(lines),
        )
        body = lines[i + 1 : end]
        lang = _language(tag, untagged_as)
        if lang is not None:
            if tag == "console":
                body = [ln.lstrip()[2:] for ln in body if ln.lstrip().startswith("$ ")]
            key = slug(heading)
            per_heading[key] = per_heading.get(key, 0) + 1
            snippets.append(
                Snippet(
                    id=f"{source}#{key}:{per_heading[key]}",
                    source=source,
                    line=i + 2,
                    lang=lang,
                    heading=heading,
                    code="\n".join(body) + "\n",
                )
            )
        i = end + 1
    return snippets


def _language(tag: str, untagged_as: str | None) -> str | None:
    if tag in SHELL_TAGS:
        return "bash"
    if tag in PYTHON_TAGS:
        return "python"
    if not tag:
        return untagged_as
    return None


def example_header_snippet(path: Path, source: str) -> Snippet | None:
    """The ``#   mlaas4hep ...`` lines of a pipeline file's leading comments, or None."""
    commands: list[str] = []
    first = 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.startswith("#"):
            break
        if m := _EXAMPLE_COMMAND.match(line):
            commands.append(m.group(1).rstrip())
            first = first or number
    if not commands:
        return None
    return Snippet(
        id=f"{source}#header:1",
        source=source,
        line=first,
        lang="bash",
        heading="header",
        code="\n".join(commands) + "\n",
    )


def documentation_snippets(repo: Path) -> list[Snippet]:
    """Every snippet of README.md, docs/*.md and examples/*.yaml, in the order a reader
    meets them: README first, then the docs and the examples by file name."""
    found = markdown_snippets((repo / "README.md").read_text(), "README.md")
    for doc in sorted((repo / "docs").glob("*.md")):
        found += markdown_snippets(doc.read_text(), f"docs/{doc.name}")
    for example in sorted((repo / "examples").glob("*.yaml")):
        if (snippet := example_header_snippet(example, f"examples/{example.name}")) is not None:
            found.append(snippet)
    return found


def model_card_snippets(card: str) -> list[Snippet]:
    """The commands of a generated model card: its fenced blocks (untagged ones: shell)."""
    return markdown_snippets(card, "model-card", untagged_as="bash")
