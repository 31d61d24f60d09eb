"""Progress events of a pipeline run, for a progress bar or a job's status.

``run_pipeline`` calls its ``progress`` callback with a ``Progress`` at each step: phases
``prepare`` (the first pass: statistics, normalisation; after each chunk, with the entries
read and the entries in all), ``train`` (after each chunk), ``validate`` (end of an epoch,
with its metrics), ``export``, ``evaluate``, ``done``. ``to_dict`` is the one JSON object
per line that ``mlaas4hep run --progress-json`` prints. Chunk updates (``ticking``) come
often: a front-end throttles them, and keeps the last one of a pass (``events >= total``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Phase = Literal["prepare", "train", "validate", "evaluate", "export", "done"]


@dataclass(frozen=True)
class Progress:
    """One progress event; ``events``/``total`` count within the current pass: entries read
    of the first pass (``prepare``), train events of the epoch (``train``, ``validate``)."""

    phase: Phase
    epoch: int | None = None  # 1-based, for humans
    epochs: int | None = None
    events: int = 0
    total: int | None = None  # None while unknown (not yet counted)
    elapsed_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""

    @property
    def ticking(self) -> bool:
        """A chunk update within a pass (training, or the first pass), not a new step."""
        return self.phase == "train" or (self.phase == "prepare" and self.events > 0)

    @property
    def ends_pass(self) -> bool:
        """The last chunk update of a pass: every event of it counted."""
        return self.total is not None and self.events >= self.total

    def eta_s(self) -> float | None:
        """Seconds left in this pass (an epoch, the first pass), at the rate so far."""
        if not self.total or not self.events or self.elapsed_s <= 0:
            return None
        return max(0.0, self.elapsed_s * (self.total - self.events) / self.events)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN metrics become null)."""
        out: dict[str, Any] = {"phase": self.phase}
        for key in ("epoch", "epochs", "total"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out["events"] = self.events
        out["elapsed_s"] = round(self.elapsed_s, 3)
        eta = self.eta_s()
        if eta is not None:
            out["eta_s"] = round(eta, 1)
        if self.metrics:
            out["metrics"] = {k: (None if math.isnan(v) else v) for k, v in self.metrics.items()}
        if self.message:
            out["message"] = self.message
        return out


ProgressCallback = Callable[[Progress], None]


def ignore_progress(_: Progress) -> None:
    """The default callback: do nothing."""
