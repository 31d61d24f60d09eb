"""``mlaas4hep download ID [--out DIR] [--bundle]``: fetch a succeeded job's artifacts.

Each file is saved under DIR with its relative name (checked: nothing lands outside DIR);
``--bundle`` saves the single ``bundle.tar.gz`` instead. ``--json`` prints the list of
saved files (``[{"name", "path"}...]``) and nothing else.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path, PurePosixPath

from mlaas4hep.cli.client import add_client_arguments, client_from_args
from mlaas4hep.errors import UnsafeArchiveError

BUNDLE = "bundle.tar.gz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="the job id (see `mlaas4hep jobs`)")
    parser.add_argument("--out", type=Path, help="target directory (default: ./<job id>)")
    parser.add_argument("--bundle", action="store_true", help="download bundle.tar.gz only")
    parser.add_argument("--json", action="store_true", help="print the saved files as JSON")
    add_client_arguments(parser)


def run(args: argparse.Namespace) -> int:
    out: Path = args.out or Path(args.job_id)
    saved: list[dict[str, str]] = []
    with client_from_args(args) as client:
        if args.bundle:
            path = client.download(args.job_id, BUNDLE, out / BUNDLE)
            saved.append({"name": BUNDLE, "path": str(path)})
        else:
            names = [a["name"] for a in client.artifacts(args.job_id) if a["name"] != BUNDLE]
            for name in names:
                path = client.download(args.job_id, name, out / safe_relative(name))
                saved.append({"name": name, "path": str(path)})
    if args.json:
        print(json.dumps(saved, indent=2))
    elif args.bundle:
        print(f"saved {saved[0]['path']}")
    else:
        print(f"saved {len(saved)} files under {out}")
    return 0


def safe_relative(name: str) -> Path:
    """*name* as a relative path that stays inside the target directory."""
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        msg = f"the server sent an unsafe artifact name {name!r}; refusing to write it"
        raise UnsafeArchiveError(msg)
    return Path(*pure.parts)
