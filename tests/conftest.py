"""Fixtures shared by every test area.

``sample_files``: a small NanoAOD-like signal/background pair written once per session
with the project's own generator (``mlaas4hep.data.samples``); tests must treat the files
as read-only (copy them to ``tmp_path`` before changing anything).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from mlaas4hep.data.samples import write_sample_set
from mlaas4hep.spec import DataSpec

SAMPLE_EVENTS = 3000
SAMPLE_SEED = 7

# CI gates what lands: there the property tests run the same examples every time, so a
# failure reproduces and a rare new case cannot block an unrelated change. Local runs
# keep drawing new examples (and find such cases).
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def sample_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"signal": path, "background": path}``, ``SAMPLE_EVENTS`` events each, tree Events."""
    return write_sample_set(tmp_path_factory.mktemp("samples"), SAMPLE_EVENTS, seed=SAMPLE_SEED)


@pytest.fixture(scope="session")
def sample_dir(sample_files: dict[str, Path]) -> Path:
    """The directory holding ``signal.root`` and ``background.root``."""
    return sample_files["signal"].parent


@pytest.fixture
def sample_data_spec(sample_files: dict[str, Path]) -> DataSpec:
    """A ``DataSpec`` over the sample files: dataset ``signal`` (label 1), ``background`` (0)."""
    return DataSpec(
        tree="Events",
        datasets=[
            {"name": "signal", "files": [str(sample_files["signal"])], "label": 1},
            {"name": "background", "files": [str(sample_files["background"])], "label": 0},
        ],
        step_size=1000,
    )
