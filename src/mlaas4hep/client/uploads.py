"""Local input files to the service: content-addressed, deduplicated, resumable uploads.

The protocol (``/api/v1/datasets``, see ``api/routes_datasets.py``), one file at a time:

1. hash the file (SHA-256, streamed);
2. ``GET /datasets?sha256=H``: the caller already has this content → use that dataset,
   send nothing;
3. ``GET /datasets/uploads/H``: bytes the service already holds of an interrupted upload
   (404: none) → the offset;
4. ``PUT /datasets/uploads/H?name=&size=&offset=`` with the rest of the file; a dropped
   connection is retried from the offset the service reports. The service hashes the
   whole file at the end and refuses (and discards) content that does not match H.

Names: a file is uploaded under its file name; when the caller already has a different
file of that name, under ``STEM-HHHHHHHH.SUFFIX`` (the first 8 hex digits of its hash).

Which local files a spec names, and the spec with ``dataset:NAME`` in their place, is
:mod:`mlaas4hep.cli.datasets` (``mlaas4hep submit``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from mlaas4hep.client.http import ServiceError
from mlaas4hep.errors import Conflict, MissingFileError, NotFound

if TYPE_CHECKING:
    from mlaas4hep.client.http import Transport

CHUNK = 1 << 20
RETRIES = 3
#: ``progress(phase, done, total)``: phase is ``"hash NAME"`` or ``"upload NAME"``.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Uploaded:
    """The outcome of one file: the service's dataset, and what it cost.

    ``sent``: bytes sent this time; ``resumed_from``: the offset the service already held;
    ``reused``: the caller already had this content (nothing sent).
    """

    path: Path
    dataset: dict[str, Any]
    sent: int
    resumed_from: int
    reused: bool

    @property
    def uri(self) -> str:
        return f"dataset:{self.dataset['name']}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "dataset": self.dataset,
            "sent": self.sent,
            "resumed_from": self.resumed_from,
            "reused": self.reused,
        }


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    """The SHA-256 of *path*, read in 1 MiB blocks."""
    sha, done, total = hashlib.sha256(), 0, path.stat().st_size
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            sha.update(block)
            done += len(block)
            if progress is not None:
                progress(f"hash {path.name}", done, total)
    return sha.hexdigest()


def upload(
    http: Transport,
    path: Path,
    name: str | None = None,
    progress: Progress | None = None,
) -> Uploaded:
    """Upload the ROOT file *path* (see the module docstring); return what happened.

    *name*: the dataset name (default: the file name, disambiguated by hash prefix).

    Raises:
        MissingFileError: *path* is not a readable file.
        PayloadTooLarge / SpecError / Conflict: the service's refusal, with its message.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"{str(path)!r} is not a file; give the path of a ROOT file"
        raise MissingFileError(msg)
    size = path.stat().st_size
    digest = sha256_file(path, progress)
    found = http.request("GET", "/datasets", params={"sha256": digest}).json()["items"]
    if found:
        return Uploaded(path, dict(found[0]), 0, 0, True)
    chosen = name or free_name(path.name, digest, _names(http))
    for attempt in range(RETRIES + 1):
        offset = _received(http, digest)
        try:
            answer = _put(http, path, chosen, digest, size, offset, progress)
        except (ServiceError, Conflict) as exc:
            # a dropped connection, or the service still writing the previous attempt
            if attempt == RETRIES or (isinstance(exc, Conflict) and "running" not in str(exc)):
                raise
            time.sleep(1 + attempt)
            continue
        if answer.get("dataset") is None:  # the body ended early; carry on from there
            continue
        return Uploaded(path, dict(answer["dataset"]), size - offset, offset, False)
    msg = f"the upload of {str(path)!r} stopped {RETRIES + 1} times; run the command again"
    raise ServiceError(msg)


def free_name(filename: str, digest: str, taken: Mapping[str, str]) -> str:
    """*filename*, or ``STEM-HHHHHHHH.SUFFIX`` if the caller has another file of that name.

    *taken*: the caller's dataset names and their sha256. Characters a dataset name cannot
    hold become ``_``.
    """
    clean = "".join(c if c.isalnum() or c in "_.+-" else "_" for c in filename).lstrip(".-")
    clean = (clean or "file.root")[:100]
    if taken.get(clean, digest) == digest:
        return clean
    stem, dot, suffix = clean.rpartition(".")
    return f"{stem}-{digest[:8]}{dot}{suffix}" if dot and stem else f"{clean}-{digest[:8]}"


def _names(http: Transport) -> dict[str, str]:
    items = http.request("GET", "/datasets").json()["items"]
    return {str(d["name"]): str(d["sha256"]) for d in items}


def _received(http: Transport, digest: str) -> int:
    try:
        return int(http.request("GET", f"/datasets/uploads/{digest}").json()["received"])
    except NotFound:
        return 0


def _put(
    http: Transport,
    path: Path,
    name: str,
    digest: str,
    size: int,
    offset: int,
    progress: Progress | None,
) -> dict[str, Any]:
    params = {"name": name, "size": size, "offset": offset}
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size - offset)}
    r = http.request(
        "PUT",
        f"/datasets/uploads/{digest}",
        params=params,
        content=_read_from(path, offset, size, progress),
        headers=headers,
        timeout=httpx.Timeout(60.0, read=None),  # the service hashes and inspects at the end
    )
    return dict(r.json())


def _read_from(path: Path, offset: int, size: int, progress: Progress | None) -> Iterator[bytes]:
    done = offset
    with path.open("rb") as f:
        f.seek(offset)
        while done < size and (block := f.read(min(CHUNK, size - done))):
            done += len(block)
            if progress is not None:
                progress(f"upload {path.name}", done, size)
            yield block
