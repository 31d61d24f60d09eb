"""The whole pipeline: its sections together, the checks across them, its hash."""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from mlaas4hep.errors import closest
from mlaas4hep.spec.base import _Strict, canonical_hash
from mlaas4hep.spec.data import DatasetSpec, DataSpec
from mlaas4hep.spec.model import ModelSpec, TrainSpec
from mlaas4hep.spec.preprocess import PreprocessSpec
from mlaas4hep.spec.report import format_problems
from mlaas4hep.spec.tune import CategoricalParamSpec, TuneSpec, tunable_paths


class DeploySpec(_Strict):
    """Where the trained model goes: its name in the model repository."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = Field(default="", max_length=2000)


class PipelineSpec(_Strict):
    """A whole pipeline: data, preprocessing, model, training, deployment."""

    version: Literal[1] = Field(default=1, description="format version of this file")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    description: str = Field(default="", max_length=10_000)
    data: DataSpec
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    deploy: DeploySpec | None = None
    tune: TuneSpec | None = Field(default=None, description="hyperparameter search")

    @model_validator(mode="after")
    def _tunable(self) -> PipelineSpec:
        _check_tune(self)
        return self

    @model_validator(mode="after")
    def _dataset_labels(self) -> PipelineSpec:
        _check_dataset_labels(self.data.datasets, self.preprocess)
        return self

    @model_validator(mode="after")
    def _consistent(self) -> PipelineSpec:
        pre = self.preprocess
        if pre.feature_count() == 0:
            msg = (
                "preprocess.features is empty: list per-event columns under 'scalars' "
                "and/or collections under 'objects'"
            )
            raise ValueError(msg)
        split = pre.split
        if not self.data.identifiers and (split.validation or split.test):
            msg = (
                "data.identifiers is empty but preprocess.split asks for validation/test "
                "events: name the branches that identify an event (e.g. [run, event])"
            )
            raise ValueError(msg)
        return self

    def spec_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON form: equal specs have equal hashes."""
        return canonical_hash(self.model_dump(mode="json"))

    def to_yaml(self) -> str:
        """The spec as YAML (defaults included), readable back with ``load_spec``."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _check_tune(spec: PipelineSpec) -> None:
    """Every path of ``tune.space`` is tunable here, and its extremes give valid specs."""
    tune = spec.tune
    if tune is None:
        return
    allowed = tunable_paths(spec.model.kind)
    for path, param in tune.space.items():
        if path not in allowed:
            msg = (
                f"tune.space: {path!r} cannot be tuned for model kind {spec.model.kind!r}; "
                f"{closest(path, allowed)}; tunable: {', '.join(allowed)}"
            )
            raise ValueError(msg)
        ends = param.choices if isinstance(param, CategoricalParamSpec) else [param.low, param.high]
        for value in ends:
            _check_option(spec, path, value)
    if not spec.preprocess.split.validation:
        msg = (
            f"tune ranks trials by {tune.metric!r} on the validation split, but "
            "preprocess.split.validation is 0; give it a fraction (e.g. 0.2)"
        )
        raise ValueError(msg)


def _check_option(spec: PipelineSpec, path: str, value: Any) -> None:
    """*value* is valid for the option at *path* (``model.X`` or ``train.X``).

    Only that section is validated again (a whole spec of many datasets, once per choice of
    a large space, would hold the API for minutes); the trials validate whole specs.
    """
    section, _, option = path.partition(".")
    current: ModelSpec | TrainSpec = spec.model if section == "model" else spec.train
    raw = {**current.model_dump(mode="json"), option: value}
    try:
        type(current).model_validate(raw)
    except ValidationError as exc:
        where = f"the trial spec ({path}={value!r})"
        report = format_problems(exc, where, root=type(current), what="pipeline spec")
        detail = f"{section}.{report.splitlines()[-1].strip()}"
        msg = f"tune.space.{path}: the value {value!r} is not valid there: {detail}"
        raise ValueError(msg[:2000]) from None


def _check_dataset_labels(datasets: list[DatasetSpec], pre: PreprocessSpec) -> None:
    """``datasets[].class`` names one of ``preprocess.classes``; a dataset's own label
    expression or class cannot be combined with ``preprocess.label``."""
    names = set(pre.classes or ())  # a set: thousands of datasets x classes stay linear
    for i, d in enumerate(datasets):
        where = f"data.datasets[{i}] ({d.name!r})"
        if d.class_ is not None and not pre.classes:
            msg = (
                f"{where}.class is {d.class_!r} but preprocess.classes is not set: list the "
                "class names there (e.g. classes: [QCD, ttbar, ttH]); a class's index is its "
                "position in that list"
            )
            raise ValueError(msg)
        if d.class_ is not None and pre.classes and d.class_ not in names:
            msg = (
                f"{where}.class {d.class_!r} is not one of preprocess.classes "
                f"{pre.classes!r} ({closest(d.class_, pre.classes)}); fix the name or add "
                "the class to preprocess.classes"
            )
            raise ValueError(msg)
        own = d.class_ is not None or isinstance(d.label, str)
        if own and pre.label is not None:
            kind = "class" if d.class_ is not None else "label expression"
            msg = (
                f"{where} has its own {kind} and preprocess.label is set too: an event has "
                "one label; remove preprocess.label, or this dataset's label"
            )
            raise ValueError(msg)


def spec_hash(spec: PipelineSpec) -> str:
    """SHA-256 (hex) of *spec*'s canonical form (same as ``spec.spec_hash()``)."""
    return spec.spec_hash()
