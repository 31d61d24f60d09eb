"""Inference settings from a config mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlaas4hep.errors import SpecError
from mlaas4hep.serve.settings import BatchPolicy, InferenceSettings


def test_from_mapping_defaults_and_values(tmp_path: Path) -> None:
    settings = InferenceSettings.from_mapping({}, tmp_path)
    assert settings.repository == tmp_path / "models"
    assert settings.batching == BatchPolicy()
    assert settings.threads >= 1
    raw = {"repository": "/srv/models", "batching": {"max_batch_size": 64}, "auth_cache_s": 0}
    settings = InferenceSettings.from_mapping(raw, tmp_path)
    assert settings.repository == Path("/srv/models")
    assert settings.batching.max_batch_size == 64
    assert settings.auth_cache_s == 0


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"repo": "x"}, "unknown settings ['repo']"),
        ({"batching": {"size": 3}}, "inference.batching"),
        ({"batching": {"max_batch_size": -3}}, "positive integer"),
    ],
)
def test_from_mapping_errors(tmp_path: Path, raw: dict[str, object], fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        InferenceSettings.from_mapping(raw, tmp_path)
