"""Set-based model training throughput: streaming from ROOT vs preloaded in memory.

``bench/train.py``'s measurement (same sample, cuts, seed, batches, epochs; epoch 1 streams
from ROOT through the ``Preprocessor`` and fills the feature cache, later epochs read it;
the baseline trains on the same batches materialised in RAM) with a set-based model over
the jets (``[batch, 6 jets, pt/eta/phi/mass/btag + mask]``) and the scalars:
``--model deepsets`` (default) or ``transformer`` (2 layers, pairwise ΔR and mass).

Prints one JSON object (last line with ``--json``): events/s of both, ``ratio = stream /
memory`` (target >= 0.8), ``first_epoch_ratio``, and the ONNX parity of the trained model.
``--smoke`` is a tiny run for CI (bench/smoke.py); ``--device cuda`` (``--amp bf16|fp16``)
on a GPU machine, which falls back to the CPU path, saying so, where there is none.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mlaas4hep.spec import PipelineSpec
from train import make_spec, measure, parser

MODELS: dict[str, dict[str, Any]] = {
    "deepsets": {"kind": "deepsets", "phi": [64, 64], "rho": [64, 32]},
    "transformer": {"kind": "transformer", "embed_dim": 32, "heads": 4, "layers": 2,
                    "pairwise": True},
}  # fmt: skip
JETS = {
    "fields": ["pt", "eta", "phi", "mass", "btagDeepB"],
    "sort_by": "pt",
    "length": 6,
    "mask": True,
}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="deepsets", choices=sorted(MODELS))
    args = p.parse_args(argv)
    model = MODELS[args.model]

    def build(data: Path, step: int, device: str, epochs: int, **kw: Any) -> PipelineSpec:
        return make_spec(data, step, device, epochs, model=model, jets=JETS, **kw)

    return measure(args, build, bench="train_sets")


if __name__ == "__main__":
    sys.exit(main())
