"""``mlaas4hep datasets list|upload|rm``: your uploaded input files on the service.

``upload FILE...`` sends ROOT files as datasets (refer to one as ``dataset:NAME`` in a
spec): content-addressed, so a file you already uploaded is not sent again, and resumed
where an interrupted upload stopped (run the same command again). A progress bar is drawn
on stderr when it is a terminal. ``rm`` takes a name or an id. ``--json`` prints the
service's documents for scripts.

What ``mlaas4hep submit`` does with a spec's local files is :mod:`mlaas4hep.client.localize`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlaas4hep.cli.client import add_client_arguments, client_from_args
from mlaas4hep.client.uploads import Progress, Uploaded


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
