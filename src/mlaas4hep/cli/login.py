"""``mlaas4hep login``: get an access token from an external issuer and store it (0600).

Device flow (RFC 8628)::

    mlaas4hep login --issuer https://cms-auth.web.cern.ch/ --client-id mlaas-cli \\
                    --scope compute.create --scope compute.read

or store a token obtained elsewhere, e.g. from oidc-agent::

    mlaas4hep login --token "$(oidc-token cms)"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx

from mlaas4hep.auth.device_flow import DeviceFlow
from mlaas4hep.auth.token_store import save_token
from mlaas4hep.errors import AuthError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--issuer", help="OIDC issuer URL (exactly as in its discovery document)")
    parser.add_argument("--client-id", default="mlaas4hep-cli", help="registered public client")
    parser.add_argument("--client-secret", default=None, help="only for confidential clients")
    parser.add_argument("--scope", action="append", default=[], help="scope to request; repeat")
    parser.add_argument("--resource", default=None, help="resource indicator (RFC 8707)")
    parser.add_argument("--token", default=None, help="store this token instead (oidc-agent)")
    parser.add_argument("--token-file", type=Path, default=None, help="where to store it")
    parser.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout in seconds")


def run(args: argparse.Namespace) -> int:
    if args.token is not None:
        token = args.token
    elif args.issuer:
        token = _device_login(args)
    else:
        raise AuthError("give --issuer URL for the device flow, or --token TOKEN to store one")
    path = save_token(token, args.token_file)
    print(f"token stored in {path}", file=sys.stderr)
    return 0


def _device_login(args: argparse.Namespace) -> str:
    with httpx.Client(timeout=args.timeout, follow_redirects=False) as client:
        flow = DeviceFlow(
            client=client,
            issuer=args.issuer,
            client_id=args.client_id,
            scopes=args.scope,
            resource=args.resource,
            client_secret=args.client_secret,
        )
        code = flow.start()
        where = code.verification_uri_complete or code.verification_uri
        print(f"Open {where} and enter the code {code.user_code}", file=sys.stderr)
        return flow.poll(code)
