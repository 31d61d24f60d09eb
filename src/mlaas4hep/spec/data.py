"""The ``data`` section: which ROOT files (datasets), which tree, how to read them."""

from __future__ import annotations

import urllib.parse
from collections import Counter
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from mlaas4hep.spec.base import CutSpec, _check_names, _cut_specs, _Strict


class DatasetSpec(_Strict):
    """One input dataset: a name, its files, the label of its events and its own steps.

    ``define`` and ``cuts`` apply to this dataset only (docs/pipeline.md, *Per-dataset
    cuts, defines and labels*): a define of the same name as a ``preprocess.define``
    replaces it in place, other names are added after the global defines; the cuts come
    after the global ones. ``label`` is a number or a label expression; ``class`` names
    one of ``preprocess.classes`` (several datasets may name the same class).
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.+-]+$")
    files: list[str] = Field(
        min_length=1,
        description="local paths, globs, @filelist.txt, root:// or http(s):// URLs",
    )
    label: int | float | str | None = Field(
        default=None, description="target of its events: a number, or a label expression"
    )
    class_: str | None = Field(
        default=None, alias="class", min_length=1, max_length=200,
        description="the class of its events: one of preprocess.classes",
    )  # fmt: skip
    weight: str | None = Field(default=None, description="per-event weight expression")
    define: dict[str, str] = Field(
        default_factory=dict, description="this dataset's defines: override or add, ordered"
    )
    cuts: list[str | CutSpec] = Field(
        default_factory=list, description="this dataset's cuts, after the global ones"
    )

    @field_validator("label")
    @classmethod
    def _label_text(cls, label: int | float | str | None) -> int | float | str | None:
        if isinstance(label, str) and not 0 < len(label.strip()) <= 2000:
            raise ValueError("a label expression must be 1 to 2000 characters")
        return label

    @field_validator("define")
    @classmethod
    def _define_names(cls, define: dict[str, str]) -> dict[str, str]:
        return _check_names(define, "define")

    @model_validator(mode="after")
    def _label_or_class(self) -> DatasetSpec:
        if self.label is not None and self.class_ is not None:
            msg = (
                f"dataset {self.name!r} has both label ({self.label!r}) and class "
                f"({self.class_!r}): give one of them"
            )
            raise ValueError(msg)
        return self

    def cut_list(self) -> list[CutSpec]:
        """This dataset's cuts as ``CutSpec`` objects (see ``PreprocessSpec.cut_list``)."""
        return _cut_specs(self.cuts)


class RemoteSpec(_Strict):
    """How remote (``root://``, ``http(s)://``) files are read: timeouts and retries.

    A transient failure (an expired request, a reset or refused connection) is retried
    ``retries`` times, waiting ``backoff`` seconds before the first retry and twice as long
    before each next one (at most ``max_backoff``, each wait shortened by a random jitter of
    up to half); a read resumes at the chunk that failed. While one chunk is decompressed,
    the next ``readahead`` chunks are already being fetched.
    """

    open_timeout: int = Field(
        default=10, ge=1, le=600, description="seconds to connect to a remote host"
    )
    read_timeout: int = Field(
        default=60, ge=1, le=3600, description="seconds for one open or read request"
    )
    retries: int = Field(default=3, ge=0, le=20, description="retries after a transient error")
    backoff: float = Field(default=1.0, ge=0.0, le=60.0, description="first retry delay (s)")
    max_backoff: float = Field(default=30.0, ge=0.0, le=600.0, description="longest delay (s)")
    readahead: int = Field(
        default=1,
        ge=0,
        le=8,
        description="chunks fetched ahead of the one being read, to hide network latency",
    )


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
    xrootd_proxy_mode: Literal["forward", "direct"] = Field(
        default="forward",
        description="forward: root://proxy//root://origin//path (XRootD forwarding proxy); "
        "direct: root://proxy//path (an XCache or a proxy bound to one origin)",
    )
    remote: RemoteSpec = Field(default_factory=RemoteSpec)

    @field_validator("redirector", "xrootd_proxy")
    @classmethod
    def _xrootd_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("root", "xroot") or not parts.hostname or parts.path.strip("/"):
            msg = f"expected root://host[:port] without a path, got {value!r}"
            raise ValueError(msg)
        return value.rstrip("/")

    @field_validator("datasets")
    @classmethod
    def _unique_names(cls, datasets: list[DatasetSpec]) -> list[DatasetSpec]:
        counts = Counter(d.name for d in datasets)  # linear: there may be thousands
        dup = sorted(n for n, k in counts.items() if k > 1)
        if dup:
            raise ValueError(f"dataset names must be unique; repeated: {dup}")
        return datasets
