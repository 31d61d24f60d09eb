"""What a tree holds: branches, their types, flat vs jagged, sizes.

``inspect_tree`` reads only metadata (no baskets), so it is fast on any file size. The
``collection`` of a branch follows the NanoAOD convention: ``Jet_pt`` and its counter
``nJet`` both belong to collection ``"Jet"``; flat branches such as ``MET_pt`` have none.
RNTuples are described the same way (``Jet_pt`` for the field ``pt`` of the record list
``Jet``) so the rest of the pipeline does not care which one it reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from mlaas4hep.data.sources import corrupt_file_error, open_tree
from mlaas4hep.errors import BranchNotFoundError, NotRootFileError, closest

Kind = Literal["flat", "jagged", "counter", "other"]


@dataclass(frozen=True)
class BranchInfo:
    """One branch: name, element dtype (e.g. ``float32``), kind and collection."""

    name: str
    dtype: str
    kind: Kind
    collection: str | None
    compressed_bytes: int
    uncompressed_bytes: int


@dataclass(frozen=True)
class TreeSchema:
    """The branches of one tree in one file, in file order."""

    path: str
    tree: str
    entries: int
    branches: tuple[BranchInfo, ...]

    def names(self) -> list[str]:
        """Branch names in file order."""
        return [b.name for b in self.branches]

    def branch(self, name: str) -> BranchInfo:
        """The branch called ``name``; ``BranchNotFoundError`` with the closest names."""
        for b in self.branches:
            if b.name == name:
                return b
        msg = f"no branch {name!r} in tree {self.tree!r} of {self.path!r}; "
        raise BranchNotFoundError(msg + closest(name, self.names()))

    def require(self, names: Iterable[str]) -> None:
        """Raise ``BranchNotFoundError`` for the first of ``names`` missing from the tree."""
        have = set(self.names())
        missing = [n for n in names if n not in have]
        if missing:
            hints = "; ".join(f"{m!r}: {closest(m, have)}" for m in missing)
            msg = f"missing branches in tree {self.tree!r} of {self.path!r}: {hints}"
            raise BranchNotFoundError(msg)

    def collections(self) -> dict[str, list[str]]:
        """Collection name -> its jagged branches (``{"Jet": ["Jet_pt", ...]}``)."""
        out: dict[str, list[str]] = {}
        for b in self.branches:
            if b.kind == "jagged" and b.collection:
                out.setdefault(b.collection, []).append(b.name)
        return out

    @property
    def compressed_bytes(self) -> int:
        return sum(b.compressed_bytes for b in self.branches)

    @property
    def uncompressed_bytes(self) -> int:
        return sum(b.uncompressed_bytes for b in self.branches)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``mlaas4hep inspect --json`` prints)."""
        return asdict(self)


def inspect_tree(path: str, tree: str | None = None) -> TreeSchema:
    """Describe the tree ``tree`` (default: the only one) of ``path`` without reading data.

    Raises the errors of ``open_tree``.
    """
    with open_tree(path, tree) as obj:
        try:
            branches = rntuple_branches(obj) if is_rntuple(obj) else _ttree_branches(obj)
        # Branch metadata is deserialized lazily: a damaged file fails here in many ways.
        except Exception as exc:
            raise corrupt_file_error(path, exc, "reading the branch list") from exc
        if not branches:  # seen with damaged metadata; no pipeline can use such a tree
            msg = (
                f"{path!r}: tree {obj.name!r} lists no branches, so there is nothing to read; "
                "the file is damaged or was written empty: copy or regenerate it"
            )
            raise NotRootFileError(msg)
        return TreeSchema(path, obj.name, int(obj.num_entries), tuple(branches))


def is_rntuple(obj: Any) -> bool:
    """True when ``obj`` (from ``open_tree``) is an RNTuple rather than a TTree."""
    return "RNTuple" in type(obj).__name__


def _ttree_branches(tree: Any) -> list[BranchInfo]:
    counters = {
        b.count_branch.name: b.name for b in tree.itervalues() if b.count_branch is not None
    }
    out = []
    for b in tree.itervalues(recursive=True):
        kind, dtype = _ttree_kind(b, b.name in counters)
        collection = _collection(b.name, kind, counters.get(b.name))
        out.append(
            BranchInfo(b.name, dtype, kind, collection, b.compressed_bytes, b.uncompressed_bytes)
        )
    return out


def _ttree_kind(branch: Any, is_counter: bool) -> tuple[Kind, str]:
    import uproot  # deferred: only needed for the isinstance checks

    interp = branch.interpretation
    if isinstance(interp, uproot.AsDtype) and interp.inner_shape == ():
        return ("counter" if is_counter else "flat"), str(interp.to_dtype)
    if isinstance(interp, uproot.AsJagged) and isinstance(interp.content, uproot.AsDtype):
        return "jagged", str(interp.content.to_dtype)
    return "other", branch.typename


def _collection(name: str, kind: Kind, counted_member: str | None) -> str | None:
    if kind == "counter" and counted_member is not None and "_" in counted_member:
        return counted_member.split("_", 1)[0]
    if kind == "jagged" and "_" in name:
        return name.split("_", 1)[0]
    return None


def rntuple_branches(ntuple: Any) -> list[BranchInfo]:
    """Flatten RNTuple fields into NanoAOD-style names (``Jet.pt`` -> ``Jet_pt``, + ``nJet``).

    Per-field sizes are not attributed for RNTuples (reported as 0).
    """
    top = ntuple.to_akform()[0]
    out = []
    for name, form in zip(top.fields, top.contents, strict=True):
        out.extend(_rntuple_field(name, form))
    return out


def _rntuple_field(name: str, form: Any) -> list[BranchInfo]:
    kind = type(form).__name__
    if kind == "NumpyForm":
        return [BranchInfo(name, form.primitive, "flat", None, 0, 0)]
    if kind in ("ListOffsetForm", "ListForm"):
        content = form.content
        if type(content).__name__ == "RecordForm":
            return [BranchInfo(f"n{name}", "int32", "counter", name, 0, 0)] + [
                BranchInfo(f"{name}_{sub}", _prim(sub_form), "jagged", name, 0, 0)
                for sub, sub_form in zip(content.fields, content.contents, strict=True)
            ]
        if type(content).__name__ == "NumpyForm":
            return [BranchInfo(name, content.primitive, "jagged", None, 0, 0)]
    return [BranchInfo(name, str(form.type), "other", None, 0, 0)]


def _prim(form: Any) -> str:
    return str(form.primitive) if type(form).__name__ == "NumpyForm" else str(form.type)
