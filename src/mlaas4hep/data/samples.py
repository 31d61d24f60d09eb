"""NanoAOD-like sample files for the demo, the tests and the benchmarks.

``write_sample`` writes one ROOT file with a TTree ``Events`` laid out like CMS NanoAOD
(``run``, ``luminosityBlock``, ``event``, ``MET_*``, ``nJet`` + ``Jet_*``, ``nMuon`` +
``Muon_*``, ``nElectron`` + ``Electron_*``, ``genWeight``), ZSTD-compressed, one large
basket per branch per ``basket_entries`` events. It is generated and written chunk by chunk,
so memory stays bounded whatever ``events`` is.

The physics is a toy, tuned so that a classifier can learn but not trivially: the signal is
ttH-like (more jets, more b-tagged jets, harder spectrum, more leptons), the background a
mix of QCD-like and ttbar-like events; a good classifier reaches an AUC of about 0.85-0.9.
Content is a pure function of ``(kind, events, seed, basket_entries)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import awkward as ak
import numpy as np
import uproot

from mlaas4hep.errors import SpecError

Kind = Literal["signal", "background"]
KINDS: tuple[Kind, ...] = ("signal", "background")
TREE = "Events"
DEFAULT_BASKET_ENTRIES = 200_000
# The event number encodes the kind in its lowest bit and the seed in its high bits, so
# signal and background never share an identifier and neither do files of different seeds.
_SEED_SHIFT = 40


@dataclass(frozen=True)
class _Process:
    """Parameters of one toy physics process."""

    jet_mean: float  # Poisson mean of the jet multiplicity
    jet_pt_scale: float  # GeV, exponential slope above the 20 GeV threshold
    b_fraction: float  # probability that a jet is a b jet
    eta_sigma: float
    lepton_mean: float  # Poisson mean of muons (electrons: 0.8x)
    met_scale: float  # GeV


_SIGNAL = (_Process(6.2, 55.0, 0.45, 1.2, 0.5, 50.0),)
# Background: half QCD-like, half ttbar-like.
_BACKGROUND = (
    _Process(3.0, 32.0, 0.06, 1.5, 0.10, 25.0),
    _Process(4.6, 45.0, 0.30, 1.3, 0.40, 40.0),
)


def write_sample(
    path: str | Path,
    kind: Kind,
    events: int,
    seed: int = 0,
    *,
    basket_entries: int = DEFAULT_BASKET_ENTRIES,
    compression_level: int = 3,
) -> Path:
    """Write ``events`` NanoAOD-like events of ``kind`` to ``path`` and return the path.

    The file is written under a temporary name and renamed when complete, so a reader never
    sees half a file. ``events=0`` writes the tree with no entries (empty inputs exist:
    a skim that kept nothing). Raises ``SpecError`` for an unknown kind or bad sizes.
    """
    if kind not in KINDS:
        msg = f"unknown sample kind {kind!r}; use one of {', '.join(map(repr, KINDS))}"
        raise SpecError(msg)
    if events < 0 or basket_entries < 1 or seed < 0:
        msg = (
            f"basket_entries ({basket_entries!r}) must be >= 1, events ({events!r}) "
            f"and seed ({seed!r}) >= 0"
        )
        raise SpecError(msg)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with uproot.recreate(tmp, compression=uproot.ZSTD(compression_level)) as out:
            tree = None
            for chunk in _chunks(kind, events, seed, basket_entries):
                # mktree, not out[TREE] = chunk: assigning awkward arrays makes an RNTuple.
                if tree is None:
                    tree = out.mktree(TREE, _branch_types(chunk))
                tree.extend(chunk)
            if tree is None:  # no entries: the branches of a one-event chunk, no baskets
                out.mktree(TREE, _branch_types(next(_chunks(kind, 1, seed, 1))))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_sample_set(outdir: str | Path, events: int, seed: int = 0) -> dict[str, Path]:
    """Write ``signal.root`` and ``background.root`` (``events`` each) under ``outdir``."""
    outdir = Path(outdir)
    return {
        kind: write_sample(outdir / f"{kind}.root", kind, events, seed=seed + i)
        for i, kind in enumerate(KINDS)
    }


def _branch_types(chunk: dict[str, Any]) -> dict[str, Any]:
    # A jagged record under "Jet" becomes nJet + Jet_pt, Jet_eta, ... (NanoAOD names).
    return {k: v.type.content if isinstance(v, ak.Array) else v.dtype for k, v in chunk.items()}


def _chunks(kind: Kind, events: int, seed: int, size: int) -> Iterator[dict[str, Any]]:
    kind_bit = KINDS.index(kind)
    processes = _SIGNAL if kind == "signal" else _BACKGROUND
    for index, start in enumerate(range(0, events, size)):
        n = min(size, events - start)
        rng = np.random.default_rng([seed, kind_bit, index])
        which = rng.integers(0, len(processes), n)
        params = {
            f: np.array([getattr(p, f) for p in processes])[which]
            for f in _Process.__dataclass_fields__
        }
        ids = np.arange(start, start + n, dtype=np.uint64)
        chunk: dict[str, Any] = {
            "run": np.ones(n, dtype=np.uint32),
            "luminosityBlock": (ids // 1000 + 1).astype(np.uint32),
            "event": (np.uint64(seed) << np.uint64(_SEED_SHIFT)) + 2 * ids + kind_bit + 1,
        }
        met = rng.exponential(params["met_scale"]) + rng.exponential(10.0, n)
        chunk["MET_pt"] = met.astype(np.float32)
        chunk["MET_phi"] = rng.uniform(-np.pi, np.pi, n).astype(np.float32)
        chunk["Jet"] = _jets(rng, params)
        chunk["Muon"] = _leptons(rng, params["lepton_mean"], with_charge=True)
        chunk["Electron"] = _leptons(rng, 0.8 * params["lepton_mean"], with_charge=False)
        sign = np.where(rng.random(n) < 0.02, -1.0, 1.0)
        chunk["genWeight"] = (sign * (0.5 if kind == "signal" else 1.0)).astype(np.float32)
        yield chunk


def _sorted_by_pt(counts: np.ndarray, pt: np.ndarray) -> np.ndarray:
    """Permutation that orders objects by decreasing pt within each event (NanoAOD order)."""
    owner = np.repeat(np.arange(len(counts)), counts)
    return np.lexsort((-pt, owner))


def _jets(rng: np.random.Generator, p: dict[str, np.ndarray]) -> ak.Array:
    counts = np.minimum(rng.poisson(p["jet_mean"]), 20)
    per_jet = {k: np.repeat(v, counts) for k, v in p.items()}
    total = int(counts.sum())
    pt = 20.0 + rng.exponential(per_jet["jet_pt_scale"])
    is_b = rng.random(total) < per_jet["b_fraction"]
    btag = np.where(is_b, rng.beta(4.0, 1.5, total), rng.beta(0.6, 6.0, total))
    fields = {
        "pt": pt,
        "eta": np.clip(rng.normal(0.0, per_jet["eta_sigma"]), -4.7, 4.7),
        "phi": rng.uniform(-np.pi, np.pi, total),
        "mass": pt * rng.uniform(0.05, 0.2, total),
        "btagDeepB": btag,
    }
    order = _sorted_by_pt(counts, pt)
    return _zip(counts, {k: v[order].astype(np.float32) for k, v in fields.items()})


def _leptons(rng: np.random.Generator, mean: np.ndarray, *, with_charge: bool) -> ak.Array:
    counts = np.minimum(rng.poisson(mean), 6)
    total = int(counts.sum())
    pt = 10.0 + rng.exponential(25.0, total)
    fields: dict[str, np.ndarray] = {
        "pt": pt.astype(np.float32),
        "eta": rng.uniform(-2.4, 2.4, total).astype(np.float32),
        "phi": rng.uniform(-np.pi, np.pi, total).astype(np.float32),
    }
    if with_charge:
        fields["charge"] = rng.choice(np.array([-1, 1], dtype=np.int32), total)
    order = _sorted_by_pt(counts, pt)
    return _zip(counts, {k: v[order] for k, v in fields.items()})


def _zip(counts: np.ndarray, fields: dict[str, np.ndarray]) -> ak.Array:
    return ak.unflatten(ak.zip(fields), counts.astype(np.int64))
