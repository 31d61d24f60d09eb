"""A job's storage credential: the submitter's bearer token, handed to XRootD for that job.

When a job reads remote data and its submitter's token carries ``storage.read`` scopes
(the API has already checked ``storage.read:<path>`` for every input), the token is kept
beside the job as ``<job>/credentials/bearer_token`` (mode 0600, written atomically) and
the job's process gets ``BEARER_TOKEN_FILE`` pointing at it: the XRootD client's ``ztn``
security plugin reads that variable, so token-protected storage accepts the job's reads.
No other job sees the file (the sandbox binds only the job's own directories), it is
never written to a log, and it goes when the job is deleted. A token expires on its own
schedule; a job that outlives it gets "token expired" from the storage.

An X.509 proxy is configuration, not per user: the executor passes its own
``X509_USER_PROXY`` (and ``X509_CERT_DIR``) through to every job.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mlaas4hep.jobs.layout import JobPaths

TOKEN_ENV = "BEARER_TOKEN_FILE"  # noqa: S105 - the variable name, not a secret
_DIR, _NAME = "credentials", "bearer_token"


def credentials_dir(paths: JobPaths) -> Path:
    """The directory holding the job's credential (absent when it has none)."""
    return paths.root / _DIR


def wants_token(scopes: Iterable[str], needs_network: bool) -> bool:
    """Hand the token over only to a job that reads remote data and may read storage."""
    return needs_network and any(s.split(":", 1)[0] == "storage.read" for s in scopes)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def store_token(paths: JobPaths, token: str) -> None:
    """Write the job's token file, readable by its owner only, atomically."""
    directory = credentials_dir(paths)
    directory.mkdir(mode=0o700, exist_ok=True)
    tmp = directory / f".{_NAME}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(token)
    os.replace(tmp, directory / _NAME)


def token_env(paths: JobPaths) -> dict[str, str]:
    """``{"BEARER_TOKEN_FILE": path}`` for a job that has a token, else ``{}``."""
    path = credentials_dir(paths) / _NAME
    return {TOKEN_ENV: str(path)} if path.is_file() else {}
