"""The pipeline spec: the one contract between layers.

A physicist writes it as YAML or JSON; it is validated here (pydantic, strict: unknown
keys are errors) and every layer below reads only these models. ``version`` lets the
format evolve; ``load_spec`` turns validation failures into a ``SpecError`` that names
the field path and what is allowed.

One module per part: ``base`` (the strict base model, names, cuts, hashes), ``data``,
``preprocess``, ``model`` (model and train), ``tune``, ``pipeline`` (the whole spec and
the checks across its sections), ``loading`` (load, validate, ``with_params``) and
``report`` (validation errors as text). Import from ``mlaas4hep.spec``.
"""

from __future__ import annotations

from mlaas4hep.spec.base import _NAME as _NAME
from mlaas4hep.spec.base import (
    RESERVED_NAMES,
    SPEC_VERSION,
    CutSpec,
    canonical_hash,
)
from mlaas4hep.spec.base import _check_name as _check_name
from mlaas4hep.spec.base import _cut_specs as _cut_specs
from mlaas4hep.spec.base import _Strict as _Strict
from mlaas4hep.spec.data import DatasetSpec, DataSpec, RemoteSpec
from mlaas4hep.spec.loading import (
    MAX_SPEC_BYTES,
    format_validation_error,
    load_spec,
    validate_spec,
    with_params,
)
from mlaas4hep.spec.loading import _looks_like_path as _looks_like_path
from mlaas4hep.spec.loading import _read_source as _read_source
from mlaas4hep.spec.model import MAX_LAYERS, MODEL_OPTIONS, ModelSpec, TrainSpec
from mlaas4hep.spec.pipeline import DeploySpec, PipelineSpec, spec_hash
from mlaas4hep.spec.pipeline import _check_dataset_labels as _check_dataset_labels
from mlaas4hep.spec.pipeline import _check_option as _check_option
from mlaas4hep.spec.pipeline import _check_tune as _check_tune
from mlaas4hep.spec.preprocess import (
    FeaturesSpec,
    ObjectFeatureSpec,
    PreprocessSpec,
    ReweightAxisSpec,
    ReweightSpec,
    SplitSpec,
)
from mlaas4hep.spec.report import _UNION_TAGS as _UNION_TAGS
from mlaas4hep.spec.report import _allowed_fields as _allowed_fields
from mlaas4hep.spec.report import _clean as _clean
from mlaas4hep.spec.report import _inner_model as _inner_model
from mlaas4hep.spec.report import _other_union_member as _other_union_member
from mlaas4hep.spec.tune import _NOT_TUNABLE as _NOT_TUNABLE
from mlaas4hep.spec.tune import (
    TUNABLE_TRAIN,
    TUNE_METRICS,
    CategoricalParamSpec,
    FloatParamSpec,
    IntParamSpec,
    ParamSpec,
    PruningSpec,
    TuneSpec,
    tunable_paths,
)

__all__ = [
    "MAX_LAYERS",
    "MAX_SPEC_BYTES",
    "MODEL_OPTIONS",
    "RESERVED_NAMES",
    "SPEC_VERSION",
    "TUNABLE_TRAIN",
    "TUNE_METRICS",
    "CategoricalParamSpec",
    "CutSpec",
    "DataSpec",
    "DatasetSpec",
    "DeploySpec",
    "FeaturesSpec",
    "FloatParamSpec",
    "IntParamSpec",
    "ModelSpec",
    "ObjectFeatureSpec",
    "ParamSpec",
    "PipelineSpec",
    "PreprocessSpec",
    "PruningSpec",
    "RemoteSpec",
    "ReweightAxisSpec",
    "ReweightSpec",
    "SplitSpec",
    "TrainSpec",
    "TuneSpec",
    "canonical_hash",
    "format_validation_error",
    "load_spec",
    "spec_hash",
    "tunable_paths",
    "validate_spec",
    "with_params",
]
