"""Accumulators of the first pass: feature statistics, cut flow, counts, class weights."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlaas4hep.preprocess.cutflow import cutflow_rows
from mlaas4hep.preprocess.info import FeatureInfo
from mlaas4hep.preprocess.normalize import FeatureStats, offset_scale
from mlaas4hep.preprocess.program import ChunkResult, Program
from mlaas4hep.preprocess.reweight import ReweightPlan, class_totals
from mlaas4hep.preprocess.reweight_hist import ReweightHistograms
from mlaas4hep.preprocess.split import SPLIT_CODES, TRAIN


class Accumulator:
    """Sums of the first pass: feature stats, cut flow, counts, class weights."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.shipped_types: dict[str, str] = {}  # set when received from another process
        self.stats = FeatureStats(len(program.names))
        self.ncuts = len(program.cuts)
        self.flow: dict[str, np.ndarray[Any, Any]] = {}  # dataset -> [read, pass cut 1, ...]
        self.events: dict[str, dict[str, int]] = {}
        self.nonfinite: dict[str, int] = {}
        self.class_w = np.zeros(max(program.labels.n_classes, 2))
        # preprocess.reweight: histograms of the training events' weights (before balance)
        self.reweight = ReweightHistograms(program.reweighting or ReweightPlan((), False))

    def add(self, dataset: str, r: ChunkResult) -> None:
        """Add one processed chunk: its own sums, merged (the same path as a worker's)."""
        self.merge(self._of_chunk(dataset, r))

    def _of_chunk(self, dataset: str, r: ChunkResult) -> Accumulator:
        part = Accumulator(self.program)
        part.flow[dataset] = np.array((r.n_in, *r.passed), dtype=np.int64)
        ev = part.events[dataset] = dict.fromkeys(_EVENT_KEYS, 0)
        ev["read"] = r.n_in
        ev["passed"] = len(r.y)
        ev["dropped_nonfinite"] = r.dropped
        for name, code in SPLIT_CODES.items():
            ev[name] = int((r.split == code).sum())
        part.nonfinite = {k: int(v) for k, v in r.nonfinite.items()}
        train = r.split == TRAIN
        part.stats.update(r.X[train])
        if self.program.labels.task != "regression" and train.any():
            np.add.at(part.class_w, r.y[train].astype(np.int64), r.w[train].astype(np.float64))
        part.reweight.fill(r.columns, r.y, r.w, dataset, train)
        return part

    def merge(self, other: Accumulator) -> Accumulator:
        """Add *other* (a chunk's, a partition's, a worker's sums) exactly; returns self.

        Counts and the cut flow add as integers; the feature statistics merge with Chan
        et al.'s update. Merging per-partition results in partition order gives bit for
        bit what one process streaming the same chunks gives (``Preprocessor.fit``).
        """
        for ds, counts in other.flow.items():
            # one count per cut of that dataset: the global cuts, then its own
            mine = self.flow.setdefault(ds, np.zeros(len(counts), dtype=np.int64))
            mine += counts
        for ds, ev in other.events.items():
            acc = self.events.setdefault(ds, dict.fromkeys(_EVENT_KEYS, 0))
            for k, v in ev.items():
                acc[k] += v
        for k, n in other.nonfinite.items():
            self.nonfinite[k] = self.nonfinite.get(k, 0) + n
        self.stats.merge(other.stats)
        self.class_w = self.class_w + other.class_w
        self.reweight.merge(other.reweight)
        return self

    def __getstate__(self) -> dict[str, Any]:
        # Shipped between processes without the compiled program (the receiver has its own),
        # but with the input types it bound: the receiver may never see a chunk itself.
        state = {k: v for k, v in self.__dict__.items() if k != "program"}
        state["input_types"] = self.program.input_types() if self.program is not None else {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        types = state.pop("input_types", {})
        self.__dict__.update(state)
        self.program = None  # type: ignore[assignment]
        self.shipped_types = types

    def bound_types(self) -> dict[str, str]:
        """The input types the program that filled this accumulator bound."""
        return self.program.input_types() if self.program is not None else self.shipped_types

    def info(self) -> FeatureInfo:
        pre = self.program.spec.preprocess
        labels = self.program.labels
        offset, scale = offset_scale(self.stats, pre.normalize)
        class_weights: tuple[float, ...] = ()
        reweight = self.reweight.document()
        if pre.balance:
            cw = class_totals(self.class_w, reweight)  # balance sees the reweighted totals
            total, k = cw.sum(), int((cw > 0).sum())
            class_weights = tuple(float(total / (k * c)) if c > 0 else 1.0 for c in cw)
        return FeatureInfo(
            names=self.program.names,
            task=labels.task,
            n_classes=labels.n_classes,
            class_names=labels.class_names,
            normalize=pre.normalize,
            offset=offset,
            scale=scale,
            stats=self.stats.to_dict(self.program.names),
            cutflow=cutflow_rows(self.program.cuts, self.program.own_cuts, self.flow),
            events=self.events,
            class_weights=class_weights,
            nonfinite=self.nonfinite,
            reweight=reweight,
        )


_EVENT_KEYS = ("read", "passed", "dropped_nonfinite", "train", "validation", "test")
