"""Who the web UI signs a browser in as, so that the UI and the CLI show the same jobs.

The README's path is ``mlaas4hep token --user alice --save`` and then
``mlaas4hep submit``: the jobs belong to ``alice``. The local sign-in therefore takes a
user name (checked by :func:`check_user_name`) and suggests the one the CLI's saved token
names (:func:`cli_token_user`), so a newcomer who follows the README lands on alice's jobs.
Choosing a name is only offered where the local sign-in was already allowed (loopback, the
service's own account: :func:`same_account`): that account can read the issuer's key and
mint a token for any name with ``mlaas4hep token`` anyway, so the form gives it nothing new.

The suggestion is only a default for that form, never a credential: the file is read by the
service's account, and a name is taken from it only when the token carries this service's
local issuer signature (an expired one still names its user).
"""

from __future__ import annotations

import getpass
import ipaddress
import logging
import os
import re
from pathlib import Path

import jwt
from fastapi import Request

from mlaas4hep.api.ui.peer import peer_uid
from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.errors import InvalidInput

log = logging.getLogger(__name__)

#: A user name the local sign-in accepts: what ``mlaas4hep token --user NAME`` sensibly
#: takes (no spaces, no path or markup characters, no leading punctuation).
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
MAX_USER_NAME = 64
_MAX_TOKEN_FILE = 16 * 1024


def check_user_name(raw: str) -> str:
    """The user name typed into the local sign-in form, checked.

    Raises:
        InvalidInput: empty, longer than 64 characters, or with other characters than
            letters, digits and ``. _ @ + -`` (not first).
    """
    name = raw.strip()
    if not name:
        raise InvalidInput("type a user name, e.g. the NAME of `mlaas4hep token --user NAME`")
    if len(name) > MAX_USER_NAME:
        msg = f"the user name is {len(name)} characters long; use at most {MAX_USER_NAME}"
        raise InvalidInput(msg)
    if not USER_NAME.fullmatch(name):
        msg = (
            f"the user name {name!r} is not allowed; use letters, digits and . _ @ + - "
            "(starting with a letter or digit), e.g. alice"
        )
        raise InvalidInput(msg)
    return name


def cli_token_user(local: LocalIssuer, path: Path) -> str | None:
    """The user the CLI's saved token (``mlaas4hep token --save``) names, if this service's
    local issuer signed it; None when there is no such file or it names nobody usable.

    Expiry is not checked: the name is only a suggestion for the sign-in form.
    """
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_TOKEN_FILE + 1)
    except OSError:
        return None
    if len(raw) > _MAX_TOKEN_FILE:
        return None
    try:
        key = jwt.PyJWK(local.jwks()["keys"][0]).key
        claims = jwt.decode(
            raw.decode("ascii").strip(),
            key=key,
            algorithms=["ES256"],
            audience=local.audience,
            issuer=local.issuer,
            options={"verify_exp": False, "require": ["sub"]},
        )
    except (UnicodeDecodeError, jwt.PyJWTError):
        log.debug("the CLI's token at %s is not one of this local issuer's", path)
        return None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not USER_NAME.fullmatch(subject):
        return None
    return subject


def default_user(configured: str | None, local: LocalIssuer, token_file: Path) -> str:
    """The name the local sign-in suggests: ``ui.local_user`` if set, else the user of the
    CLI's saved token, else the operating-system user running the service."""
    return configured or cli_token_user(local, token_file) or getpass.getuser()


#: Headers by which a proxy names another client. uvicorn trusts ``X-Forwarded-For`` from
#: 127.0.0.1 and takes ``host:port`` from it as the client, so any local account could name
#: the port of a connection the service's own account holds open (``/proc/net/tcp`` is
#: world-readable) and pass the socket-owner check with it.
_FORWARDING = ("x-forwarded-for", "forwarded", "x-real-ip")


def same_account(request: Request) -> bool:
    """The client is on loopback, connected directly, and its socket belongs to the
    service's own uid.

    A request naming a forwarded client is refused whatever it names: the service's own
    browser sends no such header. A client address that is not an IP address is an
    in-process ASGI transport (tests): there is no socket and no other peer.
    """
    if any(name in request.headers for name in _FORWARDING):
        return False
    client, server = request.client, request.scope.get("server")
    if client is None or not server:
        return False
    try:
        address = ipaddress.ip_address(client.host)
    except ValueError:
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not address.is_loopback:
        return False  # never a remote browser, whatever a proxy or the socket table says
    try:
        uid = peer_uid((client.host, client.port), (str(server[0]), int(server[1])))
    except ValueError:
        return True  # an in-process transport naming no server address (tests)
    return uid is not None and uid == os.geteuid()
