"""A test-only sub-command that writes far more than a pipe holds, the way the real
commands write: ``print`` (jobs --json), raw bytes (logs), a rich table (jobs)."""

from __future__ import annotations

import argparse
import sys

LINES = 50_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mode", choices=["print", "bytes", "rich"])


def run(args: argparse.Namespace) -> int:
    if args.mode == "print":
        for i in range(LINES):
            print(f'{{"line": {i}, "text": "{"x" * 40}"}}')
    elif args.mode == "bytes":
        for i in range(LINES):
            sys.stdout.buffer.write(b"log line %d %s\n" % (i, b"y" * 40))
            sys.stdout.buffer.flush()
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table()
        table.add_column("n")
        for i in range(LINES // 10):
            table.add_row(str(i) * 20)
        Console(width=120).print(table)
    return 0
