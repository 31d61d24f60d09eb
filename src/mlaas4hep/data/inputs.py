"""What a spec's ``files`` entries name: one definition for the reader and for submission.

``classify`` decides what one entry is (a remote URL, a local path, a glob, an ``@list``
or a ``dataset:`` reference) exactly as :func:`mlaas4hep.data.sources.resolve_files`
reads it: the scheme as ``urllib`` parses it (so ``ROOT://``, ``xroot://`` and
``HTTPS://`` are remote, like ``root://``), surrounding blanks stripped, ``file://`` a
local path. ``resolve_inputs`` applies it to every entry of a spec at submission, opening
``@list`` files from the bytes sent with the job (never from the file system) and turning
``dataset:NAME`` into the caller's own upload. The result says, per input, what the job
will read, whether it needs the network, and which path a ``storage.read`` scope must
grant. It does no I/O: nothing here stats, globs or opens a path.
"""

from __future__ import annotations

import glob
import posixpath
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from mlaas4hep.errors import DataSourceError, SpecError

REMOTE_SCHEMES = ("root", "xroot", "http", "https")
DATASET_PREFIX = "dataset:"
LIST_PREFIX = "@"

Kind = Literal["remote", "local", "glob", "list", "dataset"]


@dataclass(frozen=True)
class Location:
    """One ``files`` entry, classified: ``text`` is the URL, path, pattern or name."""

    kind: Kind
    text: str


@dataclass(frozen=True)
class ResolvedInput:
    """One input a job will read.

    ``entry``: what goes into the stored spec (a path, glob or URL; lists expanded,
    ``dataset:`` replaced). ``remote``: the job needs the network for it. ``scope_path``:
    the path ``storage.read`` must grant, or None for the job's own files and uploads.
    ``written``: what the user wrote (the spec entry or the list line), for messages.
    ``dataset``: the NAME of a ``dataset:NAME`` entry.
    """

    entry: str
    remote: bool
    scope_path: str | None
    written: str
    dataset: str | None = None


def classify(entry: str, *, allow_lists: bool = True) -> Location:
    """What *entry* names, as the data layer reads it (see the module docstring).

    Raises:
        DataSourceError: an unsupported URL scheme (``ftp://``, ``s3://``, ...).
    """
    text = entry.strip()
    if allow_lists and text.startswith(LIST_PREFIX):
        return Location("list", text[len(LIST_PREFIX) :].strip())
    if text.startswith(DATASET_PREFIX):
        return Location("dataset", text[len(DATASET_PREFIX) :])
    scheme = urllib.parse.urlsplit(text).scheme  # lower case, whatever was written
    if scheme in REMOTE_SCHEMES:
        return Location("remote", text)
    if scheme == "file":
        text = urllib.parse.urlsplit(text).path
    elif scheme and len(scheme) > 1:  # one letter: a Windows drive, not a scheme
        allowed = ", ".join(f"{s}://" for s in REMOTE_SCHEMES)
        msg = f"unsupported URL scheme {scheme!r} in {text!r}; use a local path, {allowed}"
        raise DataSourceError(msg)
    return Location("glob" if glob.has_magic(text) else "local", text)


def list_entries(text: str) -> list[str]:
    """The entries of a file list: one per line, ``#`` comments and blank lines skipped."""
    entries = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [e for e in entries if e]


def resolve_inputs(
    entries: Sequence[str],
    *,
    lists: Mapping[str, bytes],
    dataset: Callable[[str], str],
    list_dir: str,
    redirector: str | None = None,
) -> list[ResolvedInput]:
    """Resolve every entry of one dataset's ``files`` (see the module docstring).

    ``lists``: the files sent with the job, by name; ``@NAME`` must be one of them.
    ``dataset``: the path of the caller's own dataset NAME (raises SpecError when none).
    ``list_dir``: where the job finds its own files; relative list lines are under it.
    ``redirector``: set when ``/store/...`` names may be read through XRootD.

    Raises:
        SpecError: a list that was not sent with the job, not UTF-8 text, or empty; a
            ``~`` path; an unknown dataset (from ``dataset``).
        DataSourceError: an unsupported URL scheme.
    """
    out: list[ResolvedInput] = []
    for entry in entries:
        loc = classify(entry)
        if loc.kind == "list":
            for line in _list_lines(loc.text, lists):
                sub = classify(line, allow_lists=False)
                if sub.kind in ("local", "glob") and not sub.text.startswith("/"):
                    # relative lines are relative to the list, as resolve_files reads them
                    sub = Location(sub.kind, posixpath.join(list_dir, sub.text))
                out.append(_one(sub, line, dataset, redirector))
        else:
            out.append(_one(loc, entry, dataset, redirector))
    return out


def _list_lines(name: str, lists: Mapping[str, bytes]) -> list[str]:
    if name not in lists:
        msg = (
            f"the file list {LIST_PREFIX + name!r} is not among the files sent with the job "
            f"({sorted(lists)!r}); a list comes only from the job's own files: send it with "
            f"the spec (mlaas4hep submit --file LIST, or -F files=@LIST) and write "
            f"'{LIST_PREFIX}' plus its bare name"
        )
        raise SpecError(msg)
    try:
        lines = list_entries(lists[name].decode("utf-8"))
    except UnicodeDecodeError as exc:
        msg = f"the file list {name!r} is not UTF-8 text; write one path or URL per line"
        raise SpecError(msg) from exc
    if not lines:
        msg = f"the file list {name!r} names no file; write one path or URL per line"
        raise SpecError(msg)
    return lines


def _one(
    loc: Location, written: str, dataset: Callable[[str], str], redirector: str | None
) -> ResolvedInput:
    if loc.kind == "dataset":
        return ResolvedInput(dataset(loc.text), False, None, written, dataset=loc.text)
    if loc.kind == "remote":
        path = urllib.parse.urlsplit(loc.text).path
        return ResolvedInput(loc.text, True, _normal(path), written)
    if loc.text.startswith("~"):
        msg = f"{written!r}: a job has no home directory; give an absolute path or a URL"
        raise SpecError(msg)
    store = bool(redirector) and loc.text.startswith("/store/")
    return ResolvedInput(loc.text, store, scope_path(loc), written)


def scope_path(loc: Location) -> str | None:
    """The path ``storage.read`` must grant for a local path or glob (None: the job's own).

    A glob needs its fixed part, the directories before the first wildcard; a relative
    path stays in the job's own directory unless it climbs out with ``..``, and then it is
    returned as written: no scope grants it.
    """
    text = loc.text
    if loc.kind == "glob":
        fixed = _until_magic(PurePosixPath(text).parts)
        text = posixpath.join(*fixed) if fixed else "."
    if text.startswith("/"):
        return _normal(text)
    return text if ".." in PurePosixPath(text).parts else None


def _until_magic(parts: Sequence[str]) -> list[str]:
    fixed: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return fixed


def _normal(path: str) -> str:
    return "/" + posixpath.normpath("/" + path).lstrip("/")
