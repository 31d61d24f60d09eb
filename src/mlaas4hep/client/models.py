"""Fetch a model published in the service as a local bundle directory: ``NAME[:VERSION]``.

``fetch_model("alice-model:1")`` downloads that version's bundle files
(``GET /v2/models/NAME/versions/VERSION/bundle``; no version or ``latest``: the newest in
service) and extracts them member by member with the archive checks of
:func:`mlaas4hep.serve.archive.extract_tar` into ``CACHE/models/NAME/VERSION``, which
``mlaas4hep.Model.load`` (and ``mlaas4hep apply``/``predict``) read like any bundle.
CACHE is ``$MLAAS4HEP_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlaas4hep``, else
``~/.cache/mlaas4hep``. The bundle is downloaded again on every call (a few files; a
deleted and re-published name reuses version numbers, so a cached copy could be another
model): the cache is where the files live, never a reason to skip asking the service,
whose rights are checked on every fetch. The new copy replaces the old one by renames,
so a reader never sees a half-extracted directory.

The service URL and token are found like every command's (:mod:`mlaas4hep.client.http`);
``mlaas4hep.Client.fetch_model`` and ``mlaas4hep.Model.load("NAME[:VERSION]")`` call it too.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import httpx

from mlaas4hep.artifact import MODEL_FILE
from mlaas4hep.client.http import ServiceError, Transport, resolve
from mlaas4hep.client.inference import model_path
from mlaas4hep.errors import AuthError, NotFound, SpecError, UnsafeArchiveError
from mlaas4hep.serve.archive import ArchiveLimits, extract_tar
from mlaas4hep.serve.bundle_export import MODEL_VERSION_HEADER

#: ``NAME[:VERSION]``: a model name of the repository, a version number or ``latest``.
MODEL_REF = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,127}(?<!\.))(?::(?P<version>[1-9][0-9]*|latest))?"
)
BUNDLE_ARCHIVE = "bundle.tar.gz"
_LIMITS = ArchiveLimits(max_members=16)  # the allow-listed bundle files, nothing more


def parse_model_ref(text: str) -> tuple[str, str | None]:
    """``"NAME[:VERSION]"`` -> (name, version or None); SpecError for anything else."""
    match = MODEL_REF.fullmatch(text)
    if match is None:
        msg = (
            f"model {text!r} is neither a bundle directory nor a model name of the service "
            "(NAME or NAME:VERSION, e.g. 'tth-classifier:3'); give an existing bundle "
            "directory or a published model's name"
        )
        raise SpecError(msg)
    version = match["version"]
    return match["name"], None if version in (None, "latest") else version


def is_model_ref(text: str) -> bool:
    """Whether *text* reads as ``NAME[:VERSION]`` and names no local directory."""
    return MODEL_REF.fullmatch(text) is not None and not Path(text).expanduser().is_dir()


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where fetched models are kept (``.../models/NAME/VERSION``)."""
    explicit = environ.get("MLAAS4HEP_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser() / "models"
    xdg = environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mlaas4hep" / "models"


def fetch_model(
    ref: str,
    *,
    url: str | None = None,
    token: str | None = None,
    cache: Path | None = None,
    transport: httpx.BaseTransport | None = None,
) -> Path:
    """Download model ``NAME[:VERSION]``'s bundle; return its local directory.

    Raises SpecError (not a model reference), PermissionDenied (403: not the caller's
    and not shared), NotFound (no such model or version), AuthError (401),
    UnsafeArchiveError (a member the archive checks refuse), ServiceError (unreachable).
    """
    url, token = resolve(url, token)
    with Transport(url, token, transport=transport) as http:
        return fetch(http, ref, cache)


def fetch(http: Transport, ref: str, cache: Path | None = None) -> Path:
    """:func:`fetch_model` over an open client."""
    name, version = parse_model_ref(ref)
    model_dir = (cache or cache_dir()) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=model_dir))
    try:
        try:
            number = _download(http, name, version, work / BUNDLE_ARCHIVE)
        except (AuthError, NotFound) as exc:  # PermissionDenied is an AuthError
            msg = f"cannot fetch model {ref!r} from {http.url}: {exc}"
            raise type(exc)(msg) from exc
        extracted = work / "bundle"
        extracted.mkdir()
        with (work / BUNDLE_ARCHIVE).open("rb") as archive:
            names = extract_tar(archive, extracted, _LIMITS)
        if MODEL_FILE not in names:
            msg = f"the bundle of model {name!r} version {number} has no {MODEL_FILE}"
            raise UnsafeArchiveError(msg)
        return _install(extracted, model_dir / str(number), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _download(http: Transport, name: str, version: str | None, dest: Path) -> int:
    """Save a published version's bundle (``tar.gz``) to *dest*; return its version
    number (*version* None: the newest in service)."""
    with http.stream("GET", model_path(name, version) + "/bundle", timeout=None) as r:
        number = r.headers.get(MODEL_VERSION_HEADER, "")
        if not number.isdigit():
            msg = f"the service sent no model version for {name!r}; is it mlaas4hep?"
            raise ServiceError(msg)
        with dest.open("xb") as out:
            for chunk in r.iter_bytes():
                out.write(chunk)
    return int(number)


def _install(extracted: Path, target: Path, work: Path) -> Path:
    """Move *extracted* to *target*, replacing an older copy by renames (never merged)."""
    if target.exists():
        target.rename(work / "old")
    try:
        extracted.rename(target)
    except OSError:
        # Another fetch of the same version put its copy there first: same files, keep it.
        if not (target / MODEL_FILE).is_file():
            raise
    return target
