"""Putting models into the repository: uploads (files or a tarball) and deletion.

An upload is unpacked into a temporary directory; its artifact files are copied into the
repository's staging area without following links (``serve/intake.py``), refused if the
model references external files, checked by loading the copy with ONNX Runtime (a broken
model is refused with 400 before it reaches the repository), published as the next
version (atomic rename) and loaded, so it serves when the call returns. The first publish
under a name records the caller as its owner (``serve/ownership.py``); later versions,
deletion and load/unload need modify rights on that record. Jobs with ``deploy:`` publish
the same way through ``ModelRepository.publish``; the repository poll then picks the new
version up.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path, PurePath
from typing import IO

from mlaas4hep.artifact import METADATA_FILE, MODEL_FILE
from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import PermissionDenied, SpecError
from mlaas4hep.serve.archive import ArchiveLimits, extract_tar
from mlaas4hep.serve.dataplane import DataPlane
from mlaas4hep.serve.ownership import OwnerRecord, denied_message, parse_sharing
from mlaas4hep.serve.registry import VersionRecord
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
        self, principal: Principal, name: str | None, fileobj: IO[bytes], share: str | None = None
    ) -> tuple[str, int]:
        """Publish a tar(.gz) of a model directory; return (name, version).

        The archive holds ``model.onnx`` (and optionally ``metadata.json``) at its root or
        in one top-level directory, whose name is the model name when *name* is None.
        *share* (``"/group:read,/other:modify"``) sets the model's group sharing.
        """
        with tempfile.TemporaryDirectory(prefix="mlaas4hep-upload-") as tmp:
            root = Path(tmp)
            await asyncio.to_thread(extract_tar, fileobj, root, self._limits)
            model_dir, default_name = _find_model_dir(root)
            rel = model_dir.relative_to(root)
            source = VersionRecord("upload", principal.key, principal.name)
            return await self._publish(principal, name or default_name, (root, rel), share, source)

    async def upload_files(
        self,
        principal: Principal,
        name: str,
        model: IO[bytes],
        metadata: IO[bytes] | None,
        share: str | None = None,
    ) -> tuple[str, int]:
        """Publish an ONNX file (and optional metadata.json); return (name, version)."""
        with tempfile.TemporaryDirectory(prefix="mlaas4hep-upload-") as tmp:
            root = Path(tmp)
            await asyncio.to_thread(_save, model, root / MODEL_FILE)
            if metadata is not None:
                await asyncio.to_thread(_save, metadata, root / METADATA_FILE)
            source = VersionRecord("upload", principal.key, principal.name)
            return await self._publish(principal, name, (root, PurePath()), share, source)

    async def publish_directory(
        self, principal: Principal, name: str, source: Path, source_job: str | None = None
    ) -> tuple[str, int]:
        """Publish a model directory (a job's result bundle) as the next version of *name*,
        checked and loaded exactly like an upload; return (name, version).

        *source* is absolute and is walked from ``/`` without following any link (the
        UI passes the resolved result directory of the caller's job, *source_job* its id,
        recorded with the version).
        """
        if not source.is_absolute():
            msg = f"publish_directory needs an absolute directory, got {str(source)!r}"
            raise SpecError(msg)
        record = VersionRecord("deploy", principal.key, principal.name, source_job)
        where = (Path("/"), source.relative_to("/"))
        return await self._publish(principal, name, where, None, record)

    async def delete(self, principal: Principal, name: str) -> None:
        """Remove a model (all versions) from the repository and from service."""
        self._plane.check(principal, "modify", check_model_name(name))
        await asyncio.to_thread(self._repo.delete, name)
        await self._plane.manager.sync(name)

    async def _publish(
        self,
        principal: Principal,
        name: str | None,
        where: tuple[Path, PurePath],
        share: str | None,
        source: VersionRecord,
    ) -> tuple[str, int]:
        if not name:
            msg = "the upload names no model; pass name=... (form field or query parameter)"
            raise SpecError(msg)
        check_model_name(name)
        groups = parse_sharing(share) if share is not None else None
        owners = self._plane.owners
        record = await asyncio.to_thread(owners.record, name)
        # Scopes and ownership before any byte is copied: bob learns nothing by trying.
        self._plane.check(principal, "create" if record is None else "modify", name)
        if groups is not None and record is not None and not _may_share(principal, record):
            msg = f"only the owner of model {name!r} (or an admin) changes its sharing"
            raise PermissionDenied(msg)
        staged = await asyncio.to_thread(self._stage, *where)
        try:
            if record is None:  # first publish: the name is claimed now (first one wins)
                record = await asyncio.to_thread(
                    owners.claim, name, principal.key, principal.name, groups or ()
                )
                if not record.allows(principal, "modify"):
                    raise PermissionDenied(denied_message(name, "modify", record))
            elif groups is not None:
                record = await asyncio.to_thread(owners.share, name, groups)
            expect = None if record.legacy else record.owner
            commit = self._repo.commit
            version = await asyncio.to_thread(commit, name, staged, None, expect, source)
        finally:
            await asyncio.to_thread(shutil.rmtree, staged, True)
        await self._plane.manager.load(name)
        return name, version

    def _stage(self, base: Path, rel: PurePath) -> Path:
        """Copy the hostile directory in (serve/intake.py) and load the copy once."""
        staged = self._repo.stage(base, rel)
        try:
            OnnxModel(staged, self._threads)  # refuse broken models now
        except SpecError as exc:
            shutil.rmtree(staged, ignore_errors=True)
            # The staging directory is the server's business, not the caller's.
            msg = str(exc).replace(str(staged), "<upload>")
            raise SpecError(f"the uploaded model cannot be served: {msg}") from exc
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return staged


def _may_share(principal: Principal, record: OwnerRecord) -> bool:
    return principal.is_admin or (not record.legacy and principal.key == record.owner)


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
