"""What the UI routes share: the service objects the JSON API uses, and the renderer."""

from __future__ import annotations

import re
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
#: A local sample file of the examples (``data/signal.root``): in the service a job sees
#: only uploaded datasets, so the template names the upload (``dataset:signal.root``).
_LOCAL_SAMPLE = re.compile(r"(?<![\w:/.-])data/([\w.-]+\.root)\b")
_SERVICE_NOTE = (
    "# In the service a job reads your uploaded datasets (the Datasets page, or\n"
    "# `mlaas4hep datasets upload FILE`): dataset:NAME below names one.\n"
)


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
            p.name: for_the_service(p.read_text(encoding="utf-8"))
            for p in sorted(self.examples_dir.glob("*.yaml"))
            if p.is_file() and p.stat().st_size <= _MAX_EXAMPLE_BYTES
        }


def for_the_service(text: str) -> str:
    """An example spec as a template for the service: its local sample files become the
    datasets of the same names (comments and layout kept)."""
    lines = [
        line if line.lstrip().startswith("#") else _LOCAL_SAMPLE.sub(r"dataset:\1", line)
        for line in text.splitlines(keepends=True)
    ]
    replaced = "".join(lines)
    return _SERVICE_NOTE + replaced if replaced != text else text
