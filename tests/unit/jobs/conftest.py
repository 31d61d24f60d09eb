from __future__ import annotations

from pathlib import Path

import pytest
from jobs_helpers import fake_settings

from mlaas4hep.config import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return fake_settings(tmp_path)
