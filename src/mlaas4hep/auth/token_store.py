"""Where the CLI keeps the user's access token (a file only its owner can read)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from mlaas4hep.errors import AuthError


def default_token_file() -> Path:
    """``$MLAAS4HEP_TOKEN_FILE``, else ``$XDG_CONFIG_HOME/mlaas4hep/token``."""
    if env := os.environ.get("MLAAS4HEP_TOKEN_FILE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mlaas4hep" / "token"


def save_token(token: str, path: Path | None = None) -> Path:
    """Write ``token`` atomically with mode 0600 (directory 0700); return the path.

    Raises:
        AuthError: the token is empty or contains whitespace.
    """
    token = token.strip()
    if not token or any(c.isspace() for c in token):
        raise AuthError("refusing to store an empty token or one containing whitespace")
    path = path or default_token_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_token(path: Path | None = None) -> str:
    """Read the stored token (``$MLAAS4HEP_TOKEN`` wins when set).

    Raises:
        AuthError: no token stored, or the file is readable by others.
    """
    if env := os.environ.get("MLAAS4HEP_TOKEN"):
        return env.strip()
    path = path or default_token_file()
    if not path.exists():
        msg = f"no token stored at {path}; run `mlaas4hep login` or `mlaas4hep token`"
        raise AuthError(msg)
    if path.stat().st_mode & 0o077:
        msg = f"{path} is readable by others; run: chmod 600 {path}"
        raise AuthError(msg)
    return path.read_text().strip()
