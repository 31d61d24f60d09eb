"""Per-dataset steps: the defines, cuts and label one dataset's events go through.

A dataset's own ``define`` replaces the global define of the same name *in place* (so the
later global defines that use it see the dataset's version) and adds the other names
after the global defines, in their order; its own ``cuts`` come after the global cuts; its
own ``label`` expression gives its events' targets. Expressions are parsed once here; the
``Program`` runs them (``preprocess.program``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from mlaas4hep.errors import SpecError, closest
from mlaas4hep.preprocess.expr import Expr
from mlaas4hep.spec import DatasetSpec, PipelineSpec

Parse = Callable[[str, str], Expr]


@dataclass(frozen=True)
class DatasetSteps:
    """What a dataset adds to the global steps (nothing for most datasets).

    ``defines``: every define in evaluation order (the global ones with this dataset's
    overrides in place, then its additions); ``cuts``: its own cuts (after the global
    ones); ``label``: its own label expression; ``where``: the spec field of each of its
    own expressions, by ``id``.
    """

    name: str
    defines: Mapping[str, Expr]
    cuts: Sequence[tuple[str, Expr]] = ()
    label: Expr | None = None
    where: Mapping[int, str] = field(default_factory=dict)

    @property
    def own(self) -> bool:
        """True when the dataset has steps of its own (else it runs the global ones)."""
        return bool(self.where)

    def own_exprs(self) -> list[tuple[str, Expr]]:
        """This dataset's own expressions, with the spec field each comes from."""
        exprs = [*self.defines.values(), *(e for _, e in self.cuts)]
        exprs += [self.label] if self.label is not None else []
        return [(self.where[id(e)], e) for e in exprs if id(e) in self.where]

    def late(self) -> list[tuple[str, Expr]]:
        """Its own cuts, then its own label (evaluated after the defines)."""
        out = [(self.where[id(e)], e) for _, e in self.cuts]
        return out + ([(self.where[id(self.label)], self.label)] if self.label else [])


def dataset_steps(
    spec: PipelineSpec, defines: Mapping[str, Expr], parse: Parse, *, labels: bool
) -> dict[str, DatasetSteps]:
    """The steps of every dataset of *spec*, given the parsed global *defines*.

    *parse(text, where)* parses one expression; *labels*: parse label expressions too
    (training; applying needs none).
    """
    return {d.name: _steps(d, defines, parse, labels=labels) for d in spec.data.datasets}


def _steps(
    d: DatasetSpec, defines: Mapping[str, Expr], parse: Parse, *, labels: bool
) -> DatasetSteps:
    field_of = f"data.datasets[{d.name}]"
    where: dict[int, str] = {}

    def own(text: str, at: str) -> Expr:
        e = parse(text, at)
        where[id(e)] = at
        return e

    merged = dict(defines)  # an override keeps the global define's position
    for name, text in d.define.items():
        merged[name] = own(text, f"{field_of}.define.{name}")
    cuts = [(c.name, own(c.expr, f"{field_of}.cuts[{i}]")) for i, c in enumerate(d.cut_list())]
    label = own(d.label, f"{field_of}.label") if isinstance(d.label, str) and labels else None
    return DatasetSteps(d.name, merged if d.define else defines, cuts, label, where)


def global_steps(defines: Mapping[str, Expr]) -> DatasetSteps:
    """The global steps alone (what ``apply`` runs unless asked for a dataset's)."""
    return DatasetSteps("", defines)


def steps_for(
    steps: Mapping[str, DatasetSteps], dataset: str | None, defines: Mapping[str, Expr]
) -> DatasetSteps:
    """The steps of *dataset* (None: the global ones); ``SpecError`` for an unknown name."""
    if dataset is None:
        return global_steps(defines)
    if dataset not in steps:
        msg = (
            f"no dataset {dataset!r} in the model's spec ({closest(dataset, steps)}); "
            "give one of its data.datasets names, or none for the global preprocessing"
        )
        raise SpecError(msg)
    return steps[dataset]
