"""The pipeline spec: the one contract between layers.

A physicist writes it as YAML or JSON; it is validated here (pydantic, strict: unknown
keys are errors) and every layer below reads only these models. ``version`` lets the
format evolve; ``load_spec`` turns validation failures into a ``SpecError`` that names
the field path and what is allowed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

SPEC_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Strict):
    """One input dataset: a name, its files and the label attached to its events."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.+-]+$")
    files: list[str] = Field(
        min_length=1,
        description="local paths, globs, @filelist.txt, root:// or http(s):// URLs",
    )
    label: int | float | None = None
    weight: str | None = Field(default=None, description="per-event weight expression")


class DataSpec(_Strict):
    """Which ROOT files, which tree, how to chunk them."""

    tree: str | None = Field(default=None, description="TTree/RNTuple name; default: the only one")
    datasets: list[DatasetSpec] = Field(min_length=1)
    identifiers: list[str] = Field(default_factory=lambda: ["run", "luminosityBlock", "event"])
    step_size: int = Field(default=100_000, ge=1, le=50_000_000, description="entries per chunk")
    max_events: int | None = Field(default=None, ge=1, description="per dataset; None = all")
    redirector: str | None = Field(
        default=None, description="prefix for /store/... paths, e.g. root://cms-xrd-global.cern.ch"
    )
    xrootd_proxy: str | None = Field(default=None, description="root://proxy:port to read through")

    @field_validator("datasets")
    @classmethod
    def _unique_names(cls, datasets: list[DatasetSpec]) -> list[DatasetSpec]:
        names = [d.name for d in datasets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"dataset names must be unique; repeated: {dup}")
        return datasets
