"""Convert the inputs of the old MLaaS4HEP workflow into a pipeline spec.

Old inputs: ``params.json`` (nevts, chunk_size, epochs, batch_size, identifier, branch,
selected_branches, exclude_branches, redirector, ...), an optional ``preproc.json``
(``new_branch``, ``flat_cut``, ``jagged_cut``), ``files.txt`` and ``labels.txt`` (line by
line), and an optional Keras model file defining ``model(idim)``.

What maps how:

- files are grouped by label into datasets (``background`` for 0, ``signal`` for 1,
  ``class<N>`` otherwise); ``redirector`` becomes ``data.redirector``;
- ``nevts`` (a total) becomes ``data.max_events`` split evenly over the datasets;
- ``files.txt`` entries that are relative paths are relative to the directory of
  ``files.txt`` (as ``@list.txt`` entries in a spec are relative to the list file), and
  are written into the spec as paths from the current directory;
- flat branches become scalar features; jagged branches (``Jet_pt``) become object
  features of their collection (``Jet``, the one their counter ``nJet`` counts), padded
  with 0 to the largest multiplicity seen (the old NaN-then-0 padding), unsorted, no mask;
  normalisation is ``minmax`` as before;
- ``new_branch`` entries become ``define`` entries, their ``cut_N`` and the ``flat_cut``/
  ``jagged_cut`` sections become ``cuts`` (``[cmp, "all"]`` -> ``all(cmp)``); ``remove``
  and ``keys_to_remove`` drop columns from the features;
- a jagged ``new_branch`` joins the collection of the jagged branches it is computed from
  (``log_Jet_pt = log(Jet_pt)`` is a field of ``Jet``, with ``Jet``'s padding), whatever
  its name; it reaches the collection through an alias define ``Jet_log_Jet_pt`` unless
  its name already starts with ``Jet_``. One filtered with ``[mask]`` has its own number
  of objects, so it becomes a collection of its own (``NAME`` with the field ``value``,
  padded like its source). A jagged ``new_branch`` that mixes two collections is refused;
  one that gives a value per event (``sum(Jet_pt)``, or built from flat branches only) is
  a scalar feature, whatever its ``type`` says.

Every expression is checked with the safe parser; nothing from the old files is executed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak

from mlaas4hep.data.inputs import classify
from mlaas4hep.data.schema import inspect_tree
from mlaas4hep.data.sources import resolve_files
from mlaas4hep.data.stream import stream
from mlaas4hep.errors import DataSourceError, ExpressionError, SpecError
from mlaas4hep.preprocess.expr import Expr, Mask, parse, walk
from mlaas4hep.preprocess.typecheck import Type, check
from mlaas4hep.spec import DatasetSpec, DataSpec, PipelineSpec, validate_spec

DEFAULT_LENGTH = 10


@dataclass(frozen=True)
class LegacySchema:
    """What the converter needs to know about the branches (from the data layer)."""

    names: tuple[str, ...]
    jagged: frozenset[str] = frozenset()
    max_counts: dict[str, int] = field(default_factory=dict)  # jagged branch -> max length
    # jagged branch -> its collection (``Jet_pt`` -> ``Jet``, the one ``nJet`` counts);
    # a jagged branch missing here falls back to the part of its name before the first '_'
    collections: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LegacyInputs:
    """The old workflow's inputs, already read from their files."""

    params: dict[str, Any]
    files: list[str]
    labels: list[str]
    preproc: dict[str, Any] | None = None
    model: str | None = None
    name: str = "legacy"


def convert(inputs: LegacyInputs, schema: LegacySchema) -> PipelineSpec:
    """Build a validated ``PipelineSpec`` from the old inputs; raises ``SpecError``."""
    params = inputs.params
    datasets = _datasets(inputs.files, inputs.labels)
    identifiers = _names(params.get("identifier", ["run", "event", "luminosityBlock"]))
    pre = _Preproc(schema, identifiers)
    pre.add_branches(params)
    if inputs.preproc:
        pre.add_preproc(inputs.preproc)
    nevts = int(params.get("nevts", -1) or -1)
    raw: dict[str, Any] = {
        "version": 1,
        "name": inputs.name,
        "description": "converted from MLaaS4HEP params.json/preproc.json by convert-legacy",
        "data": {
            "tree": params.get("branch") or None,
            "datasets": datasets,
            "identifiers": identifiers,
            "step_size": int(params.get("chunk_size", 100_000) or 100_000),
            "max_events": -(-nevts // len(datasets)) if nevts > 0 else None,
            "redirector": params.get("redirector") or None,
        },
        "preprocess": pre.section(),
        "train": {
            "epochs": int(params.get("epochs", 10) or 10),
            "batch_size": int(params.get("batch_size", 256) or 256),
        },
    }
    if inputs.model:
        raw["model"] = {"kind": "python", "module": inputs.model, "function": "model",
                        "framework": "keras"}  # fmt: skip
    return validate_spec(raw, origin="converted legacy spec")


def _names(value: Any) -> list[str]:
    """A list of branch names from a list, a comma-separated string or ''."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise SpecError(f"expected a list of branch names or a comma-separated string, got {value!r}")


def _datasets(files: Sequence[str], labels: Sequence[str]) -> list[dict[str, Any]]:
    if len(files) != len(labels):
        msg = (
            f"files.txt has {len(files)} file(s) but labels.txt has {len(labels)} label(s); "
            "they are matched line by line, so give one label per file"
        )
        raise SpecError(msg)
    if not files:
        raise SpecError("files.txt lists no files")
    groups: dict[int, list[str]] = {}
    for f, lab in zip(files, labels, strict=True):
        try:
            value = int(float(lab))
        except ValueError as exc:
            raise SpecError(f"label {lab!r} (for {f!r}) is not a number") from exc
        groups.setdefault(value, []).append(f)
    names = {0: "background", 1: "signal"}
    return [
        {"name": names.get(v, f"class{v}"), "files": fs, "label": v}
        for v, fs in sorted(groups.items())
    ]


class _Preproc:
    """Accumulates the preprocess section while reading params.json and preproc.json."""

    def __init__(self, schema: LegacySchema, identifiers: list[str]) -> None:
        self.schema = schema
        self.identifiers = identifiers
        self.features: list[str] = []  # columns, flat or jagged
        self.jagged: set[str] = set(schema.jagged)
        self.define: dict[str, str] = {}
        self.cuts: list[str] = []
        self.removed: set[str] = set()
        # jagged new_branch -> (its collection, or None when it is one of its own; its length)
        self.derived: dict[str, tuple[str | None, int]] = {}

    def add_branches(self, params: Mapping[str, Any]) -> None:
        selected = _names(params.get("selected_branches", ""))
        excluded = set(_names(params.get("exclude_branches", "")))
        unknown = [b for b in [*selected, *excluded] if b not in self.schema.names]
        if unknown:
            msg = f"params.json names branches that are not in the tree: {unknown!r}"
            raise SpecError(msg)
        pool = selected or list(self.schema.names)
        self.features = [b for b in pool if b not in excluded and b not in self.identifiers]

    def add_preproc(self, preproc: Mapping[str, Any]) -> None:
        unknown = set(preproc) - {"new_branch", "flat_cut", "jagged_cut"}
        if unknown:
            msg = f"preproc.json has unknown sections {sorted(unknown)!r}"
            raise SpecError(msg + "; known: 'new_branch', 'flat_cut', 'jagged_cut'")
        for name, entry in preproc.get("new_branch", {}).items():
            self._new_branch(name, entry)
        for section in ("flat_cut", "jagged_cut"):
            for branch, entry in preproc.get(section, {}).items():
                self.cuts.append(_cut(entry.get("cut"), f"preproc.json {section}.{branch}"))
                if _true(entry.get("remove", "False")):
                    self.removed.add(branch)

    def _new_branch(self, name: str, entry: Mapping[str, Any]) -> None:
        where = f"preproc.json new_branch.{name}"
        expr = re.sub(r"\b(?:np|numpy)\.", "", str(entry.get("def", "")))
        _check(expr, where + ".def")
        self.define[name] = expr
        if entry.get("type", "flat") == "jagged":
            self._derived_jagged(name, expr, where + ".def")
        for key in sorted(k for k in entry if re.fullmatch(r"cut_\d+", k)):
            self.cuts.append(_cut(entry[key], f"{where}.{key}"))
        if not _true(entry.get("remove", "False")):
            self.features.append(name)
        self.removed.update(entry.get("keys_to_remove", []) or [])

    def _derived_jagged(self, name: str, expr: str, where: str) -> None:
        """Record the collection and length of a jagged new branch (from what it reads)."""
        parsed = parse(expr)
        sources = sorted(n for n in parsed.names() if n in self.jagged)
        if not sources or not self._per_object(parsed):  # one value per event after all
            return
        self.jagged.add(name)
        colls = {self._collection(n) for n in sources}
        if len(colls) > 1:
            shown = ", ".join(sorted(repr(c or "?") for c in colls))
            msg = (
                f"{where}: {expr!r} mixes the objects of several collections ({shown}); "
                "a jagged new branch must be computed from one collection, e.g. "
                "'log(Jet_pt)'; reduce the other one first (sum(), first(), ...)"
            )
            raise SpecError(msg)
        length = max(self._length(n) for n in sources)
        # A mask keeps only some objects: no longer the collection's count, a list of its own.
        filtered = any(isinstance(node, Mask) for node in walk(parsed.root))
        self.derived[name] = (None if filtered else colls.pop(), length)

    def _per_object(self, parsed: Expr) -> bool:
        """False when *parsed* surely gives one value per event (``sum(Jet_pt)``)."""
        types = {
            n: Type("object" if n in self.jagged else "event", "float") for n in parsed.names()
        }
        try:
            return check(parsed, types).kind == "object"
        except ExpressionError:  # the real dtypes are not known here (a bool branch): keep it
            return True

    def _collection(self, column: str) -> str | None:
        """The collection of a jagged column; None when it is a collection of its own."""
        if column in self.derived:
            return self.derived[column][0]
        coll = self.schema.collections.get(column)
        if coll is None and "_" in column:
            coll = column.split("_", 1)[0]
        return coll

    def _length(self, column: str) -> int:
        if column in self.derived:
            return self.derived[column][1]
        return self.schema.max_counts.get(column, DEFAULT_LENGTH)

    def _object_field(self, column: str) -> tuple[str, str]:
        """(collection, field) of a jagged feature column; adds an alias define if needed."""
        coll = self._collection(column)
        if coll is None:  # a collection of its own: alias it so it has a field name
            coll, fld = column, "value"
        elif column.startswith(coll + "_") and len(column) > len(coll) + 1:
            return coll, column[len(coll) + 1 :]
        else:  # a derived branch named otherwise ('log_Jet_pt'): reach it as Jet_log_Jet_pt
            fld = column
        alias = f"{coll}_{fld}"
        if alias in self.schema.names or self.define.get(alias, column) != column:
            msg = (
                f"cannot add the jagged column {column!r} to the object features of {coll!r}: "
                f"its alias {alias!r} is already a branch or a new_branch; rename the new_branch"
            )
            raise SpecError(msg)
        self.define[alias] = column
        return coll, fld

    def section(self) -> dict[str, Any]:
        kept = [f for f in self.features if f not in self.removed]
        scalars = [f for f in kept if f not in self.jagged]
        objects: dict[str, dict[str, Any]] = {}
        for f in (f for f in kept if f in self.jagged):
            coll, fld = self._object_field(f)
            obj = objects.setdefault(coll, {"fields": [], "length": 1, "pad": 0.0})
            obj["fields"].append(fld)
            obj["length"] = max(obj["length"], min(max(self._length(f), 1), 1000))
        return {
            "define": self.define,
            "cuts": self.cuts,
            "features": {"scalars": scalars, "objects": objects},
            "normalize": "minmax",
        }


def _true(value: Any) -> bool:
    return str(value).strip().lower() == "true"


def _cut(value: Any, where: str) -> str:
    """A legacy cut (``"1<=x<=4"`` or ``["x<2.4", "all"]``) as an expression."""
    if isinstance(value, str):
        text = value
    elif (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and value[1] in ("all", "any")
    ):
        text = f"{value[1]}({value[0]})"
    else:
        msg = f"{where}: a cut is a comparison string or [comparison, 'all'|'any'], got {value!r}"
        raise SpecError(msg)
    _check(text, where)
    return text


def _check(text: str, where: str) -> None:
    try:
        parse(text)
    except ExpressionError as exc:
        raise SpecError(f"{where}: {exc}") from exc


def read_inputs(
    params: Path, files: Path, labels: Path, preproc: Path | None = None, model: Path | None = None
) -> LegacyInputs:
    """Read the old input files (JSON and one-entry-per-line lists); raises ``SpecError``."""
    return LegacyInputs(
        params=_json(params),
        files=[_relative_to(entry, files.parent) for entry in _lines(files)],
        labels=_lines(labels),
        preproc=_json(preproc) if preproc else None,
        model=str(model) if model else None,
        name=re.sub(r"[^A-Za-z0-9_.+-]", "-", params.resolve().parent.name or "legacy") or "legacy",
    )


def _relative_to(entry: str, directory: Path) -> str:
    """A relative local path or glob of a file list, relative to the list's *directory*.

    URLs, absolute paths, ``~`` paths and ``/store/`` names are returned unchanged (an
    unsupported scheme too: reading the file reports it). The result stays relative when
    *directory* is, and is normalised (``lists/../data/a.root`` -> ``data/a.root``).
    """
    try:
        kind = classify(entry, allow_lists=False).kind
    except DataSourceError:
        return entry
    if kind not in ("local", "glob") or os.path.isabs(entry) or entry.startswith("~"):
        return entry
    return os.path.normpath(os.path.join(directory, entry))


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SpecError(f"{str(path)!r} does not exist; check the path") from exc
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read {str(path)!r} as JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise SpecError(f"{str(path)!r} must hold a JSON object, got {type(value).__name__}")
    return value


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read {str(path)!r}: {exc}") from exc
    return [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]


def schema_from_data(
    inputs: LegacyInputs, *, scan_events: int = 10_000, length: int | None = None
) -> LegacySchema:
    """Branch names, flat/jagged kinds and the largest multiplicities from the first file.

    The multiplicities come from the first *scan_events* events of every dataset (0: do
    not read data, use *length* or ``DEFAULT_LENGTH``); *length* overrides them all.
    """
    data = DataSpec(
        tree=inputs.params.get("branch") or None,
        datasets=[DatasetSpec(**d) for d in _datasets(inputs.files, inputs.labels)],
        identifiers=[],
        redirector=inputs.params.get("redirector") or None,
        max_events=max(scan_events, 1),
        step_size=max(scan_events, 1),
    )
    first = resolve_files(data.datasets[0].files, redirector=data.redirector)[0]
    tree = inspect_tree(first, data.tree)
    jagged = {b.name: b for b in tree.branches if b.kind == "jagged"}
    counts = dict.fromkeys(jagged, length or DEFAULT_LENGTH)
    if length is None and scan_events > 0 and jagged:
        counts = _max_counts(data, list(jagged))
    collections = {n: b.collection for n, b in jagged.items() if b.collection}
    return LegacySchema(tuple(tree.names()), frozenset(jagged), counts, collections)


def _max_counts(data: DataSpec, jagged: list[str]) -> dict[str, int]:
    out = dict.fromkeys(jagged, 0)
    for chunk in stream(data, jagged):
        for name in jagged:
            n = ak.num(chunk.arrays[name], axis=1)
            out[name] = max(out[name], int(ak.max(n)) if len(n) else 0)
    return out
