"""What the UI routes share: the service objects the JSON API uses, and the renderer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fastapi.routing import APIRoute

from mlaas4hep.api.ui.pages import Pages
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.service import JobService

if TYPE_CHECKING:
    from mlaas4hep.serve.dataplane import DataPlane
    from mlaas4hep.serve.deploy import Deployer

_MAX_EXAMPLE_BYTES = 64 * 1024


class Inference(Protocol):
    """The parts of the inference service the UI uses (models, predictions, deploy)."""

    @property
    def plane(self) -> DataPlane: ...

    @property
    def deployer(self) -> Deployer: ...


@dataclass(frozen=True)
class UiContext:
    """Built once by :func:`mlaas4hep.api.ui.install_ui`."""

    pages: Pages
    route_class: type[APIRoute]
    service: JobService
    datasets: DatasetStore
    inference: Inference | None
    examples_dir: Path | None

    def examples(self) -> dict[str, str]:
        """The example pipeline specs offered as templates on the submit page."""
        if self.examples_dir is None or not self.examples_dir.is_dir():
            return {}
        return {
            p.name: p.read_text(encoding="utf-8")
            for p in sorted(self.examples_dir.glob("*.yaml"))
            if p.is_file() and p.stat().st_size <= _MAX_EXAMPLE_BYTES
        }
