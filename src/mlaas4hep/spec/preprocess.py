"""The ``preprocess`` section: defines, selections, cuts, features, split, reweighting."""

from __future__ import annotations

import itertools
import math
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from mlaas4hep.spec.base import CutSpec, _check_names, _cut_specs, _Strict


class ObjectFeatureSpec(_Strict):
    """How one object collection (e.g. ``Jet``) becomes fixed-length feature columns."""

    fields: list[str] = Field(min_length=1, description="e.g. [pt, eta]: read as Jet_pt, Jet_eta")
    sort_by: str | None = Field(default=None, description="field to sort objects by")
    descending: bool = True
    length: int = Field(ge=1, le=1000, description="objects kept per event (clip or pad)")
    pad: float = Field(default=0.0, description="value of missing objects")
    mask: bool = Field(default=False, description="add C_mask_i features (1 present, 0 padded)")

    @field_validator("fields")
    @classmethod
    def _unique_fields(cls, fields: list[str]) -> list[str]:
        dup = sorted({f for f in fields if fields.count(f) > 1})
        if dup:
            raise ValueError(f"object fields must be unique; repeated: {dup}")
        return fields


class FeaturesSpec(_Strict):
    """The feature columns, in this order: scalars, then each collection field by field."""

    scalars: list[str] = Field(default_factory=list, description="per-event branches or defines")
    objects: dict[str, ObjectFeatureSpec] = Field(default_factory=dict)


class SplitSpec(_Strict):
    """Fractions of validation and test events; the split is a hash of the identifiers."""

    validation: float = Field(default=0.2, ge=0.0, lt=1.0)
    test: float = Field(default=0.2, ge=0.0, lt=1.0)
    seed: int = Field(default=42, ge=0, lt=2**63)

    @model_validator(mode="after")
    def _leave_training(self) -> SplitSpec:
        if self.validation + self.test >= 1.0:
            msg = (
                f"validation + test must leave events for training, got "
                f"{self.validation!r} + {self.test!r} >= 1; lower one of them"
            )
            raise ValueError(msg)
        return self


class ReweightAxisSpec(_Strict):
    """One variable of a reweighting and its binning: ``edges``, or ``n`` bins in [lo, hi)."""

    expr: str = Field(
        min_length=1, max_length=2000, description="per-event expression: a branch, a define, ..."
    )
    edges: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        default=None, description="bin edges, strictly increasing"
    )
    n: int | None = Field(default=None, ge=1, le=10_000, description="number of equal bins")
    lo: float | None = Field(default=None, allow_inf_nan=False, description="first edge")
    hi: float | None = Field(default=None, allow_inf_nan=False, description="last edge")

    @model_validator(mode="after")
    def _one_binning(self) -> ReweightAxisSpec:
        uniform = (self.n, self.lo, self.hi)
        if self.edges is not None:
            if any(v is not None for v in uniform):
                msg = f"{self.expr!r}: give either edges or n/lo/hi, not both"
                raise ValueError(msg)
            e = self.edges
            if not 2 <= len(e) <= 10_001 or any(e[i + 1] <= e[i] for i in range(len(e) - 1)):
                msg = (
                    f"{self.expr!r}: edges must be 2 to 10001 strictly increasing numbers, "
                    f"got {e!r}"
                )
                raise ValueError(msg)
        elif any(v is None for v in uniform):
            msg = f"{self.expr!r}: give the binning: edges: [...], or n, lo and hi"
            raise ValueError(msg)
        elif not self.lo < self.hi:  # type: ignore[operator]
            msg = f"{self.expr!r}: lo must be below hi, got lo={self.lo!r}, hi={self.hi!r}"
            raise ValueError(msg)
        else:
            e = self.bin_edges()  # hi - lo can overflow, n bins can be below the resolution
            finite = all(math.isfinite(x) for x in e)
            if not finite or any(hi <= lo for lo, hi in itertools.pairwise(e)):
                msg = (
                    f"{self.expr!r}: n={self.n!r} bins in [{self.lo!r}, {self.hi!r}) are not "
                    "finite, strictly increasing edges; use a narrower range or fewer bins"
                )
                raise ValueError(msg)
        return self

    def bin_edges(self) -> list[float]:
        """The edges, from ``edges`` or from ``n``, ``lo``, ``hi``."""
        if self.edges is not None:
            return list(self.edges)
        n, lo, hi = self.n or 1, float(self.lo or 0.0), float(self.hi or 1.0)
        return [lo + (hi - lo) * i / n for i in range(n)] + [hi]


class ReweightSpec(_Strict):
    """A histogram reweighting of some classes in one or two variables (docs/training.md).

    Each event of a reweighted class gets its weight multiplied by target / class density
    in its bin, clipped to ``max_weight``; ``target`` is ``flat`` or a class or dataset name.
    """

    variables: list[ReweightAxisSpec] = Field(min_length=1, max_length=2)
    target: str = Field(
        default="flat", min_length=1, max_length=200, description="flat, a class or a dataset"
    )
    classes: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, min_length=1, description="classes reweighted; default: all but the target"
    )
    max_weight: float = Field(
        default=10.0, gt=0.0, le=1e6, description="the largest factor an event gets (clip)"
    )

    @field_validator("variables", mode="before")
    @classmethod
    def _at_most_two(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > 2:
            msg = (
                f"a reweighting takes 1 or 2 variables, got {len(value)}; "
                "use several reweightings of 1 or 2 variables instead"
            )
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _bounded(self) -> ReweightSpec:
        bins = 1
        for axis in self.variables:
            bins *= len(axis.bin_edges()) - 1
        if bins > 100_000:
            msg = f"a reweighting has at most 100000 bins in all, got {bins}; use fewer bins"
            raise ValueError(msg)
        return self


class PreprocessSpec(_Strict):
    """From raw branches to a feature matrix: define, select, cut, features, labels, split."""

    define: dict[str, str] = Field(default_factory=dict, description="name -> expression, ordered")
    select: dict[str, str] = Field(
        default_factory=dict, description="collection -> per-object mask expression"
    )
    cuts: list[str | CutSpec] = Field(default_factory=list, description="event cuts, in order")
    features: FeaturesSpec = Field(default_factory=FeaturesSpec)
    task: Literal["auto", "binary", "multiclass", "regression"] = "auto"
    label: str | None = Field(default=None, description="label expression; default: per dataset")
    classes: list[str] | None = Field(
        default=None,
        description="class names, in class-index order: for label expressions (values "
        "0..n-1) and for data.datasets[].class",
    )
    weight: str | None = Field(default=None, description="per-event weight expression")
    balance: bool = Field(default=False, description="reweight classes to equal total weight")
    reweight: list[ReweightSpec] = Field(
        default_factory=list,
        max_length=16,
        description="histogram reweightings (after weight, before balance)",
    )
    normalize: Literal["standard", "minmax", "none"] = "standard"
    nonfinite: Literal["error", "drop"] = Field(
        default="error", description="NaN/inf in a feature: fail with a report, or drop events"
    )
    split: SplitSpec = Field(default_factory=SplitSpec)

    @field_validator("define")
    @classmethod
    def _define_names(cls, define: dict[str, str]) -> dict[str, str]:
        return _check_names(define, "define")

    @field_validator("select")
    @classmethod
    def _select_names(cls, select: dict[str, str]) -> dict[str, str]:
        return _check_names(select, "select")

    def cut_list(self) -> list[CutSpec]:
        """The cuts as ``CutSpec`` objects (plain strings are named after themselves)."""
        return _cut_specs(self.cuts)

    def feature_count(self) -> int:
        """Number of feature columns the spec asks for."""
        n = len(self.features.scalars)
        for obj in self.features.objects.values():
            n += obj.length * (len(obj.fields) + int(obj.mask))
        return n
