"""Parse the ``FILE[:TREE]`` notation of the command line."""

from __future__ import annotations

import os


def split_tree(target: str) -> tuple[str, str | None]:
    """Split ``FILE[:TREE]`` into ``(FILE, TREE or None)``.

    The last ``:`` separates a tree name only when what follows holds no ``/`` (so
    ``root://host:1094//f.root`` keeps its port) and the whole text is not an existing file.
    """
    if ":" not in target or os.path.exists(target):
        return target, None
    head, tail = target.rsplit(":", 1)
    if not head or not tail or "/" in tail:
        return target, None
    return head, tail
