"""Cache of first-pass results, keyed by the spec and the identity of the input files.

The key is the hash of the spec's ``data`` and ``preprocess`` sections; the entry records
the identity of every file read (``data.sources.file_identity``: path/URL, size, mtime) and
is used only while all of them are unchanged, so a rewritten file is never served a stale
first pass. A file whose identity cannot be read disables the cache for that run.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mlaas4hep.data.sources import file_identity
from mlaas4hep.errors import Mlaas4hepError
from mlaas4hep.spec import PipelineSpec, canonical_hash

_VERSION = 1


def key(spec: PipelineSpec) -> str:
    """Cache key of *spec*'s first pass (its data and preprocess sections)."""
    dumped = spec.model_dump(mode="json", include={"data", "preprocess"})
    return canonical_hash({"v": _VERSION, **dumped})


def _identity(path: str) -> dict[str, Any] | None:
    try:
        return file_identity(path)
    except (OSError, Mlaas4hepError):
        return None


def load(cache_dir: Path, key: str) -> dict[str, Any] | None:
    """The cached first-pass dict for *key*, or None when absent, unreadable or stale."""
    path = cache_dir / f"fit-{key}.json"
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for recorded in entry.get("files", []):
        if _identity(recorded["path"]) != recorded:
            return None
    info = entry.get("info")
    return info if isinstance(info, dict) else None


def save(cache_dir: Path, key: str, info: dict[str, Any], files: list[str]) -> bool:
    """Store *info* for *key* if every file is local; atomic (temp file + rename)."""
    ids = [_identity(f) for f in files]
    if not files or any(i is None for i in ids):
        return False
    cache_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"info": info, "files": ids})
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".fit-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, cache_dir / f"fit-{key}.json")
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return False
    return True
