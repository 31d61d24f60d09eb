"""Apply mode of ``preprocess.Program``: every event kept, in order, ids exact."""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np
import pytest
from preprocess.conftest import make_events, spec_dict  # tests/unit is on sys.path

from mlaas4hep.errors import DataQualityError, ExpressionError
from mlaas4hep.preprocess.partitioned import chunk_columns
from mlaas4hep.preprocess.program import Program
from mlaas4hep.spec import validate_spec


def columns(events: ak.Array) -> dict[str, Any]:
    return chunk_columns(events)


def test_apply_keeps_every_event_and_matches_training_features() -> None:
    spec = validate_spec(spec_dict())
    events = make_events(500, 1, signal=True)
    applied = Program(spec, purpose="apply").apply(columns(events))
    trained = Program(spec).run(columns(events), spec.data.datasets[0])
    assert applied.passed.shape == (500,)
    assert applied.passed.dtype == np.bool_
    assert int(applied.passed.sum()) == trained.passed[-1] == len(applied.X)
    np.testing.assert_array_equal(applied.X, trained.X)
    for name in spec.data.identifiers:
        assert applied.ids[name].dtype == np.asarray(events[name]).dtype
        np.testing.assert_array_equal(applied.ids[name], np.asarray(events[name]))


def test_identifiers_above_2_to_53_stay_exact() -> None:
    spec = validate_spec(spec_dict())
    events = make_events(50, 1, signal=True)
    big = np.uint64(2**60) + np.arange(50, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    events = ak.with_field(events, big, "event")
    applied = Program(spec, purpose="apply").apply(columns(events))
    assert applied.ids["event"].dtype == np.uint64
    np.testing.assert_array_equal(applied.ids["event"], big)


def test_apply_mode_needs_no_label_weight_or_identifier_branches() -> None:
    doc = spec_dict(weight="genWeight")
    doc["data"]["datasets"][1]["weight"] = "genWeight * 2"
    spec = validate_spec(doc)
    events = make_events(100, 2, signal=False)
    available = [f for f in events.fields if f not in ("genWeight", "run", "event")]
    with pytest.raises(ExpressionError, match="genWeight"):
        Program(spec).branches(available)
    program = Program(spec, purpose="apply", identifiers=[])
    wanted = program.branches(available)
    assert "genWeight" not in wanted
    assert "event" not in wanted
    applied = program.apply({k: events[k] for k in wanted})
    assert applied.ids == {}
    assert len(applied.passed) == 100


def test_nonfinite_features_fail_the_event_or_raise() -> None:
    events = make_events(200, 3, signal=True)
    met = np.asarray(events["MET_pt"]).copy()
    met[:] = 50.0
    met[7] = np.inf
    events = ak.with_field(events, met, "MET_pt")
    drop = validate_spec(spec_dict(nonfinite="drop"))
    applied = Program(drop, purpose="apply").apply(columns(events))
    assert not applied.passed[7]
    assert len(applied.X) == int(applied.passed.sum())
    strict = validate_spec(spec_dict(nonfinite="error"))
    with pytest.raises(DataQualityError, match="MET_pt"):
        Program(strict, purpose="apply").apply(columns(events))


def test_input_types_are_recorded_when_bound() -> None:
    spec = validate_spec(spec_dict())
    program = Program(spec, purpose="apply")
    assert program.input_types() == {}
    program.apply(columns(make_events(20, 1, signal=True)))
    types = program.input_types()
    assert types["event"] == "uint64"
    assert types["Jet_pt"] == "var * float32"
