"""The one ``mlaas4hep`` command.

Sub-commands live in their own modules under ``mlaas4hep.cli`` and are imported lazily
(a registry of dotted paths), so ``mlaas4hep inspect`` never pays for importing torch.
Each module provides ``add_arguments(parser)`` and ``run(args) -> int``.

Errors of the project (``Mlaas4hepError``) are printed in one or two lines and turned into
a non-zero exit status; a traceback is only shown with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from mlaas4hep import __version__
from mlaas4hep.errors import Mlaas4hepError

# name -> (module, one-line help). Add a command by adding a module and a line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("mlaas4hep.cli.demo", "the whole system end to end on embedded defaults"),
    "token": ("mlaas4hep.cli.token", "mint a token from the local issuer (single-user use)"),
    "login": ("mlaas4hep.cli.login", "get a token from an OIDC issuer (device flow) and store it"),
    "predict": ("mlaas4hep.cli.predict", "score rows (.json/.root) with a model: served or bundle"),
    "apply": ("mlaas4hep.cli.apply", "score every event of ROOT files into friend trees"),
    "inspect": ("mlaas4hep.cli.inspect_file", "show the schema of a ROOT file (branches, types)"),
    "sample-data": ("mlaas4hep.cli.sample_data", "write NanoAOD-like signal/background files"),
    "stats": ("mlaas4hep.cli.stats", "first-pass statistics of ROOT files (cached)"),
    "preview": ("mlaas4hep.cli.preview", "feature table, cut flow and feature stats of a spec"),
    "convert-legacy": ("mlaas4hep.cli.convert_legacy", "convert old MLaaS4HEP inputs to a spec"),
    "run": ("mlaas4hep.cli.run", "run a pipeline locally: preprocess, train, export (bundle)"),
    "serve": ("mlaas4hep.cli.serve", "run the service (job API + executor) on 127.0.0.1"),
    "submit": ("mlaas4hep.cli.submit", "submit a pipeline to the service (--wait: follow it)"),
    "jobs": ("mlaas4hep.cli.jobs", "list your jobs on the service"),
    "logs": ("mlaas4hep.cli.logs", "print a job's log (-f: follow it)"),
    "cancel": ("mlaas4hep.cli.cancel", "cancel a queued or running job"),
    "download": ("mlaas4hep.cli.download", "download a succeeded job's artifacts"),
}

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class Command(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(module: str) -> Command:
    return cast(Command, importlib.import_module(module))


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """Build the parser; only the selected sub-command's module is imported."""
    parser = argparse.ArgumentParser(prog="mlaas4hep", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mlaas4hep {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            _load(module).add_arguments(p)
            p.set_defaults(_module=module)
        else:
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mlaas4hep`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return _load(args._module).run(args)
    except Mlaas4hepError as exc:
        if args.debug:
            raise
        print(f"mlaas4hep {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"mlaas4hep {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
