"""The apply request: the document that asks the service to apply a deployed model.

Submitted through the same ``POST /api/v1/jobs`` as a pipeline spec, and told apart by its
top-level ``apply:`` key (a pipeline spec forbids unknown keys, so it never has one)::

    name: score-ttH
    apply:
      model: tth-classifier        # NAME or NAME:VERSION (default: the latest version)
      files: [dataset:ttH.root, /data/alice/qcd_*.root, root://host//store/user/a/x.root]
      tree: Events                 # default: the tree the model was trained on
      format: root                 # root (a friend tree) | parquet
      only_passing: false          # true: only the events passing the model's cuts
      training_dataset: ttH        # also this training dataset's own defines and cuts
      register_dataset: false      # true: each output becomes a dataset of yours

It is parsed by the one hardened loader (:mod:`mlaas4hep.documents`) and validated here
(strict: unknown keys are errors, named with the closest allowed ones). The submission
policy (:mod:`mlaas4hep.jobs.policy`) resolves its inputs and pins the model version; the
stored request holds ``model: NAME:VERSION`` and the resolved inputs.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlaas4hep.errors import SpecError
from mlaas4hep.spec import format_validation_error

APPLY_KEY = "apply"
#: The model names of the repository (serve/repository.py), with an optional ``:VERSION``.
_MODEL_REF = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})(?::(?P<version>[1-9][0-9]{0,8}))?"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApplySpec(_Strict):
    """What to apply to what, and how to write it."""

    model: str = Field(description="NAME or NAME:VERSION of a model in the service's repository")
    files: list[str] = Field(
        min_length=1,
        max_length=10_000,
        description="absolute paths, globs, @lists, dataset:NAME, root:// or http(s):// URLs",
    )
    tree: str | None = Field(
        default=None, min_length=1, max_length=256, description="default: the model's tree"
    )
    format: Literal["root", "parquet"] = "root"
    only_passing: bool = False
    step_size: int | None = Field(
        default=None, ge=1, le=50_000_000, description="entries per chunk"
    )
    register_dataset: bool = Field(
        default=False, description="register each output as a dataset of the submitter"
    )
    training_dataset: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.+-]+$",  # a data.datasets[].name
        description="a training dataset of the model whose own defines and cuts apply too "
        "(default: the global preprocessing only)",
    )

    @field_validator("model")
    @classmethod
    def _model_ref(cls, value: str) -> str:
        parse_model_ref(value)
        return value

    @model_validator(mode="after")
    def _datasets_are_root(self) -> ApplySpec:
        if self.register_dataset and self.format != "root":
            msg = (
                "register_dataset needs format 'root': datasets are ROOT files; "
                "write parquet without registering, or ROOT friend trees to register"
            )
            raise ValueError(msg)
        return self


class ApplyRequest(_Strict):
    """A request to apply a deployed model to inputs, as a service job."""

    version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    description: str = Field(default="", max_length=10_000)
    apply: ApplySpec

    def model_name(self) -> str:
        return parse_model_ref(self.apply.model)[0]

    def model_version(self) -> int | None:
        return parse_model_ref(self.apply.model)[1]


def is_apply_request(doc: object) -> bool:
    """Whether a parsed document is an apply request (it has a top-level ``apply:``)."""
    return isinstance(doc, dict) and APPLY_KEY in doc


def parse_model_ref(text: str) -> tuple[str, int | None]:
    """``"NAME"`` -> ``(NAME, None)``; ``"NAME:3"`` -> ``(NAME, 3)``.

    Raises:
        ValueError: not a model name with an optional positive version.
    """
    match = _MODEL_REF.fullmatch(text)
    if match is None or match["name"].endswith("."):
        msg = (
            f"invalid model reference {text!r}: write NAME or NAME:VERSION, the name 1-128 "
            "letters, digits, '_', '-' or '.' starting with a letter or digit, the version a "
            "positive integer"
        )
        raise ValueError(msg)
    version = match["version"]
    return match["name"], int(version) if version else None


def validate_apply_request(
    raw: dict[str, Any], *, origin: str = "the submitted document"
) -> ApplyRequest:
    """Validate a parsed apply request.

    Raises:
        SpecError: one line per problem, naming the field path, the bad value and what
            is allowed (unknown fields with the closest allowed names).
    """
    try:
        return ApplyRequest.model_validate(raw)
    except ValidationError as exc:
        text = format_validation_error(exc, origin, root=ApplyRequest, what="apply request")
        raise SpecError(text) from exc
