"""How a job's artifact is sent to a browser or a client: the file is hostile content.

A job's output directory holds whatever user code wrote, so an artifact is treated like an
attachment from a stranger (the rule GitHub and Gmail follow for user uploads):

* only safe raster images (PNG, JPEG, GIF, WebP) whose first bytes match the type their
  name claims are served ``inline`` (the job page shows its plots);
* everything else (SVG, HTML, XML, PDF, a ``.png`` that is not a PNG, ...) is a download:
  ``Content-Disposition: attachment`` with a filename reduced to safe characters, and a
  content type that no browser renders (``application/octet-stream`` unless the type is
  one of a few inert ones);
* every artifact response carries ``Content-Security-Policy: default-src 'none'; sandbox``
  (no script, no plugin, an opaque origin even if a browser renders it) and
  ``X-Content-Type-Options: nosniff`` (the browser trusts our type, never its guess).

Both the JSON API (``/api/v1/jobs/{id}/artifacts/{name}``) and the UI use
:func:`artifact_response`.
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path

from fastapi.responses import FileResponse

ARTIFACT_CSP = "default-src 'none'; sandbox"

#: Raster types shown inline, and the leading bytes each must start with.
_RASTER_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),  # and b"WEBP" at offset 8, checked below
}
#: Types a browser does not execute or render as a document; others become octet-stream.
_INERT_TYPES = frozenset(
    {
        "application/json",
        "application/gzip",
        "application/x-tar",
        "application/zip",
        "application/octet-stream",
        "text/plain",
        "text/csv",
    }
)
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 120


def artifact_headers() -> dict[str, str]:
    """The headers every artifact response carries."""
    return {
        "Content-Security-Policy": ARTIFACT_CSP,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Cache-Control": "private, no-store",
    }


def inline_type(path: Path) -> str | None:
    """The raster type *path* is served inline as, or None for a download.

    Both must agree: the type its name claims and the magic bytes at its start.
    """
    claimed = mimetypes.guess_type(path.name)[0]
    magics = _RASTER_MAGIC.get(claimed or "")
    if magics is None:
        return None
    with path.open("rb") as fh:
        head = fh.read(16)
    if not head.startswith(magics):
        return None
    if claimed == "image/webp" and head[8:12] != b"WEBP":
        return None
    return claimed


def download_type(path: Path) -> str:
    """The content type of a download: the claimed type if inert, else octet-stream."""
    claimed = mimetypes.guess_type(path.name)[0]
    if claimed in _INERT_TYPES:
        return claimed
    if path.name.endswith((".yaml", ".yml", ".log", ".txt")):
        return "text/plain"
    return "application/octet-stream"


def safe_filename(name: str) -> str:
    """The last part of *name* with only ``[A-Za-z0-9._-]`` (never empty, never hidden)."""
    base = _UNSAFE_NAME_CHARS.sub("_", Path(name).name).lstrip(".")[-_MAX_NAME:]
    return base or "artifact"


def artifact_response(path: Path, name: str) -> FileResponse:
    """Send artifact *path* (called *name* by the client) under the rules above."""
    headers = artifact_headers()
    inline = inline_type(path)
    return FileResponse(
        path,
        media_type=inline or download_type(path),
        filename=safe_filename(name),
        content_disposition_type="inline" if inline else "attachment",
        headers=headers,
    )
