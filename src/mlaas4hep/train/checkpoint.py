"""Checkpoints of a training run: engine state + the loop's position, written atomically.

Layout under ``checkpoints/``::

    ckpt-0003-0000012/      epoch 3 (0-based, the one in progress), 12 chunks done in it
        state.json          LoopState: position, history, early-stopping counters
        ...                 the engine's files (torch_state.pt, booster.ubj, sgd.pkl)
    latest.json             {"dir": "ckpt-..."}: where ``resume`` starts
    best.json               {"dir": "ckpt-..."}: the model with the best validation loss

A checkpoint directory is filled under a temporary name and renamed when complete, and the
pointer files are replaced atomically, so an interruption at any moment leaves the previous
checkpoint usable. Directories that no pointer names are pruned.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlaas4hep.errors import TrainingError
from mlaas4hep.train.atomic import atomic_write_text
from mlaas4hep.train.engine import Engine

_STATE = "state.json"


@dataclass
class LoopState:
    """Where training stands: the next chunk to train on, and what happened so far."""

    spec_hash: str
    epoch: int = 0
    chunks_done: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_loss: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> LoopState:
        return cls(**json.loads(text))


class CheckpointStore:
    """Saves and finds checkpoints in one directory (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def save(self, engine: Engine, state: LoopState, *, best: bool = False) -> Path:
        """Write a checkpoint, point ``latest`` (and ``best`` if asked) at it, prune the rest."""
        name = f"ckpt-{state.epoch:04d}-{state.chunks_done:07d}"
        final = self.directory / name
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.directory))
        engine.save(tmp)
        (tmp / _STATE).write_text(state.to_json())
        if final.exists():  # the same position saved twice (e.g. resumed, then saved again)
            shutil.rmtree(final)
        tmp.rename(final)
        self._point("latest", name)
        if best:
            self._point("best", name)
        self._prune()
        return final

    def latest(self) -> tuple[Path, LoopState] | None:
        """The checkpoint to resume from, or None when there is none."""
        path = self._pointer("latest")
        if path is None:
            return None
        return path, LoopState.from_json((path / _STATE).read_text())

    def best(self) -> Path | None:
        """The directory of the best checkpoint, or None."""
        return self._pointer("best")

    def _point(self, which: str, name: str) -> None:
        atomic_write_text(self.directory / f"{which}.json", json.dumps({"dir": name}))

    def _pointer(self, which: str) -> Path | None:
        file = self.directory / f"{which}.json"
        if not file.exists():
            return None
        try:
            name = json.loads(file.read_text())["dir"]
        except (ValueError, KeyError, TypeError) as exc:
            msg = f"checkpoint pointer {str(file)!r} is corrupt; delete {str(self.directory)!r}"
            raise TrainingError(msg) from exc
        path = self.directory / str(name)
        if path.parent != self.directory or not (path / _STATE).is_file():
            msg = f"checkpoint {str(path)!r} named in {file.name} is missing or incomplete"
            raise TrainingError(msg)
        return path

    def _prune(self) -> None:
        keep = {p.name for p in (self._pointer("latest"), self._pointer("best")) if p}
        for entry in self.directory.iterdir():
            if entry.is_dir() and entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
