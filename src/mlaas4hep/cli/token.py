"""``mlaas4hep token``: mint an access token from the embedded local issuer.

For ``make demo`` and single-user local use: the key lives in the data directory, so only
someone who can read that directory can mint tokens. Prints the token on stdout::

    export MLAAS4HEP_TOKEN=$(mlaas4hep token --user alice --scope compute.create \\
                                            --scope compute.read --scope storage.read:/)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.auth.settings import default_data_dir
from mlaas4hep.auth.token_store import save_token

DEFAULT_SCOPES = (
    "compute.create",
    "compute.read",
    "compute.cancel",
    "compute.modify",
    "storage.read:/",
    "storage.create:/models",
    "storage.modify:/models",
    "mlaas.metrics",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="the token subject (user name)")
    parser.add_argument(
        "--scope",
        action="append",
        default=None,
        help="a capability scope; repeat for several (default: full local-user set)",
    )
    parser.add_argument("--group", action="append", default=[], help="a wlcg.groups entry")
    parser.add_argument("--lifetime", type=int, default=3600, help="seconds (default 3600)")
    parser.add_argument("--audience", default="mlaas4hep", help="aud claim (default mlaas4hep)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="service data dir (default: $MLAAS4HEP_DATA_DIR)",
    )
    parser.add_argument(
        "--save",
        nargs="?",
        const="",
        default=None,
        metavar="FILE",
        help="also store the token (0600) where the CLI reads it (default token file)",
    )


def run(args: argparse.Namespace) -> int:
    issuer = LocalIssuer(args.data_dir or default_data_dir(), audience=args.audience)
    scopes = DEFAULT_SCOPES if args.scope is None else args.scope
    token = issuer.mint(args.user, scopes, groups=args.group, lifetime_s=args.lifetime)
    if args.save is not None:
        save_token(token, Path(args.save) if args.save else None)
    print(token)
    return 0
