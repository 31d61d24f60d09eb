"""``mlaas4hep models aliases|promote|rollback|policy``: the model registry from the CLI.

``promote`` and ``rollback`` say which version the alias serves now and which it will
serve, and ask before switching (``--yes`` to skip; required without a terminal). The
service loads the version first, so it answers ``NAME@ALIAS`` as soon as the command
returns.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mlaas4hep.cli.client import add_client_arguments
from mlaas4hep.client import Client
from mlaas4hep.errors import SpecError

#: How ``models list`` shows a state: a version the policy leaves out is not an error.
_NOT_LOADED = "not loaded (policy"


def add_arguments(sub: Any) -> None:
    """Add the registry actions to the ``models`` sub-parsers *sub*."""
    aliases = sub.add_parser("aliases", help="a model's versions with aliases, source, metrics")
    aliases.add_argument("name", help="the model name")
    aliases.add_argument("--json", action="store_true", help="print the registry view as JSON")
    add_client_arguments(aliases)
    promote = sub.add_parser("promote", help="point an alias (production, staging) at a version")
    promote.add_argument("name", help="the model name")
    promote.add_argument("version", type=int, help="the version the alias will serve")
    promote.add_argument("--alias", required=True, help="e.g. production or staging")
    _confirm_arguments(promote)
    rollback = sub.add_parser("rollback", help="move an alias back to its previous version")
    rollback.add_argument("name", help="the model name")
    rollback.add_argument("--alias", required=True, help="e.g. production")
    _confirm_arguments(rollback)
    policy = sub.add_parser("policy", help="which versions are loaded (latest, latest:N, ...)")
    policy.add_argument("name", help="the model name")
    policy.add_argument("policy", help="latest | latest:N | all | aliased | versions:1,3")
    policy.add_argument("--json", action="store_true", help="print the answer as JSON")
    add_client_arguments(policy)


def _confirm_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--json", action="store_true", help="print the change as JSON")
    add_client_arguments(parser)


def run(client: Client, args: argparse.Namespace) -> int:
    if args.action == "aliases":
        return _aliases(client, args.name, args.json)
    if args.action == "policy":
        answer = client.set_serving_policy(args.name, args.policy)
        if args.json:
            print(json.dumps(answer))
        else:
            loaded = ", ".join(str(v) for v in answer["loaded"]) or "none"
            print(f"model {args.name}: policy {answer['policy']}; loaded versions: {loaded}")
        return 0
    view = client.model_registry(args.name)
    current = view["aliases"].get(args.alias)
    if args.action == "promote":
        target = args.version
    else:
        history = view["history"].get(args.alias) or []
        target = history[-1] if history else None
    if target is not None and not _confirmed(args, current, target):
        print("nothing changed", file=sys.stderr)
        return 1
    if args.action == "promote":
        change = client.promote(args.name, args.version, args.alias)
    else:
        change = client.rollback(args.name, args.alias)  # the service says why it cannot
    if args.json:
        print(json.dumps(change))
    else:
        print(f"{args.name}@{args.alias}: {_v(change['previous'])} -> version {change['version']}")
    return 0


def _confirmed(args: argparse.Namespace, current: int | None, target: int) -> bool:
    if args.yes or current == target:
        return True
    question = (
        f"{args.name}@{args.alias} serves {_v(current)}; switch it to version {target}? [y/N] "
    )
    if not sys.stdin.isatty():
        msg = (
            f"not changing {args.name}@{args.alias} ({_v(current)} -> version {target}): "
            "there is no terminal to confirm on; pass --yes"
        )
        raise SpecError(msg)
    return input(question).strip().lower() in ("y", "yes")


def _v(version: int | None) -> str:
    return "nothing" if version is None else f"version {version}"


def state_cell(state: str, reason: str) -> tuple[str, str]:
    """(text, rich style) of a repository index state: READY green, a version the policy
    does not load neutral ("not loaded"), anything else (failed, unloaded) red."""
    if state == "READY":
        return state, "green"
    if reason.startswith(_NOT_LOADED):
        return "not loaded", "dim"
    return state, "red"


def _aliases(client: Client, name: str, as_json: bool) -> int:
    view = client.model_registry(name)
    if as_json:
        print(json.dumps(view, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    owner = view["owner"] or "admin group"
    set_by = "" if view["policy_set"] else " (service default)"
    console.print(Text(f"{name}: owner {owner}; serving policy {view['policy']}{set_by}"))
    table = Table(box=None)
    for column in ("version", "aliases", "status", "source", "created", "metrics"):
        table.add_column(column, no_wrap=column != "metrics")
    for row in view["versions"]:
        status = "serving" if row["status"] == "serving" else row["reason"]
        style = "green" if row["status"] == "serving" else state_cell("", row["reason"])[1]
        cells = [
            Text(str(row["version"])),
            Text(", ".join(row["aliases"])),
            Text(status, style=style),
            Text(_source(row)),
            Text(str(row["created"] or "")),
            Text(_metrics(row["metrics"])),
        ]
        table.add_row(*cells)
    console.print(table, highlight=False)
    return 0


def _source(row: dict[str, Any]) -> str:
    who = f" by {row['published_by']}" if row["published_by"] else ""
    job = f" {row['source_job']}" if row["source_job"] else ""
    return f"{row['source']}{job}{who}"


def _metrics(metrics: dict[str, Any]) -> str:
    flat = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    return "  ".join(f"{k} {v:.4g}" for k, v in sorted(flat.items())[:4])
