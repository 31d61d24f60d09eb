"""``mlaas4hep datasets list|upload|rm``: your uploaded input files on the service.

``upload FILE...`` sends ROOT files as datasets (refer to one as ``dataset:NAME`` in a
spec): content-addressed, so a file you already uploaded is not sent again, and resumed
where an interrupted upload stopped (run the same command again). A progress bar is drawn
on stderr when it is a terminal. ``rm`` takes a name or an id. ``--json`` prints the
service's documents for scripts.

:func:`localize` is what ``mlaas4hep submit`` does with a spec's local files: it reads
each entry as ``mlaas4hep run`` does (a relative path or glob relative to the working
directory, and when nothing is there to the spec file's directory; an ``@list`` file's
relative lines relative to the list), uploads each file once and puts ``dataset:NAME`` in
its place; ``root://``, ``http(s)://`` and ``dataset:`` entries stay as written.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlaas4hep.cli.client import add_client_arguments, client_from_args
from mlaas4hep.client.uploads import Progress, Uploaded
from mlaas4hep.data.inputs import classify, list_entries
from mlaas4hep.errors import MissingFileError, SpecError

if TYPE_CHECKING:
    from mlaas4hep.spec import PipelineSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="your datasets, newest first")
    ls.add_argument("--json", action="store_true", help="print the service's JSON")
    up = sub.add_parser("upload", help="upload ROOT files (deduplicated, resumable)")
    up.add_argument("files", type=Path, nargs="+", metavar="FILE", help="ROOT files")
    up.add_argument("--name", help="the dataset name (one file only; default: its file name)")
    up.add_argument("--json", action="store_true", help="print one JSON document per file")
    rm = sub.add_parser("rm", help="delete datasets by name or id")
    rm.add_argument("refs", nargs="+", metavar="NAME_OR_ID")
    for p in (ls, up, rm):
        add_client_arguments(p)


def run(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        if args.action == "list":
            items = client.datasets()
            if args.json:
                print(json.dumps({"items": items}, indent=2))
            else:
                _table(items)
        elif args.action == "upload":
            if args.name and len(args.files) > 1:
                print("mlaas4hep datasets: --name needs a single FILE", file=sys.stderr)
                return 2
            with upload_progress() as progress:
                done = [client.upload_dataset(f, args.name, progress) for f in args.files]
            for item in done:
                print(json.dumps(item.to_dict()) if args.json else describe(item))
        else:
            for ref in args.refs:
                ds = client.dataset(ref)
                client.delete_dataset(ds["id"])
                print(f"deleted dataset:{ds['name']} ({ds['id']})")
    return 0


def describe(item: Uploaded) -> str:
    """One line saying what an upload did."""
    size = _mb(int(item.dataset["size"]))
    if item.reused:
        return f"{item.path}: already uploaded as {item.uri} ({size}, same sha256), not sent"
    resumed = f", resumed at {_mb(item.resumed_from)}" if item.resumed_from else ""
    return f"{item.path}: uploaded as {item.uri} ({size}{resumed})"


@contextmanager
def upload_progress() -> Iterator[Progress | None]:
    """A rich progress bar on stderr while uploads run; None when stderr is no terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as Bar

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    tasks: dict[str, Any] = {}
    with Bar(*columns, console=Console(stderr=True), transient=True) as bar:

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total, completed=0)
            bar.update(tasks[phase], completed=done)

        yield update


def _table(items: list[dict[str, Any]]) -> None:
    if not items:
        print("no datasets; upload one with `mlaas4hep datasets upload FILE`")
        return
    width = max(len(d["name"]) for d in items)
    for d in items:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(_epoch(d["created_at"])))
        size = _mb(int(d["size"]))
        print(f"{d['name']:<{width}}  {size:>10}  {d['sha256'][:12]}  {when}  {d['id']}")


def _epoch(value: Any) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return 0.0


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} B"


# ---- a spec's local files ------------------------------------------------------------


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
        return list(_glob(loc.text, cwd, spec_dir, entry))
    found = _locate(loc.text, cwd, spec_dir)
    if found is None:
        if loc.text.startswith("/store/"):
            return [entry.strip()]  # a logical file name, read through the redirector
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
