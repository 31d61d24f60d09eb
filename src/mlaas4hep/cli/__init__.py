"""The one ``mlaas4hep`` command.

Sub-commands live in their own modules under ``mlaas4hep.cli`` and are imported lazily
(a registry of dotted paths), so ``mlaas4hep inspect`` never pays for importing torch.
Each module provides ``add_arguments(parser)`` and ``run(args) -> int``. ``--help``
lists the commands by ``GROUPS`` and each command's help ends with its ``EXAMPLES``,
both kept here so that showing them imports nothing.

Errors of the project (``Mlaas4hepError``) are printed in one or two lines and turned into
a non-zero exit status; a traceback is only shown with ``--debug``. A reader that closes
the pipe early (``mlaas4hep jobs --json | head -1``) ends any command quietly, status 0.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import textwrap
from argparse import SUPPRESS
from collections.abc import Sequence
from typing import Protocol, cast

from mlaas4hep import __version__
from mlaas4hep.errors import Mlaas4hepError

# name -> (module, one-line help). Add a command by adding a module, a line here and its
# name in GROUPS (and, where useful, a few lines in EXAMPLES).
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
    "mlflow-export": (
        "mlaas4hep.cli.mlflow_export",
        "export a bundle as a run to an MLflow server",
    ),
    "serve": ("mlaas4hep.cli.serve", "run the service (job API + executor) on 127.0.0.1"),
    "submit": ("mlaas4hep.cli.submit", "submit a pipeline to the service (--wait: follow it)"),
    "status": ("mlaas4hep.cli.status", "one job: state, phase, progress, ETA, metrics, model"),
    "wait": ("mlaas4hep.cli.wait", "follow a job until it ends (exit 0 when it succeeded)"),
    "jobs": ("mlaas4hep.cli.jobs", "list your jobs on the service"),
    "logs": ("mlaas4hep.cli.logs", "print a job's log (-f: follow it)"),
    "cancel": ("mlaas4hep.cli.cancel", "cancel a queued or running job"),
    "download": ("mlaas4hep.cli.download", "download a succeeded job's artifacts"),
    "datasets": ("mlaas4hep.cli.datasets", "your datasets on the service: list, upload, rm"),
    "models": (
        "mlaas4hep.cli.models",
        "published models: list, show, rm, aliases, promote, rollback, policy",
    ),
    "completion": ("mlaas4hep.cli.completion", "print a shell completion script (bash|zsh|fish)"),
}

#: How ``mlaas4hep --help`` groups the commands (each command in exactly one group).
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Local pipeline", ("inspect", "stats", "preview", "run", "apply", "mlflow-export")),
    (
        "Service",
        ("submit", "status", "wait", "jobs", "logs", "cancel", "download", "datasets", "models"),
    ),
    ("Inference", ("predict", "serve")),
    ("Set-up", ("token", "login", "demo", "sample-data", "convert-legacy", "completion")),
)

#: The example epilog of ``mlaas4hep COMMAND --help`` (kept here: no import to show it).
EXAMPLES: dict[str, str] = {
    "inspect": "mlaas4hep inspect data/signal.root\nmlaas4hep inspect data/signal.root --json",
    "stats": "mlaas4hep stats data/signal.root --tree Events",
    "preview": "mlaas4hep preview examples/tth-vs-qcd.yaml",
    "run": "mlaas4hep run examples/tth-vs-qcd.yaml --out runs/tth\n"
    "mlaas4hep run examples/tth-vs-qcd.yaml --out runs/tth --resume",
    "mlflow-export": "mlaas4hep mlflow-export runs/tth --tracking-uri http://127.0.0.1:5000\n"
    "MLFLOW_TRACKING_URI=https://mlflow.example.org mlaas4hep mlflow-export runs/tth "
    "--experiment tth",
    "apply": "mlaas4hep apply runs/tth data/signal.root --out scores/\n"
    "mlaas4hep apply tth-classifier:3 data/*.root --out scores/   # a published model",
    "submit": "mlaas4hep submit examples/tth-vs-qcd.yaml --wait\n"
    "mlaas4hep submit pipeline.yaml --file model.py",
    "status": "mlaas4hep status 3f2c...e1\nmlaas4hep status 3f2c...e1 --json | jq .progress",
    "wait": "mlaas4hep wait 3f2c...e1 && mlaas4hep download 3f2c...e1 --out runs/tth\n"
    "mlaas4hep wait 3f2c...e1 --timeout 600 --json > job.json",
    "jobs": "mlaas4hep jobs --state running --state queued\nmlaas4hep jobs --json | jq -r '.[].id'",
    "logs": "mlaas4hep logs 3f2c...e1 -f",
    "cancel": "mlaas4hep cancel 3f2c...e1",
    "download": "mlaas4hep download 3f2c...e1 --out runs/tth\n"
    "mlaas4hep download 3f2c...e1 --bundle --json",
    "datasets": "mlaas4hep datasets list\nmlaas4hep datasets upload data/background.root",
    "models": "mlaas4hep models list\nmlaas4hep models show tth-classifier:3\n"
    "mlaas4hep models rm tth-classifier --yes",
    "predict": "mlaas4hep predict tth-classifier --input data/signal.root --tree Events\n"
    "mlaas4hep predict runs/tth --input data/signal.root | head",
    "serve": "mlaas4hep serve\nmlaas4hep serve --port 8080 --data-dir /srv/mlaas4hep",
    "token": "export MLAAS4HEP_TOKEN=$(mlaas4hep token --user alice)\n"
    "mlaas4hep token --user alice --save",
    "login": "mlaas4hep login --issuer https://cms-auth.web.cern.ch/ --scope compute.create\n"
    'mlaas4hep login --token "$(oidc-token cms)"',
    "demo": "mlaas4hep demo",
    "sample-data": "mlaas4hep sample-data data/ --events 100000",
    "completion": "source <(mlaas4hep completion bash)           # in ~/.bashrc\n"
    "mlaas4hep completion zsh > ~/.zfunc/_mlaas4hep       # a directory in $fpath\n"
    "mlaas4hep completion fish > ~/.config/fish/completions/mlaas4hep.fish",
}

_TOP_EXAMPLES = """\
Examples:
  mlaas4hep sample-data data/ --events 100000
  mlaas4hep run examples/tth-vs-qcd.yaml --out runs/tth
  mlaas4hep submit examples/tth-vs-qcd.yaml --wait
  mlaas4hep status JOB --json
  mlaas4hep predict tth-classifier --input data/signal.root --tree Events

`mlaas4hep COMMAND --help` shows a command's options and examples."""

DESCRIPTION = (
    "Machine Learning as a Service for HEP: from ROOT files to a trained, evaluated and\n"
    "served model with one pipeline file, on a laptop or on the service."
)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class Command(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(module: str) -> Command:
    return cast(Command, importlib.import_module(module))


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """Build the parser; only the selected sub-command's module is imported."""
    parser = argparse.ArgumentParser(
        prog="mlaas4hep",
        usage="mlaas4hep [-h] [--version] [--debug] COMMAND ...",
        description=DESCRIPTION,
        epilog=grouped_commands() + "\n\n" + _TOP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mlaas4hep {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    # The commands are listed by group in the epilog, not in argparse's one flat list.
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, help=SUPPRESS, prog="mlaas4hep"
    )
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_examples(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(_module=module)
        if name == wanted:
            _load(module).add_arguments(p)
        else:
            p.add_argument("rest", nargs=argparse.REMAINDER, help=SUPPRESS)
    return parser


def grouped_commands() -> str:
    """The commands by group, as ``mlaas4hep --help`` lists them."""
    width = max(len(name) for name in COMMANDS) + 2
    blocks = []
    for title, names in GROUPS:
        lines = [f"  {name:<{width}}{COMMANDS[name][1]}" for name in names if name in COMMANDS]
        blocks.append(f"{title}:\n" + "\n".join(lines))
    return "\n\n".join(blocks)


def _examples(name: str) -> str | None:
    text = EXAMPLES.get(name)
    return None if text is None else "Examples:\n" + textwrap.indent(text, "  ")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mlaas4hep`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        status = _load(args._module).run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return status
    except BrokenPipeError:
        # `mlaas4hep jobs --json | head -1`: the reader has what it wanted and is gone.
        _discard_stdout()
        return 0
    except Mlaas4hepError as exc:
        if args.debug:
            raise
        print(f"mlaas4hep {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"mlaas4hep {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush at exit cannot fail on
    the closed pipe again (and print "Exception ignored ... BrokenPipeError")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout replaced by an object without a descriptor
        pass
    finally:
        os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
