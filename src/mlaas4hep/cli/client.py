"""What the CLI adds to :mod:`mlaas4hep.client`: the ``--url``/``--token`` options."""

from __future__ import annotations

import argparse

from mlaas4hep.client import Client
from mlaas4hep.client.http import DEFAULT_URL


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--token``, for every command that talks to the service."""
    parser.add_argument("--url", help=f"service URL (env MLAAS4HEP_URL; default {DEFAULT_URL})")
    parser.add_argument("--token", help="bearer token (env MLAAS4HEP_TOKEN; default: stored)")


def client_from_args(args: argparse.Namespace) -> Client:
    """A client configured from ``--url``/``--token`` and the fallbacks."""
    timeout = getattr(args, "timeout", None) or 30.0
    return Client(getattr(args, "url", None), getattr(args, "token", None), timeout=timeout)
