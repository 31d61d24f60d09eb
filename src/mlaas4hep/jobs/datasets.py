"""Uploaded datasets: ROOT files streamed to disk under a size limit, private to their owner.

A job refers to one as ``dataset:NAME`` in its spec's ``files``; submission replaces that
with the file's path, and the sandbox lets the job read only its owner's datasets.

Two ways in. ``upload`` takes one request body (``POST /datasets?name=``); ``resume`` takes
a content-addressed, resumable upload (:mod:`mlaas4hep.jobs.uploads`), which this store
adopts once its last byte has arrived and its hash is verified.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError

from mlaas4hep.config import Settings
from mlaas4hep.errors import Conflict, NotFound, PayloadTooLarge, SpecError
from mlaas4hep.jobs.dataset_inspect import DatasetInspector
from mlaas4hep.jobs.layout import owner_dir, remove_tree, safe_name
from mlaas4hep.jobs.limits import fmt_bytes
from mlaas4hep.jobs.models import DatasetRow
from mlaas4hep.jobs.store import JobStore
from mlaas4hep.jobs.uploads import ROOT_MAGIC, ResumableUploads, UploadState

__all__ = ["Dataset", "DatasetStore", "UploadState"]

DATASETS = cast(Table, DatasetRow.__table__)
SCHEMA_FILE = ".schema.json"  # beside the file; dataset names never start with a dot


@dataclass(frozen=True)
class Dataset:
    """An uploaded file."""

    id: str
    owner: str
    name: str
    size: int
    sha256: str
    created_at: float
    path: Path


class DatasetStore:
    """Dataset rows in the job database, files under ``data_dir/datasets``."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self._engine = store.engine
        self._data_dir = settings.data_dir
        self.limit = settings.uploads.dataset_bytes
        self.inspector = DatasetInspector(settings)
        self.uploads = ResumableUploads(self, settings.data_dir, self.limit)

    async def upload(self, owner: str, name: str, chunks: AsyncIterator[bytes]) -> Dataset:
        """Stream *chunks* into a new dataset *name* of *owner*.

        The file is parsed (its tree and branches) by a bounded, sandboxed worker before it
        is accepted (:mod:`mlaas4hep.jobs.dataset_inspect`), never in this process.

        Raises:
            SpecError: bad name, or the content is not a readable ROOT file.
            PayloadTooLarge: more than ``uploads.dataset_bytes``.
            Conflict: the owner already has a dataset of that name.
        """
        safe_name(name, "dataset name")
        self.check_name_free(owner, name)
        ds_id = uuid.uuid4().hex
        final = owner_dir(self._data_dir, owner) / ds_id / name
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{name}.part")
        try:
            size, digest = await self._write(tmp, chunks)
            schema = await asyncio.to_thread(self.inspector.inspect, tmp, name)
            _save_schema(final.parent, schema)
            os.replace(tmp, final)
            return self._insert(ds_id, owner, name, size, digest, final)
        except BaseException:
            remove_tree(final.parent)
            raise

    async def _write(self, tmp: Path, chunks: AsyncIterator[bytes]) -> tuple[int, str]:
        sha, size, head = hashlib.sha256(), 0, b""
        with tmp.open("wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.limit:
                    msg = f"upload exceeds the dataset limit of {fmt_bytes(self.limit)}"
                    raise PayloadTooLarge(msg)
                if len(head) < 4:
                    head += chunk[: 4 - len(head)]
                sha.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if head != ROOT_MAGIC:
            msg = f"the upload is not a ROOT file (starts with {head!r}, expected b'root')"
            raise SpecError(msg)
        return size, sha.hexdigest()

    def _insert(
        self, ds_id: str, owner: str, name: str, size: int, digest: str, path: Path
    ) -> Dataset:
        values = {
            "id": ds_id,
            "owner": owner,
            "name": name,
            "size": size,
            "sha256": digest,
            "created_at": time.time(),
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(DATASETS.insert().values(**values))
        except IntegrityError as exc:  # a concurrent upload of the same name won
            raise Conflict(_taken(name)) from exc
        return Dataset(path=path, **values)  # type: ignore[arg-type]

    def by_hash(self, sha256: str, owner: str) -> Dataset | None:
        """*owner*'s dataset whose content hashes to *sha256*, if any (never another's)."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(DATASETS)
                .where(DatasetRow.owner == owner, DatasetRow.sha256 == sha256)
                .order_by(DatasetRow.created_at)
            ).first()
        return None if row is None else self._dataset(row._mapping)

    def check_name_free(self, owner: str, name: str) -> None:
        """Raise Conflict when *owner* already has a dataset called *name*."""
        with self._engine.connect() as conn:
            taken = conn.execute(
                select(DatasetRow.id).where(DatasetRow.owner == owner, DatasetRow.name == name)
            ).first()
        if taken is not None:
            raise Conflict(_taken(name))

    async def adopt(
        self, owner: str, sha256: str, name: str, size: int, part: Path, digest: str
    ) -> Dataset:
        """Store the complete, verified upload *part* as *owner*'s dataset *name*: inspected
        (sandboxed) and renamed into place; a concurrent upload of the same content that
        finished first wins (its dataset is returned)."""
        ds_id = uuid.uuid4().hex
        final = owner_dir(self._data_dir, owner) / ds_id / name
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{name}.part")
        try:
            os.replace(part, tmp)
            schema = await asyncio.to_thread(self.inspector.inspect, tmp, name)
            _save_schema(final.parent, schema)
            os.replace(tmp, final)
            again = self.by_hash(sha256, owner)
            if again is not None:
                remove_tree(final.parent)
                return again
            return self._insert(ds_id, owner, name, size, digest, final)
        except BaseException:
            remove_tree(final.parent)
            raise

    def schema(self, ds: Dataset) -> dict[str, Any]:
        """The tree schema of *ds* (``TreeSchema.to_dict()``), from the upload's record;
        a dataset uploaded before records existed is inspected (bounded) once.

        Raises:
            SpecError: the file is not readable as a ROOT file.
        """
        cached = ds.path.parent / SCHEMA_FILE
        try:
            loaded = json.loads(cached.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                return loaded
        except (OSError, ValueError):
            pass
        schema = self.inspector.inspect(ds.path, ds.name)
        _save_schema(ds.path.parent, schema)
        return schema

    def get(self, ds_id: str, owner: str | None) -> Dataset:
        """Dataset *ds_id*; NotFound if missing or not the owner's."""
        return self._one(DatasetRow.id == ds_id, owner, repr(ds_id))

    def by_name(self, name: str, owner: str) -> Dataset:
        """*owner*'s dataset called *name*; NotFound otherwise.

        Names are per owner: the lookup is by (owner, name), so another user's dataset of
        the same name is never found first (no squatting).
        """
        cond = (DatasetRow.owner == owner) & (DatasetRow.name == name)
        return self._one(cond, owner, f"named {name!r}")

    def list_datasets(self, owner: str | None) -> list[Dataset]:
        """Datasets of *owner* (everyone's for None), newest first."""
        query = select(DATASETS).order_by(DatasetRow.created_at.desc())
        if owner is not None:
            query = query.where(DatasetRow.owner == owner)
        with self._engine.connect() as conn:
            return [self._dataset(r._mapping) for r in conn.execute(query)]

    def delete(self, ds_id: str, owner: str | None) -> Dataset:
        """Delete a dataset and its file."""
        ds = self.get(ds_id, owner)
        with self._engine.begin() as conn:
            conn.execute(DATASETS.delete().where(DatasetRow.id == ds_id))
        remove_tree(ds.path.parent)
        return ds

    def _one(self, cond: object, owner: str | None, what: str) -> Dataset:
        with self._engine.connect() as conn:
            row = conn.execute(select(DATASETS).where(cond)).first()  # type: ignore[arg-type]
        if row is None or (owner is not None and row.owner != owner):
            msg = f"no dataset {what} among yours; list yours to see their ids"
            raise NotFound(msg)
        return self._dataset(row._mapping)

    def _dataset(self, m: object) -> Dataset:
        r = dict(m)  # type: ignore[call-overload]
        path = owner_dir(self._data_dir, r["owner"]) / r["id"] / r["name"]
        return Dataset(path=path, **r)


def _save_schema(directory: Path, schema: dict[str, Any]) -> None:
    tmp = directory / f".{SCHEMA_FILE}.part"
    tmp.write_text(json.dumps(schema), encoding="utf-8")
    os.replace(tmp, directory / SCHEMA_FILE)


def _taken(name: str) -> str:
    return f"you already have a dataset named {name!r}; delete it first or pick a new name"
