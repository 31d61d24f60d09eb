"""A spec's local input files, uploaded as datasets of the caller (``mlaas4hep submit``,
``Client.submit(path)``).

A job runs in the service's sandbox, which sees only the caller's uploaded datasets: each
local entry is read as ``mlaas4hep run`` reads it (a relative path or glob relative to the
working directory, and when nothing is there to the spec file's directory; an ``@list``
file's relative lines relative to the list), each file is uploaded once
(:mod:`mlaas4hep.client.uploads`: content-addressed, resumable) and ``dataset:NAME`` takes
its place in the typed spec; ``root://``, ``http(s)://`` and ``dataset:`` entries stay as
written, and so does an absolute path that is not on this machine (the service may read it
from a shared file system with a ``storage.read`` grant, its policy decides). A relative
path that names no local file is an error here: nothing on the service could resolve it.
An apply request is sent as written (its inputs are the service's to resolve).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mlaas4hep.data.inputs import classify, list_entries
from mlaas4hep.errors import MissingFileError, SpecError

if TYPE_CHECKING:
    from mlaas4hep.client.service import Client
    from mlaas4hep.client.uploads import Progress, Uploaded
    from mlaas4hep.spec import PipelineSpec


def with_uploads(
    client: Client,
    path: Path,
    spec: bytes,
    sent: Sequence[str] = (),
    *,
    progress: Progress | None = None,
    uploaded: Callable[[Uploaded], None] | None = None,
) -> bytes:
    """The spec document *spec* (read from *path*) with its local input files uploaded
    and named ``dataset:NAME`` (unchanged when it names none, and for an apply request).
    *sent*: the names of files sent with the job (``--file``); *uploaded* sees each
    upload's outcome."""
    from mlaas4hep.apply_request import is_apply_request
    from mlaas4hep.documents import load_yaml
    from mlaas4hep.spec import MAX_SPEC_BYTES, validate_spec

    raw = load_yaml(spec, what=repr(str(path)), limit=MAX_SPEC_BYTES)
    if not isinstance(raw, dict) or is_apply_request(raw):
        return spec  # the service says what is wrong with it
    typed = validate_spec(raw, origin=repr(str(path)))

    def put(local: Path) -> str:
        item = client.upload_dataset(local, progress=progress)
        if uploaded is not None:
            uploaded(item)
        return item.uri

    local = localize(typed, put, cwd=Path.cwd(), spec_dir=path.resolve().parent, keep=sent)
    if local == typed:
        return spec
    return json.dumps(local.model_dump(mode="json")).encode()


def expand(entry: str, cwd: Path, spec_dir: Path, *, allow_lists: bool = True) -> list[Path | str]:
    """What *entry* names: local files (``Path``), and entries left as written (``str``:
    a URL, ``dataset:``, or a ``/store/`` name that is not a local file).

    Raises:
        MissingFileError: a local path, glob or list that names no file.
    """
    loc = classify(entry, allow_lists=allow_lists)
    if loc.kind in ("remote", "dataset"):
        return [entry.strip()]
    if loc.kind == "list":
        listed = _locate(loc.text, cwd, spec_dir)
        if listed is None:
            msg = f"the file list {entry!r} does not exist (looked in {str(cwd)!r})"
            raise MissingFileError(msg)
        return _list_files(listed)
    if loc.kind == "glob":
        if os.path.isabs(os.path.expanduser(loc.text)) and not glob.glob(loc.text):
            return [entry.strip()]  # a path on the service's side (see below)
        return list(_glob(loc.text, cwd, spec_dir, entry))
    found = _locate(loc.text, cwd, spec_dir)
    if found is None:
        if Path(loc.text).expanduser().is_absolute():
            # not here: a logical file name read through the redirector (/store/...), or a
            # path the service itself can read (a shared file system and a storage.read
            # grant); the service's submission policy decides, with the remedy if not
            return [entry.strip()]
        msg = f"input file {entry!r} does not exist (looked in {str(cwd)!r} and {str(spec_dir)!r})"
        raise MissingFileError(msg)
    return [found]


def localize(
    spec: PipelineSpec,
    put: Callable[[Path], str],
    *,
    cwd: Path,
    spec_dir: Path,
    keep: Sequence[str] = (),
) -> PipelineSpec:
    """*spec* with every local file replaced by ``put(path)`` (a ``dataset:NAME``).

    *keep*: names of files sent with the job (``--file``): an entry naming one that is not
    a local file is left for the service to read from the job's own files.
    """
    uris: dict[Path, str] = {}
    datasets = []
    for ds in spec.data.datasets:
        files: list[str] = []
        for item in (i for e in ds.files for i in _expand_or_keep(e, cwd, spec_dir, keep)):
            if isinstance(item, str):
                files.append(item)
                continue
            if item not in uris:
                uris[item] = put(item)
            files.append(uris[item])
        datasets.append(ds.model_copy(update={"files": list(dict.fromkeys(files))}))
    data = spec.data.model_copy(update={"datasets": datasets})
    return spec.model_copy(update={"data": data})


def _expand_or_keep(entry: str, cwd: Path, spec_dir: Path, keep: Sequence[str]) -> list[Path | str]:
    try:
        return expand(entry, cwd, spec_dir)
    except MissingFileError:
        if entry.strip().removeprefix("@").strip() in keep:
            return [entry]
        raise


def _locate(text: str, cwd: Path, spec_dir: Path) -> Path | None:
    path = Path(text).expanduser()
    for candidate in (path,) if path.is_absolute() else (cwd / path, spec_dir / path):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _glob(pattern: str, cwd: Path, spec_dir: Path, entry: str) -> list[Path]:
    pattern = os.path.expanduser(pattern)
    bases = ("",) if os.path.isabs(pattern) else (str(cwd), str(spec_dir))
    for base in bases:
        full = os.path.join(base, pattern) if base else pattern
        files = sorted(Path(p).resolve() for p in glob.glob(full, recursive=True))
        files = [p for p in files if p.is_file()]
        if files:
            return files
    msg = f"glob {entry!r} matches no file (looked in {str(cwd)!r} and {str(spec_dir)!r})"
    raise MissingFileError(msg)


def _list_files(listed: Path) -> list[Path | str]:
    try:
        lines = list_entries(listed.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"the file list {str(listed)!r} cannot be read as text; write one path per line"
        raise SpecError(msg) from exc
    out: list[Path | str] = []
    for line in lines:
        # relative lines are relative to the list, as `mlaas4hep run` reads them
        out.extend(expand(line, listed.parent, listed.parent, allow_lists=False))
    return out
