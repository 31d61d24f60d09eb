"""PyTorch engine of the set-based models: ``model.kind: deepsets`` and ``transformer``.

Training reads the flat feature matrix like every engine (streaming, the feature cache and
``apply`` are unchanged): ``FlatSets`` gathers each collection's columns into its
``[batch, objects, fields + 1]`` tensor (mask last) inside the model, exactly as
``artifact.onnx_feeds`` cuts a flat matrix for the exported graph, whose inputs are those
tensors (``set_inputs.input_blocks``). Everything else (loss, device, mixed precision,
checkpoints) is ``TorchEngine``'s. The networks are in ``sets_layers.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch import nn

from mlaas4hep.artifact import SCALARS_INPUT, InputBlock
from mlaas4hep.errors import TrainingError
from mlaas4hep.train import set_inputs
from mlaas4hep.train.sets_layers import DeepSets, HeadSpec, Norms, SetTransformer
from mlaas4hep.train.torch_mlp import ScoringModel, TorchEngine, export_module

if TYPE_CHECKING:
    from mlaas4hep.train.engine import EngineContext


class SetNet(nn.Module):
    """The set network on separate tensors: collections in order, then the scalars."""

    def __init__(self, net: nn.Module, n_collections: int) -> None:
        super().__init__()
        self.net = net
        self.n_collections = n_collections

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        objects = list(inputs[: self.n_collections])
        scalars = inputs[self.n_collections] if len(inputs) > self.n_collections else None
        out: torch.Tensor = self.net(objects, scalars)
        return out


class FlatSets(nn.Module):
    """``SetNet`` on the flat feature vector: each input gathered from its columns."""

    def __init__(self, net: SetNet, blocks: tuple[InputBlock, ...], names: tuple[str, ...]):
        super().__init__()
        self.sets = net
        where = {name: i for i, name in enumerate(names)}
        self.shapes = [b.shape for b in blocks]
        for i, block in enumerate(blocks):
            index = torch.tensor([where[f] for f in block.features], dtype=torch.long)
            self.register_buffer(f"index_{i}", index, persistent=False)

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        inputs = [
            flat[:, getattr(self, f"index_{i}")].reshape(-1, *shape)
            for i, shape in enumerate(self.shapes)
        ]
        out: torch.Tensor = self.sets(*inputs)
        return out


class ExportModel(nn.Module):
    """What goes to ONNX: the separate tensors -> network -> output activation."""

    def __init__(self, scoring: ScoringModel) -> None:
        super().__init__()
        self.scoring = scoring

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        flat = cast(FlatSets, self.scoring.net)
        return self.scoring.finish(flat.sets(*inputs))


class SetEngine(TorchEngine):
    """``TorchEngine`` with a Deep Sets or transformer network (module docstring)."""

    check_spec = staticmethod(set_inputs.check_spec)

    def __init__(self, ctx: EngineContext) -> None:
        if ctx.features is None:
            msg = f"model kind {ctx.model.kind!r} needs the spec's preprocess.features"
            raise TrainingError(msg)
        self.collections = set_inputs.collections(ctx.features)
        self.blocks = set_inputs.input_blocks(ctx.features)
        super().__init__(ctx)

    @property
    def input_blocks(self) -> tuple[InputBlock, ...]:
        """The exported graph's inputs (one per collection, then the scalars)."""
        return self.blocks

    def build_scoring(self, net: nn.Module, probs: bool) -> ScoringModel:
        # The networks normalise per field inside; the flat vector goes in as it is.
        n, task = self.ctx.n_inputs, self.ctx.info.task
        head = {"binary": "sigmoid", "multiclass": "softmax"}.get(task, "none")
        return ScoringModel(net, np.zeros(n), np.ones(n), head, probs)

    def build_network(self) -> tuple[nn.Module, bool]:
        m, info = self.ctx.model, self.ctx.info
        norms: Norms = []
        for c in self.collections:
            pairs = [
                set_inputs.field_offset_scale(
                    info, tuple(f"{c.name}_{f}_{i}" for i in range(c.length))
                )
                for f in c.fields
            ]
            norms.append((np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])))
        head = HeadSpec(self.ctx.n_outputs, m.rho, m.activation, m.dropout, m.pooling)
        scalars = self._scalar_norm()
        net: nn.Module
        if m.kind == "deepsets":
            net = DeepSets(self.collections, norms, scalars, m.phi, head)
        else:
            dims = (m.embed_dim, m.heads, m.layers, m.ff_dim)
            net = SetTransformer(self.collections, norms, scalars, dims, m.pairwise, head)
        sets = SetNet(net, len(self.collections))
        return FlatSets(sets, self.blocks, self.ctx.info.names), False

    def _scalar_norm(self) -> tuple[np.ndarray, np.ndarray] | None:
        block = next((b for b in self.blocks if b.name == SCALARS_INPUT), None)
        if block is None:
            return None
        info = self.ctx.info
        cols = [info.names.index(f) for f in block.features]
        return np.asarray(info.offset)[cols], np.asarray(info.scale)[cols]

    def export_onnx(self, path: Path) -> None:
        """The graph with one input per collection (and ``scalars``), see ``set_inputs``."""
        try:
            model = ExportModel(self.model.to("cpu").eval())
            example = {b.name: torch.zeros((2, *b.shape)) for b in self.blocks}
            export_module(model, example, path, self.ctx.model.kind, varargs=True)
        finally:
            self.model.to(self.device)
