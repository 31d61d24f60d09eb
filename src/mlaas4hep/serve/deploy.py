"""Putting models into the repository: uploads (files or a tarball) and deletion.

An upload is unpacked into a temporary directory, checked by loading it with ONNX Runtime
(a broken model is refused with 400 before it reaches the repository), published as the
next version (atomic rename) and loaded, so it serves when the call returns. Jobs with
``deploy:`` publish the same way through ``ModelRepository.publish``; the repository poll
then picks the new version up.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import IO

from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import SpecError
from mlaas4hep.serve.archive import ArchiveLimits, extract_tar
from mlaas4hep.serve.dataplane import DataPlane
from mlaas4hep.serve.metadata import METADATA_FILE, MODEL_FILE
from mlaas4hep.serve.repository import ModelRepository, check_model_name
from mlaas4hep.serve.runtime import OnnxModel


class Deployer:
    """Upload and delete models, with permission checks and validation."""

    def __init__(self, plane: DataPlane, limits: ArchiveLimits, threads: int = 1) -> None:
        self._plane = plane
        self._limits = limits
        self._threads = threads

    @property
    def _repo(self) -> ModelRepository:
        return self._plane.manager.repository

    async def upload_tarball(
        self, principal: Principal, name: str | None, fileobj: IO[bytes]
    ) -> tuple[str, int]:
        """Publish a tar(.gz) of a model directory; return (name, version).

        The archive holds ``model.onnx`` (and optionally ``metadata.json``) at its root or
        in one top-level directory, whose name is the model name when *name* is None.
        """
        with tempfile.TemporaryDirectory(prefix="mlaas4hep-upload-") as tmp:
            root = Path(tmp)
            await asyncio.to_thread(extract_tar, fileobj, root, self._limits)
            model_dir, default_name = _find_model_dir(root)
            return await self._publish(principal, name or default_name, model_dir)

    async def upload_files(
        self, principal: Principal, name: str, model: IO[bytes], metadata: IO[bytes] | None
    ) -> tuple[str, int]:
        """Publish an ONNX file (and optional metadata.json); return (name, version)."""
        with tempfile.TemporaryDirectory(prefix="mlaas4hep-upload-") as tmp:
            root = Path(tmp)
            await asyncio.to_thread(_save, model, root / MODEL_FILE)
            if metadata is not None:
                await asyncio.to_thread(_save, metadata, root / METADATA_FILE)
            return await self._publish(principal, name, root)

    async def publish_directory(
        self, principal: Principal, name: str, source: Path
    ) -> tuple[str, int]:
        """Publish a model directory (a job's result bundle) as the next version of *name*,
        checked and loaded exactly like an upload; return (name, version)."""
        return await self._publish(principal, name, source)

    async def delete(self, principal: Principal, name: str) -> None:
        """Remove a model (all versions) from the repository and from service."""
        self._plane.check(principal, "modify", check_model_name(name))
        await asyncio.to_thread(self._repo.delete, name)
        await self._plane.manager.sync(name)

    async def _publish(
        self, principal: Principal, name: str | None, source: Path
    ) -> tuple[str, int]:
        if not name:
            msg = "the upload names no model; pass name=... (form field or query parameter)"
            raise SpecError(msg)
        check_model_name(name)
        exists = bool(await asyncio.to_thread(self._repo.versions, name))
        self._plane.check(principal, "modify" if exists else "create", name)
        try:
            await asyncio.to_thread(OnnxModel, source, self._threads)  # refuse broken models now
        except SpecError as exc:
            # The upload's temporary directory is the server's business, not the caller's.
            msg = str(exc).replace(str(source), "<upload>")
            raise SpecError(f"the uploaded model cannot be served: {msg}") from exc
        version = await asyncio.to_thread(self._repo.publish, name, source)
        await self._plane.manager.load(name)
        return name, version


def _find_model_dir(root: Path) -> tuple[Path, str | None]:
    if (root / MODEL_FILE).is_file():
        return root, None
    children = [p for p in root.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / MODEL_FILE).is_file():
        return children[0], children[0].name
    msg = f"the archive has no {MODEL_FILE} at its root or in a single top-level directory"
    raise SpecError(msg)


def _save(source: IO[bytes], target: Path) -> None:
    with target.open("wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
