"""docs/security.md's authorization matrix is generated from the matrix the tests walk.

``tests/integration/test_authz_matrix.py`` lists every route of the app (a route missing
from it fails that test) with the scope it needs and whose resource it touches, and checks
each row against the real service. The table in docs/security.md between the
``authz-matrix`` markers must be exactly what :func:`render` makes of that list, so the
page cannot drift from what is tested. After changing the matrix, regenerate the page:

    .venv/bin/python tests/security/test_authz_doc.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "integration"))
import test_authz_matrix as matrix  # noqa: E402 (after its directory is on the path)

DOC = HERE.parents[1] / "docs" / "security.md"
BEGIN, END = "<!-- authz-matrix:begin -->", "<!-- authz-matrix:end -->"
_OTHER = {
    "job": "404 (as if absent)",
    "dataset": "404 (as if absent)",
    "upload": "404 (partial uploads are per caller)",
    "model": "403 (names are one namespace)",
    "listing": "200, only what they may see",
}
_ADMIN = {"job": "yes", "dataset": "yes", "upload": "no", "model": "yes", "listing": "sees all"}


def _scopes(needs: tuple[str, ...]) -> str:
    if not needs:
        return "any valid token"
    shown = [n.replace(f"/models/{matrix.MODEL}", "/models/NAME") for n in needs]
    return " or ".join(f"`{s}`" for s in shown)


def render() -> str:
    """The markdown table of every authenticated and every public route."""
    lines = [
        "| method | route | scope needed (one of) | resource | another user | admin group |",
        "|---|---|---|---|---|---|",
    ]
    for method, path in sorted(matrix.CASES, key=lambda k: (k[1], k[0])):
        case = matrix.CASES[(method, path)]
        res = case.resource or "-"
        other = _OTHER.get(case.resource or "", "-")
        admin = _ADMIN.get(case.resource or "", "-")
        row = f"| {method} | `{path}` | {_scopes(case.needs)} | {res} | {other} | {admin} |"
        lines.append(row)
    for method, path in sorted(matrix.PUBLIC, key=lambda k: (k[1], k[0])):
        lines.append(f"| {method} | `{path}` | none: {matrix.PUBLIC[(method, path)]} | - | - | - |")
    return "\n".join(lines)


def _current() -> str:
    text = DOC.read_text()
    assert BEGIN in text, f"docs/security.md lacks the {BEGIN} marker"
    assert END in text, f"docs/security.md lacks the {END} marker"
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def test_the_documented_matrix_is_the_tested_one() -> None:
    assert _current() == render(), (
        "docs/security.md's authorization matrix differs from tests/integration/"
        "test_authz_matrix.py; regenerate it: .venv/bin/python tests/security/test_authz_doc.py"
    )


def write() -> None:
    """Replace the table in docs/security.md with :func:`render`."""
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{BEGIN}\n{render()}\n{END}{tail}")


if __name__ == "__main__":
    write()
