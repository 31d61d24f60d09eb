"""``mlaas4hep models list|show|rm|aliases|promote|rollback|policy``: published models.

``list`` is the V2 repository index (every version you may read, with its state; a version
the serving policy does not load reads "not loaded (policy: ...)"), ``show NAME[:VERSION]``
a version's metadata (inputs, outputs, feature names, labels, versions, metrics), ``rm
NAME`` deletes a model and all its versions after asking (or at once with ``--yes``;
without a terminal to ask on, ``--yes`` is required). The registry (docs/inference.md,
"Model registry"): ``aliases NAME`` lists the versions with their aliases, provenance and
metrics; ``promote NAME VERSION --alias A`` and ``rollback NAME --alias A`` change the
version an alias serves (asking first, like ``rm``); ``policy NAME POLICY`` sets which
versions are loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mlaas4hep.cli import models_registry as registry
from mlaas4hep.cli.client import add_client_arguments, client_from_args
from mlaas4hep.client import Client
from mlaas4hep.errors import SpecError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="models and versions you may read, with their state")
    ls.add_argument("--json", action="store_true", help="print the index as JSON")
    add_client_arguments(ls)
    show = sub.add_parser("show", help="a model version's inputs, outputs, features, metrics")
    show.add_argument("model", help="NAME or NAME:VERSION (default: the newest in service)")
    show.add_argument("--json", action="store_true", help="print the V2 metadata as JSON")
    add_client_arguments(show)
    rm = sub.add_parser("rm", help="delete a model and all its versions (asks first)")
    rm.add_argument("name", help="the model name")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    rm.add_argument("--json", action="store_true", help="print {'deleted': NAME} as JSON")
    add_client_arguments(rm)
    registry.add_arguments(sub)


def run(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        if args.action == "list":
            return _list(client, args.json)
        if args.action == "show":
            return _show(client, args.model, args.json)
        if args.action == "rm":
            return _rm(client, args.name, yes=args.yes, as_json=args.json)
        return registry.run(client, args)


def _list(client: Client, as_json: bool) -> int:
    index = client.models()
    if as_json:
        print(json.dumps(index, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if not index:
        console.print("no models you may read; a job with `deploy:` publishes one")
        return 0
    table = Table(box=None)
    for column in ("name", "version", "state", "reason"):
        table.add_column(column, no_wrap=column != "reason")
    for entry in index:
        state, style = registry.state_cell(entry["state"], entry.get("reason") or "")
        cells = (entry["name"], entry["version"], state, entry.get("reason") or "")
        row = [Text(str(c)) for c in cells]  # the server's text, never markup
        row[2].stylize(style)
        table.add_row(*row)
    console.print(table, highlight=False)
    return 0


def _show(client: Client, ref: str, as_json: bool) -> int:
    from mlaas4hep.client.models import parse_model_ref

    name, version = parse_model_ref(ref)
    meta = client.model(name, version)
    if as_json:
        print(json.dumps(meta, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for key, value in metadata_rows(meta):
        grid.add_row(key, Text(value))
    Console().print(grid)
    return 0


def metadata_rows(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines of a model's V2 metadata; empty values left out."""
    params = meta.get("parameters") or {}
    rows = [
        ("model", str(meta.get("name", ""))),
        ("versions", ", ".join(meta.get("versions") or [])),
        ("platform", str(meta.get("platform", ""))),
        ("inputs", "; ".join(_tensor(t) for t in meta.get("inputs") or [])),
        ("outputs", "; ".join(_tensor(t) for t in meta.get("outputs") or [])),
        ("features", _names(params.get("feature_names"))),
        ("labels", _names(params.get("labels"))),
        ("raw inputs", _names([t.get("name") for t in params.get("raw_inputs") or []])),
        ("metrics", _metrics(params.get("metrics"))),
        ("created", str(params.get("created") or "")),
        ("spec hash", str(params.get("spec_hash") or "")),
    ]
    return [(k, v) for k, v in rows if v]


def _tensor(t: dict[str, Any]) -> str:
    shape = "x".join("?" if d in (-1, None) else str(d) for d in t.get("shape") or [])
    return f"{t.get('name')} {t.get('datatype')} [{shape}]"


def _names(names: Any) -> str:
    items = [str(n) for n in names or [] if n is not None]
    return f"({len(items)}) " + ", ".join(items) if items else ""


def _metrics(metrics: Any) -> str:
    if not isinstance(metrics, dict):
        return ""
    flat = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    return "  ".join(f"{k} {v:.4g}" for k, v in sorted(flat.items()))


def _rm(client: Client, name: str, *, yes: bool, as_json: bool) -> int:
    if not yes:
        if not sys.stdin.isatty():
            msg = (
                f"not deleting model {name!r}: there is no terminal to confirm on; "
                f"pass --yes to delete it and all its versions"
            )
            raise SpecError(msg)
        versions = [e["version"] for e in client.models() if e["name"] == name]
        what = f"{len(versions)} version(s)" if versions else "all its versions"
        answer = input(f"delete model {name!r} and {what}? This cannot be undone [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)
            return 1
    client.delete_model(name)
    if as_json:
        print(json.dumps({"deleted": name}))
    else:
        print(f"deleted model {name}")
    return 0
