"""A tree without the NanoAOD identifiers: the error says the default is the cause."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlaas4hep.errors import SpecError
from mlaas4hep.preprocess.program import Program
from mlaas4hep.spec import load_spec

PYTHIA = ["eventNumber", "x", "y"]
DATASETS = [
    {"name": "a", "files": ["a.root"], "label": 1},
    {"name": "b", "files": ["b.root"], "label": 0},
]


def spec(**data: Any) -> Any:
    raw = {
        "name": "pythia",
        "data": {"tree": "tree", "datasets": DATASETS, **data},
        "preprocess": {"features": {"scalars": ["x", "y"]}},
    }
    return load_spec(raw)


def test_default_identifiers_missing_says_the_default_is_the_cause() -> None:
    with pytest.raises(SpecError) as info:
        Program(spec()).branches(PYTHIA)
    message = str(info.value)
    assert "data.identifiers is not set" in message
    assert "default [run, luminosityBlock, event]" in message
    assert "set data.identifiers" in message
    assert "'eventNumber'" in message  # the branch that looks like an event number
    assert "features" not in message  # the features are fine


def test_explicit_identifiers_missing_name_the_setting_not_the_default() -> None:
    with pytest.raises(SpecError) as info:
        Program(spec(identifiers=["evt"])).branches(PYTHIA)
    message = str(info.value)
    assert "data.identifiers" in message
    assert "not set" not in message
    assert "'evt'" in message
    assert "'eventNumber'" in message


def test_missing_features_and_identifiers_are_both_reported() -> None:
    with pytest.raises(SpecError) as info:
        Program(spec()).branches(["eventNumber", "x"])
    message = str(info.value)
    assert "data.identifiers is not set" in message
    assert "'y'" in message


def test_identifiers_that_exist_are_read() -> None:
    assert Program(spec(identifiers=["eventNumber"])).branches(PYTHIA) == PYTHIA


def test_no_identifiers_and_no_split_puts_every_event_in_train() -> None:
    raw = spec().model_dump(mode="json")
    raw["data"]["identifiers"] = []
    raw["preprocess"]["split"] = {"validation": 0.0, "test": 0.0}
    no_split = load_spec(raw)
    columns = {"x": np.arange(5, dtype=np.float32), "y": np.ones(5, dtype=np.float32)}
    result = Program(no_split).run(columns, no_split.data.datasets[0])
    assert len(result.split) == len(result.y) == 5  # was an empty split array: no event
    assert not result.split.any()
