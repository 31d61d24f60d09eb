"""MLP training throughput: streaming from ROOT vs preloaded in-memory tensors, same run.

Both sides train the same MLP (same spec, seed, batches and shuffling) for the same number
of epochs; only the data path differs:

* ``stream``: as ``mlaas4hep run`` does it: the first epoch reads the ROOT files through
  the ``Preprocessor`` (uproot chunks -> defines, cuts, objects -> feature batches),
  prefetched in a background thread while the model trains, and writes the feature batches
  to the on-disk feature cache; later epochs read that cache (``train/feature_cache.py``);
* ``memory``: the same feature batches, materialised once in memory beforehand (the
  baseline: what training costs without any I/O).

Prints one JSON object (last line with ``--json``): events/s of both,
``ratio = stream / memory`` over all epochs (target >= 0.8) and ``first_epoch_ratio``
(epoch 1 alone: pure streaming from ROOT). ``--smoke`` is a tiny run for CI.

``--device cuda`` trains on a GPU (``--amp bf16|fp16``: mixed precision) and also reports
``onnx_max_abs_diff``, the exported graph (ONNX Runtime, CPU) against the trained model
on the GPU over the test split (must stay < 1e-4). Without CUDA it says so on stderr and in
the JSON (``cuda_available: false``) and measures the CPU path instead.
``bench/train_sets.py`` runs the same measurement for the set-based models.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep import artifact
from mlaas4hep.data.samples import write_sample_set
from mlaas4hep.preprocess.pipeline import FeatureBatch, FeatureInfo, Preprocessor
from mlaas4hep.spec import PipelineSpec, load_spec
from mlaas4hep.train.engine import Engine, EngineContext, create_engine
from mlaas4hep.train.export import export_onnx, input_blocks, session
from mlaas4hep.train.feature_cache import CachingSource
from mlaas4hep.train.run import DEFAULT_FEATURE_CACHE_BYTES
from mlaas4hep.train.stream import BatchSource, EpochBatches

MLP = {"kind": "mlp", "hidden": [128, 64]}
JETS = {"fields": ["pt", "eta", "btagDeepB"], "length": 4}


def make_spec(
    data: Path,
    step: int,
    device: str,
    epochs: int,
    model: dict[str, Any] | None = None,
    jets: dict[str, Any] | None = None,
    amp: str | bool = False,
) -> PipelineSpec:
    return load_spec(
        {
            "name": "bench-train",
            "data": {
                "tree": "Events",
                "step_size": step,
                "datasets": [
                    {"name": "ttH", "files": [str(data / "signal.root")], "label": 1},
                    {"name": "QCD", "files": [str(data / "background.root")], "label": 0},
                ],
            },
            "preprocess": {
                "define": {
                    "HT": "sum(Jet_pt[Jet_pt > 30])",
                    "nGoodJet": "count(Jet_pt[(Jet_pt > 30) & (abs(Jet_eta) < 2.4)])",
                },
                "cuts": ["nGoodJet >= 2"],
                "features": {
                    "scalars": ["MET_pt", "HT", "nGoodJet"],
                    "objects": {"Jet": jets or JETS},
                },
            },
            "model": model or MLP,
            "train": {
                "epochs": epochs, "batch_size": 1024, "device": device, "seed": 1,
                "shuffle_buffer": 2 * step, "amp": amp,
            },
        }
    )  # fmt: skip


@dataclass
class MemorySource:
    """The train batches of a ``Preprocessor``, materialised once (the baseline)."""

    chunks: list[FeatureBatch]

    def batches(
        self, split: Any = None, *, shuffle: bool = False, seed: int = 0
    ) -> Iterator[FeatureBatch]:
        order = np.random.default_rng(seed).permutation(len(self.chunks)) if shuffle else None
        for i in order if order is not None else range(len(self.chunks)):
            yield self.chunks[int(i)]


def train_rates(
    spec: PipelineSpec, info: FeatureInfo, source: BatchSource, work: Path
) -> tuple[float, float, Engine]:
    """Events per second of training on ``source``: (all epochs, first epoch, engine)."""
    ctx = EngineContext(info, spec.model, spec.train, work, features=spec.preprocess.features)
    engine = create_engine(ctx)
    events = 0

    def count(n: int) -> None:
        nonlocal events
        events += n

    start = time.perf_counter()
    first = 0.0
    for epoch in range(spec.train.epochs):
        batches = EpochBatches(source, info.names, epoch, spec.train.seed)
        engine.train_epoch(batches, epoch, count)
        if epoch == 0:
            _sync(engine)
            first = events / (time.perf_counter() - start)
    _sync(engine)
    return events / (time.perf_counter() - start), first, engine


def _sync(engine: Engine) -> None:
    """Wait for the GPU's queued work, so that the clock measures it."""
    import torch

    if getattr(getattr(engine, "device", None), "type", "cpu") == "cuda":
        torch.cuda.synchronize()


def onnx_parity(engine: Engine, pre: Preprocessor, info: FeatureInfo, work: Path) -> float:
    """Max |ONNX Runtime - native| over the test split (native on the training device)."""
    path = work / "model.onnx"
    export_onnx(engine, path, info, {})
    sess, blocks, worst = session(path), input_blocks(engine), 0.0
    for batch in pre.batches("test"):
        if len(batch.y):
            (scores,) = sess.run(
                [artifact.OUTPUT_TENSOR], artifact.onnx_feeds(batch.X, info.names, blocks)
            )
            worst = max(worst, float(np.max(np.abs(scores - engine.predict(batch.X)))))
    return worst


def run(
    events: int,
    epochs: int,
    step: int,
    device: str,
    repeat: int,
    build: Any = make_spec,
) -> dict[str, Any]:
    """The measurement; *build* makes the spec (``make_spec``'s signature)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_sample_set(work / "data", events, seed=3)
        spec = build(work / "data", step, device, epochs)
        pre = Preprocessor(spec, cache_dir=work / "cache")
        t0 = time.perf_counter()
        info = pre.fit()
        fit_s = time.perf_counter() - t0
        memory = MemorySource(list(pre.batches("train", shuffle=True, seed=0)))
        n_train = sum(len(b.y) for b in memory.chunks)
        # Baseline first, then streaming; a warm-up epoch on memory absorbs one-off costs
        # (torch kernels, allocator) that would otherwise penalise whichever side goes first.
        warm = build(work / "data", step, device, 1)
        train_rates(warm, info, memory, work)
        # Interleaved repeats, medians: the machine may be shared and noisy.
        rates = []
        for i in range(repeat):
            mem_rate, mem_first, engine = train_rates(spec, info, memory, work)
            # As ``mlaas4hep run`` streams: epoch 1 from ROOT, later epochs from the cache.
            stream = CachingSource(pre, work / f"features-{i}", DEFAULT_FEATURE_CACHE_BYTES)
            stream_rate, stream_first, _ = train_rates(spec, info, stream, work)
            rates.append((mem_rate, stream_rate, mem_first, stream_first))
        parity = onnx_parity(engine, pre, info, work)
        mem_rate, stream_rate, mem_first, stream_first = np.median(np.array(rates), axis=0)
        ratios = np.median([(r[1] / r[0], r[3] / r[2]) for r in rates], axis=0)
    return {
        "bench": "train",
        "model": spec.model.kind,
        "device": device,
        "amp": spec.train.amp,
        "events_per_file": events,
        "train_events": n_train,
        "epochs": epochs,
        "features": len(info.names),
        "threads": _threads(),
        "first_pass_s": round(fit_s, 3),
        "memory_events_per_s": round(float(mem_rate), 1),
        "stream_events_per_s": round(float(stream_rate), 1),
        "repeats": repeat,
        "ratio": round(float(ratios[0]), 3),
        # epoch 1 alone: every event read and preprocessed from ROOT while training
        "first_epoch_ratio": round(float(ratios[1]), 3),
        "target": 0.8,
        "onnx_max_abs_diff": parity,
        "onnx_parity_ok": parity < 1e-4,
    }


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def parser(description: str) -> argparse.ArgumentParser:
    """The command line shared with ``train_sets.py``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--smoke", action="store_true", help="tiny run (CI)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"], help="on CUDA")
    p.add_argument("--events", type=int, default=200_000, help="events per sample file")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--repeat", type=int, default=3, help="interleaved repeats (median)")
    return p


def measure(args: argparse.Namespace, build: Any, **extra: Any) -> int:
    """Run the measurement the arguments ask for; print its JSON object."""
    import torch

    device, cuda = args.device, torch.cuda.is_available()
    if device == "cuda" and not cuda:
        print("no CUDA device here: measuring the CPU path instead", file=sys.stderr)
        device = "cpu"
    events, epochs, repeat = (
        (4_000, 2, 1) if args.smoke else (args.events, args.epochs, args.repeat)
    )
    step = min(100_000, max(1_000, events // 4))
    amp = False if args.amp == "off" else args.amp

    def spec(data: Path, step: int, device: str, epochs: int) -> PipelineSpec:
        return build(data, step, device, epochs, amp=amp)

    result = run(events, epochs, step, device, repeat, spec)
    result |= {"requested_device": args.device, "cuda_available": cuda, **extra}
    if not args.json:
        print(f"pid {os.getpid()}: streaming/in-memory = {result['ratio']}", file=sys.stderr)
    print(json.dumps(result))
    return 0 if result["onnx_parity_ok"] else 1


def main(argv: list[str] | None = None) -> int:
    return measure(parser(__doc__.splitlines()[0]).parse_args(argv), make_spec)


if __name__ == "__main__":
    sys.exit(main())
