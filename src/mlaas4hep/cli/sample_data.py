"""``mlaas4hep sample-data OUTDIR --events N``: NanoAOD-like signal and background files.

Writes ``OUTDIR/signal.root`` and ``OUTDIR/background.root`` (tree ``Events``, ``N``
events each), the inputs of the demo and of the tests.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlaas4hep.data.samples import write_sample_set


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outdir", type=Path, help="directory to write the files into")
    parser.add_argument(
        "--events", type=int, default=100_000, help="events per file (default 100000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    for kind, path in write_sample_set(args.outdir, args.events, seed=args.seed).items():
        size = path.stat().st_size / 1e6
        print(f"{kind:<10} {path}  {args.events} events  {size:.1f} MB")
    return 0
