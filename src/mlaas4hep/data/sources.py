"""Where input files come from, and how one is opened.

Two steps, kept apart so each can be tested alone:

* ``resolve_files`` turns what a user wrote (local paths, globs, ``@list.txt`` file lists,
  ``root://`` and ``http(s)://`` URLs, CMS ``/store/...`` names) into a list of concrete
  paths or URLs. It touches only the local file system.
* ``open_tree`` opens one of them with uproot and picks the TTree/RNTuple, translating
  every failure (missing, a directory, not ROOT, truncated, no such tree, host unreachable)
  into a typed ``DataSourceError`` at this boundary.

``file_identity`` says what makes a file "the same file" for caches (path/URL, size, mtime).
"""

from __future__ import annotations

import glob
import os
import secrets
import socket
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uproot

from mlaas4hep.data.inputs import classify, list_entries
from mlaas4hep.data.remote import (
    Retrier,
    configure_client,
    forget_handles,
    is_transient,
    open_options,
    through_proxy,
)
from mlaas4hep.errors import (
    DataSourceError,
    MissingFileError,
    NotRootFileError,
    TreeNotFoundError,
    closest,
)
from mlaas4hep.spec import RemoteSpec

TREE_CLASSES = ("TTree", "ROOT::RNTuple")
_DEFAULT_PORTS = {"root": 1094, "xroot": 1094, "http": 80, "https": 443}
# Seconds to wait for a remote host when no RemoteSpec says otherwise (file_identity).
# The XRootD client alone retries for ~15 s (or minutes for a silent host) before giving up;
# a user who typed a wrong host wants to know sooner. Opens use data.remote.open_timeout.
CONNECT_TIMEOUT = 5.0
# XRootD answers for a missing or refused credential (auth) and a missing scope (authz).
_DENIED = ("auth failed", "permission denied", "not authorized", "unauthorized")


def is_remote(path: str) -> bool:
    """True for ``root://``, ``xroot://`` and ``http(s)://`` URLs (any case)."""
    return classify(path, allow_lists=False).kind == "remote"


def resolve_files(
    patterns: Sequence[str],
    *,
    redirector: str | None = None,
    xrootd_proxy: str | None = None,
    proxy_mode: str = "forward",
) -> list[str]:
    """Expand user file patterns into concrete paths/URLs, in order, without duplicates.

    Accepts local paths, globs (``*``, ``?``, ``[...]``, ``**``; expanded and sorted),
    ``@files.txt`` (one entry per line, ``#`` comments), ``root://``/``xroot://`` and
    ``http(s)://`` URLs (passed through; not checked here) and ``/store/...`` logical file
    names, which get the ``redirector`` prefix unless they exist locally. With ``xrootd_proxy``
    (``root://proxy:port``) every ``root://`` URL goes through that proxy (``proxy_mode``
    ``forward`` or ``direct``, see ``remote.through_proxy``).

    Raises ``MissingFileError`` when a path or glob matches no file, names a directory, or
    when nothing at all is left.
    """
    found: list[str] = []
    for pattern in patterns:
        found.extend(_expand(pattern.strip(), redirector, allow_lists=True))
    if not found:
        msg = f"no input files in {list(patterns)!r}; give paths, globs, @list.txt or URLs"
        raise MissingFileError(msg)
    if xrootd_proxy:
        found = [through_proxy(f, xrootd_proxy, proxy_mode) for f in found]
    return list(dict.fromkeys(found))


def _expand(pattern: str, redirector: str | None, *, allow_lists: bool) -> list[str]:
    loc = classify(pattern, allow_lists=allow_lists)  # the one reading of an entry
    if loc.kind == "list":
        return _read_list(loc.text, redirector)
    if loc.kind == "remote":
        return [loc.text]
    if loc.kind == "dataset":
        msg = f"{pattern!r} names an uploaded dataset; submit the spec to the service to use it"
        raise DataSourceError(msg)
    pattern = loc.text
    if loc.kind == "glob":
        return _glob(pattern)
    path = Path(pattern).expanduser()
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        msg = f"{pattern!r} is a directory, not a ROOT file; use a glob like '{pattern}/*.root'"
        raise MissingFileError(msg)
    if pattern.startswith("/store/") and redirector:
        return [redirector.rstrip("/") + "/" + pattern]
    hint = " (or set data.redirector for /store/ names)" if pattern.startswith("/store/") else ""
    msg = f"input file {pattern!r} does not exist; check the path{hint}"
    raise MissingFileError(msg)


def _glob(pattern: str) -> list[str]:
    matches = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True))
    files = [p for p in matches if os.path.isfile(p)]
    if not files:
        what = "only directories" if matches else "no file"
        msg = f"glob {pattern!r} matches {what}; check the pattern and the directory"
        raise MissingFileError(msg)
    return files


def _read_list(list_path: str, redirector: str | None) -> list[str]:
    path = Path(list_path).expanduser()
    try:
        entries = list_entries(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"file list {list_path!r} cannot be read; give '@' followed by a text file"
        raise MissingFileError(msg) from exc
    files: list[str] = []
    for number, entry in enumerate(entries, 1):
        if not os.path.isabs(entry) and "://" not in entry and not entry.startswith("/store/"):
            entry = str(path.parent / entry)  # relative entries are relative to the list
        try:
            files.extend(_expand(entry, redirector, allow_lists=False))
        except DataSourceError as exc:
            # Never the line itself: '@/etc/passwd' must not print the file's first line.
            msg = (
                f"entry {number} of file list {list_path!r} names no readable input; "
                "check that line (one path, glob or URL per line)"
            )
            raise type(exc)(msg) from None  # the cause would quote the line
    return files


@contextmanager
def open_tree(
    path: str, tree: str | None = None, *, remote: RemoteSpec | None = None
) -> Iterator[Any]:
    """Open ``path`` and yield its TTree or RNTuple named ``tree`` (default: the only one).

    The file is closed when the ``with`` block ends. ``remote`` sets the timeouts and
    retries of a remote open (default: ``RemoteSpec()``). Raises ``MissingFileError``,
    ``NotRootFileError`` (wrong format or truncated), ``TreeNotFoundError`` (listing the
    trees in the file) or ``DataSourceError`` (remote host unreachable, naming the URL).
    """
    with open_file(path, remote=remote) as file:
        yield _pick_tree(file, path, tree)


@contextmanager
def open_file(path: str, *, remote: RemoteSpec | None = None) -> Iterator[Any]:
    """Open a ROOT file (local or remote) and yield the uproot ``ReadOnlyDirectory``.

    A remote open that fails transiently (expired, connection reset) is retried as
    ``remote`` allows; a host that refuses the very first connection fails at once.
    """
    if is_remote(path):
        file = _open_remote(path, remote or RemoteSpec())
    else:
        _check_local(path)
        try:
            # A Path, not a str: uproot would read "a:b.root" as file "a", object "b.root".
            file = uproot.open(Path(path))
        # A damaged header or directory fails in uproot's deserializer with any exception.
        except Exception as exc:
            raise _open_error(path, exc) from exc
    try:
        _check_complete(file, path)
        yield file
    finally:
        file.close()
        if is_remote(path):
            # fsspec-xrootd keeps open handles for reuse; closing ours now frees the server
            # slot and never leaves a handle to a server that may be gone by exit time.
            forget_handles(path, remote or RemoteSpec())


def _open_remote(path: str, spec: RemoteSpec) -> Any:
    configure_client(spec)
    check_reachable(path, timeout=spec.open_timeout)  # a wrong host fails fast, no retries
    retrier = Retrier(path, spec)
    while True:
        try:
            return uproot.open(path, **open_options(spec))
        # As for local files: a damaged header fails in uproot with any exception type.
        except Exception as exc:
            error = _open_error(path, exc)
            if not is_transient(exc):
                raise error from exc
            retrier.failed(error, "opening")


def _check_local(path: str) -> None:
    p = Path(path)
    if p.is_dir():
        msg = f"{path!r} is a directory, not a ROOT file; give a file or a glob"
        raise MissingFileError(msg)
    try:
        with p.open("rb") as fh:
            magic = fh.read(4)
    except FileNotFoundError as exc:
        msg = f"input file {path!r} does not exist; check the path"
        raise MissingFileError(msg) from exc
    if magic != b"root":
        msg = f"{path!r} is not a ROOT file (it does not start with 'root'); check the input"
        raise NotRootFileError(msg)


def _check_complete(file: Any, path: str) -> None:
    """A ROOT header records where the file ends; a shorter file was cut off."""
    expected, actual = file.file.fEND, file.file.source.num_bytes
    if actual is not None and actual < expected:
        msg = (
            f"{path!r} is truncated: {actual} bytes of the {expected} its header promises; "
            "copy or regenerate the file"
        )
        raise NotRootFileError(msg)


def _open_error(path: str, exc: Exception) -> DataSourceError:
    text = " ".join(str(exc).split()) or type(exc).__name__
    short = text if len(text) <= 200 else text[:200] + "..."
    if isinstance(exc, FileNotFoundError) or "no such file" in text.lower():
        return MissingFileError(f"{path!r} does not exist ({short}); check the path or URL")
    if "not a ROOT file" in text or "expected Chunk of length" in text:
        msg = f"{path!r} is not a ROOT file or is truncated ({short}); check the input"
        return NotRootFileError(msg)
    if is_remote(path) and any(m in text.lower() for m in _DENIED):
        msg = (
            f"cannot open {path!r}: {short}; the server wants credentials this process lacks: "
            "a bearer token with storage.read for the path (BEARER_TOKEN_FILE; jobs get "
            "their submitter's) or an X.509 proxy (X509_USER_PROXY)"
        )
        return DataSourceError(msg)
    if is_remote(path):
        return DataSourceError(f"cannot open {path!r}: {short}; check the URL and your access")
    return NotRootFileError(f"{path!r} is not a readable ROOT file ({short}); check the input")


def check_reachable(url: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail fast with ``DataSourceError`` when the host of ``url`` accepts no connection."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        msg = f"bad port in {url!r}; expected e.g. root://host:1094//path/file.root"
        raise DataSourceError(msg) from exc
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        msg = (
            f"cannot reach {parts.scheme}://{host}:{port} for {url!r} ({exc.strerror or exc}); "
            "check the host name, the port and your network"
        )
        raise DataSourceError(msg) from exc


def _pick_tree(file: Any, path: str, tree: str | None) -> Any:
    try:
        classes = file.classnames(recursive=True)
    except Exception as exc:  # a damaged directory: see open_file
        raise _open_error(path, exc) from exc
    trees = sorted({k.rsplit(";", 1)[0] for k, c in classes.items() if c in TREE_CLASSES})
    if tree is None:
        if len(trees) == 1:
            return _read_tree(file, path, trees[0])
        if not trees:
            msg = f"{path!r} holds no TTree or RNTuple (only {sorted(classes)!r})"
            raise TreeNotFoundError(msg)
        msg = f"{path!r} holds several trees {trees!r}; pick one (data.tree or FILE:TREE)"
        raise TreeNotFoundError(msg)
    if tree not in trees:
        msg = f"no tree {tree!r} in {path!r}; {closest(tree, trees)}"
        raise TreeNotFoundError(msg)
    return _read_tree(file, path, tree)


def _read_tree(file: Any, path: str, name: str) -> Any:
    try:
        return file[name]
    # A damaged file makes uproot's deserializer fail in many ways (DeserializationError,
    # KeyInFileError, RecursionError, UnicodeError...); all of them mean "corrupt file".
    except Exception as exc:
        raise corrupt_file_error(path, exc, f"reading tree {name!r}") from exc


def corrupt_file_error(path: str, exc: BaseException, what: str) -> NotRootFileError:
    """A one-line ``NotRootFileError`` for a failure of uproot inside a damaged file."""
    text = " ".join(str(exc).split()) or "no detail"
    short = text if len(text) <= 200 else text[:200] + "..."
    msg = (
        f"{path!r} is damaged: {what} failed ({type(exc).__name__}: {short}); "
        "copy or regenerate the file"
    )
    return NotRootFileError(msg)


def file_identity(path: str) -> dict[str, Any]:
    """What identifies the content of ``path`` for caches: location, size and mtime.

    Local files use the absolute path, size and nanosecond mtime; ``root://`` URLs the
    XRootD stat (size, modification time); ``http(s)://`` the Content-Length, Last-Modified
    and ETag headers (when a server sends neither validator, the identity is unique per call,
    so nothing is ever reused). A cache keyed on this misses when the file is rewritten.
    """
    if not is_remote(path):
        st = os.stat(path)
        return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if urllib.parse.urlsplit(path).scheme in ("root", "xroot"):
        return _xrootd_identity(path)
    return _http_identity(path)


def _xrootd_identity(url: str) -> dict[str, Any]:
    import importlib

    try:  # lazily: the XRootD bindings are an optional dependency
        client: Any = importlib.import_module("XRootD.client")
    except ImportError as exc:
        msg = f"reading {url!r} needs the XRootD client: pip install 'mlaas4hep[xrootd]'"
        raise DataSourceError(msg) from exc
    parts = urllib.parse.urlsplit(url)
    server, remote_path = f"{parts.scheme}://{parts.netloc}", parts.path
    check_reachable(url)
    status, info = client.FileSystem(server).stat(remote_path, timeout=int(CONNECT_TIMEOUT))
    if not status.ok or info is None:
        msg = f"cannot stat {url!r}: {status.message.strip()}; check the URL"
        raise DataSourceError(msg)
    return {"url": url, "size": int(info.size), "mtime": int(info.modtime)}


def _http_identity(url: str) -> dict[str, Any]:
    import urllib.request

    check_reachable(url)
    request = urllib.request.Request(url, method="HEAD")  # noqa: S310 - scheme checked above
    try:
        with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT) as resp:  # noqa: S310
            headers = resp.headers
    except OSError as exc:
        msg = f"cannot stat {url!r}: {exc}; check the URL"
        raise DataSourceError(msg) from exc
    keys = ("Content-Length", "Last-Modified", "ETag")
    identity: dict[str, Any] = {"url": url, **{k.lower(): headers.get(k) for k in keys}}
    if not (identity["last-modified"] or identity["etag"]):
        # Without a validator a rewrite cannot be detected: make the identity unique so
        # that no cache ever reuses a result for this URL.
        identity["unvalidated"] = secrets.token_hex(8)
    return identity
