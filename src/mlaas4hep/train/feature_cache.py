"""An on-disk cache of the train split's feature batches, filled during the first epoch.

Reading ROOT files and computing features costs about as much CPU per event as training a
small MLP, so every epoch after the first reads the finished feature batches from local
``.npy`` shards instead (one shard per batch, chunk-sized: memory stays bounded). Shards are
visited in an order drawn from the epoch's seed; the ``Preprocessor`` already mixed the
datasets and shuffled events within its buffer when the shards were written.

The cache is used only when the train split fits in ``max_bytes``; past that, it is
dropped and every epoch streams from ROOT. A cache is complete or absent: shards are written
into a temporary directory that is renamed when the whole split has been seen, so an
interrupted epoch leaves nothing half-written behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlaas4hep.train.stream import BatchSource, Split

if TYPE_CHECKING:
    from mlaas4hep.preprocess.pipeline import FeatureBatch

_FIELDS = ("X", "y", "w", "split")
_INDEX = "index.json"


@dataclass
class CachingSource:
    """A ``BatchSource`` that caches the train split of ``source`` under ``directory``."""

    source: BatchSource
    directory: Path
    max_bytes: int

    def batches(
        self, split: Split | None = None, *, shuffle: bool = False, seed: int = 0
    ) -> Iterator[FeatureBatch]:
        """As ``source.batches``; the train split comes from the cache once it is complete."""
        if split != "train" or self.max_bytes <= 0:
            return self.source.batches(split, shuffle=shuffle, seed=seed)
        shards = self._shards()
        if shards is not None:
            return self._read(shards, shuffle, seed)
        return self._write_through(self.source.batches(split, shuffle=shuffle, seed=seed))

    def _shards(self) -> list[str] | None:
        index = self.directory / _INDEX
        if not index.is_file():
            return None
        names: list[str] = json.loads(index.read_text())["shards"]
        return names

    def _read(self, shards: list[str], shuffle: bool, seed: int) -> Iterator[FeatureBatch]:
        from mlaas4hep.preprocess.pipeline import FeatureBatch

        order = np.random.default_rng(seed).permutation(len(shards)) if shuffle else None
        for i in order if order is not None else range(len(shards)):
            base = self.directory / shards[int(i)]
            arrays = [np.load(f"{base}.{name}.npy") for name in _FIELDS]
            yield FeatureBatch(*arrays)

    def _write_through(self, batches: Iterator[FeatureBatch]) -> Iterator[FeatureBatch]:
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".features-", dir=self.directory.parent))
        names: list[str] = []
        size, caching = 0, True
        try:
            for batch in batches:
                if caching:
                    size += sum(getattr(batch, name).nbytes for name in _FIELDS)
                    caching = size <= self.max_bytes
                    if caching:
                        names.append(_save(tmp, len(names), batch))
                yield batch
            if caching:
                (tmp / _INDEX).write_text(json.dumps({"shards": names, "bytes": size}))
                shutil.rmtree(self.directory, ignore_errors=True)
                tmp.rename(self.directory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # an incomplete or oversized cache


def _save(directory: Path, index: int, batch: FeatureBatch) -> str:
    name = f"shard-{index:06d}"
    for field in _FIELDS:
        np.save(directory / f"{name}.{field}.npy", getattr(batch, field))
    return name
