"""Shared fixtures of the serving unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlaas4hep.serve.samples import write_sample_model

SMALL = (4, 8, 2)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A version directory with a small MLP (4 features, 2 outputs) and its metadata."""
    return write_sample_model(tmp_path / "src", SMALL, seed=1)
