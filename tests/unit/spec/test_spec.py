"""The pipeline spec: loading YAML/JSON, validation messages, defaults, hashing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlaas4hep.errors import SpecError
from mlaas4hep.spec import PipelineSpec, load_spec, spec_hash, validate_spec

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

MINIMAL = """
name: ttH-vs-QCD
data:
  datasets:
    - {name: ttH, files: [sig.root], label: 1}
    - {name: QCD, files: [bkg.root], label: 0, weight: genWeight}
preprocess:
  features: {scalars: [MET_pt]}
"""


def test_minimal_yaml_gets_defaults() -> None:
    spec = load_spec(MINIMAL)
    assert spec.version == 1
    assert spec.data.identifiers == ["run", "luminosityBlock", "event"]
    assert spec.preprocess.normalize == "standard"
    assert spec.preprocess.split.validation == 0.2
    assert spec.model.kind == "mlp"
    assert spec.model.hidden == [64, 32]
    assert spec.train.epochs == 10
    assert spec.deploy is None


def test_json_text_file_and_dict_give_the_same_spec(tmp_path: Path) -> None:
    spec = load_spec(MINIMAL)
    raw = spec.model_dump(mode="json")
    (tmp_path / "p.json").write_text(json.dumps(raw))
    (tmp_path / "p.yaml").write_text(spec.to_yaml())
    assert load_spec(json.dumps(raw)) == spec
    assert load_spec(tmp_path / "p.json") == spec
    assert load_spec(str(tmp_path / "p.yaml")) == spec
    assert load_spec(raw) == spec


def test_hash_is_stable_and_sensitive() -> None:
    a, b = (
        load_spec(MINIMAL),
        load_spec(MINIMAL.replace("{scalars: [MET_pt]}", "{scalars: [MET_pt], objects: {}}")),
    )
    assert a.spec_hash() == b.spec_hash() == spec_hash(a)
    assert len(a.spec_hash()) == 64
    c = load_spec(MINIMAL + "train: {epochs: 11}\n")
    assert c.spec_hash() != a.spec_hash()


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            "preprocess: {normalize: zscore, features: {scalars: [x]}}",
            "preprocess.normalize: Input should be 'standard', 'minmax' or 'none' (got 'zscore')",
        ),
        (
            "preprocess: {features: {scalars: [x]}, cutz: []}",
            "preprocess.cutz: unknown field; closest: 'cuts'",
        ),
        (
            "preprocess: {features: {objects: {Jet: {fields: [pt], length: 3, sortby: pt}}}}",
            "preprocess.features.objects.Jet.sortby: unknown field; closest: 'sort_by'",
        ),
        (
            "preprocess: {features: {scalars: [x]}, split: {validation: 0.5, test: 0.5}}",
            "must leave events for training",
        ),
        ("preprocess: {features: {scalars: []}}", "preprocess.features is empty"),
        (
            "preprocess: {features: {scalars: [x]}, define: {sum: 'x+1'}}",
            "word of the expression language",
        ),
        ("preprocess: {features: {scalars: [x]}, define: {'1x': 'x+1'}}", "not a valid name"),
        (
            "preprocess: {features: {scalars: [x]}}\nmodel: {kind: mlp, max_depth: 3}",
            "does not take 'max_depth' (a xgboost option)",
        ),
        (
            "preprocess: {features: {scalars: [x]}}\nmodel: {kind: forest}",
            "model.kind: Input should be 'mlp', 'xgboost', 'sgd', 'python', 'deepsets' or "
            "'transformer'",
        ),
        ("preprocess: {features: {scalars: [x]}}\nmodel: {kind: python}", "needs 'module'"),
        (
            "preprocess: {features: {scalars: [x]}}\ntrain: {epochs: 0}",
            "train.epochs: Input should be greater than or equal to 1",
        ),
        (
            "preprocess: {features: {scalars: [x]}}\ntrian: {}",
            "trian: unknown field; closest: 'train'",
        ),
        (
            "preprocess: {features: {scalars: [x]}, cuts: [{name: a, exprr: b}]}",
            "preprocess.cuts.0.exprr: unknown field; closest: 'expr'",
        ),
        (
            "preprocess: {features: {scalars: [x]}}\ndeploy: {}",
            "deploy.name: required field is missing",
        ),
    ],
)
def test_errors_name_the_field_path_and_allowed_values(patch: str, expected: str) -> None:
    text = MINIMAL.split("preprocess:")[0] + patch + "\n"
    with pytest.raises(SpecError) as info:
        load_spec(text)
    assert expected in str(info.value)


def test_version_and_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="version 2 is not supported"):
        load_spec("version: 2\n" + MINIMAL)
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec("name: [unclosed\n")
    with pytest.raises(SpecError, match="is a mapping"):
        load_spec("- just\n- a list\n")
    with pytest.raises(SpecError, match=r"data\.datasets: List should have at least 1 item"):
        load_spec("name: x\ndata: {datasets: []}\npreprocess: {features: {scalars: [x]}}\n")


def test_identifiers_are_needed_for_a_split() -> None:
    raw = load_spec(MINIMAL).model_dump(mode="json")
    raw["data"]["identifiers"] = []
    with pytest.raises(SpecError, match=r"data\.identifiers is empty"):
        validate_spec(raw)
    raw["preprocess"]["split"] = {"validation": 0, "test": 0}
    assert validate_spec(raw).data.identifiers == []


def test_model_dump_keeps_only_the_kinds_options() -> None:
    spec = load_spec(MINIMAL + "model: {kind: xgboost, max_depth: 3}\n")
    dumped = spec.model_dump(mode="json")["model"]
    assert dumped["max_depth"] == 3
    assert "hidden" not in dumped
    assert spec.model.hidden == [64, 32]  # still readable as an attribute
    assert load_spec(spec.to_yaml()) == spec


def test_cuts_accept_strings_and_named_cuts() -> None:
    spec = load_spec(
        MINIMAL.replace(
            "features:", "cuts: ['MET_pt > 20', {name: four jets, expr: 'nJet >= 4'}]\n  features:"
        )
    )
    assert [(c.name, c.expr) for c in spec.preprocess.cut_list()] == [
        ("MET_pt > 20", "MET_pt > 20"),
        ("four jets", "nJet >= 4"),
    ]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    assert isinstance(load_spec(path), PipelineSpec)


@pytest.mark.parametrize("field", ["hidden", "phi", "rho"])
def test_network_depth_is_bounded(field: str) -> None:
    # A 200,000-layer list was accepted (red team): now at most MAX_LAYERS, with the field named.
    from mlaas4hep.spec import MAX_LAYERS, ModelSpec

    kind = "mlp" if field == "hidden" else "deepsets"
    ok = ModelSpec(**{"kind": kind, field: [8] * MAX_LAYERS})
    assert len(getattr(ok, field)) == MAX_LAYERS
    with pytest.raises(ValueError, match=field):
        ModelSpec(**{"kind": kind, field: [8] * (MAX_LAYERS + 1)})
