"""``mlaas4hep inspect FILE[:TREE]``: the schema of a ROOT file, from metadata only.

Prints one row per branch (type, flat/jagged/counter, collection, compressed and
uncompressed size) under a header with the tree name and number of entries; ``--json``
prints the same as one JSON object. No basket is read, so it is fast on any file size.
"""

from __future__ import annotations

import argparse
import json

from mlaas4hep.data.schema import TreeSchema, inspect_tree
from mlaas4hep.data.target import split_tree


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", metavar="FILE[:TREE]", help="path or root:// / http(s):// URL, tree optional"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    path, tree = split_tree(args.target)
    schema = inspect_tree(path, tree)
    print(json.dumps(schema.to_dict()) if args.json else render(schema))
    return 0


def human_bytes(n: int) -> str:
    """``1536`` -> ``'1.5 kB'`` (decimal units, as file sizes are usually quoted)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover - unreachable


def render(schema: TreeSchema) -> str:
    """The schema as an aligned text table."""
    head = ("branch", "type", "kind", "collection", "compressed", "uncompressed")
    rows = [
        (
            b.name,
            b.dtype,
            b.kind,
            b.collection or "-",
            human_bytes(b.compressed_bytes),
            human_bytes(b.uncompressed_bytes),
        )
        for b in schema.branches
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = {4, 5}  # sizes align right

    def line(row: tuple[str, ...]) -> str:
        cells = (
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "  ".join(cells).rstrip()

    title = (
        f"{schema.path}  tree {schema.tree!r}: {schema.entries} entries, "
        f"{len(schema.branches)} branches, {human_bytes(schema.compressed_bytes)} compressed, "
        f"{human_bytes(schema.uncompressed_bytes)} uncompressed"
    )
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([title, line(head), rule, *(line(r) for r in rows)])
