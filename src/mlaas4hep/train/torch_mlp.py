"""PyTorch engine: an MLP built from the spec (or any ``nn.Module``, see ``user_code.py``).

The trained network is wrapped in a ``ScoringModel``: normalisation in front (buffers
``offset``/``scale`` from ``FeatureInfo``), the output activation behind (sigmoid for
binary, softmax for multiclass, none for regression). That wrapper is what ``predict`` runs
and what goes to ONNX, so clients send raw physics features.

Losses are computed on the network's raw outputs (logits) for numerical stability, with the
event weights; a network that already ends in a probability (old-style Keras models with a
sigmoid/softmax last layer) is trained with the matching loss on probabilities instead.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from mlaas4hep.errors import TrainingError
from mlaas4hep.train.engine import EngineContext, OnBatch

if TYPE_CHECKING:
    from mlaas4hep.preprocess.pipeline import FeatureBatch

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}
_PREDICT_BATCH = 65_536
_CHECKPOINT = "torch_state.pt"


def build_mlp(
    n_inputs: int,
    n_outputs: int,
    hidden: list[int],
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """A plain MLP: [Linear, (BatchNorm), activation, (Dropout)] per hidden layer, Linear."""
    layers: list[nn.Module] = []
    width = n_inputs
    for size in hidden:
        layers.append(nn.Linear(width, size))
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


class ScoringModel(nn.Module):
    """Raw features -> normalise -> network -> output activation (the exported graph)."""

    offset: torch.Tensor
    scale: torch.Tensor
    y_offset: torch.Tensor
    y_scale: torch.Tensor

    def __init__(
        self, net: nn.Module, offset: np.ndarray, scale: np.ndarray, head: str, probs: bool
    ) -> None:
        super().__init__()
        self.net = net
        # A constant feature has scale 0: dividing by 1 keeps it finite (and constant).
        safe = np.where(np.asarray(scale) == 0, 1.0, scale)
        self.register_buffer("offset", torch.as_tensor(np.asarray(offset), dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(np.asarray(safe), dtype=torch.float32))
        # Regression targets are standardised for training (set from the first train chunk,
        # see TorchEngine); the graph maps the output back. Identity until then.
        self.register_buffer("y_offset", torch.zeros(()))
        self.register_buffer("y_scale", torch.ones(()))
        self.head = head
        self.probs = probs

    def raw(self, features: torch.Tensor) -> torch.Tensor:
        """The network's output on raw features (logits, or probabilities if ``probs``)."""
        out: torch.Tensor = self.net((features - self.offset) / self.scale)
        return out

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.finish(self.raw(features))

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        """The output activation (or the regression target's scale) on ``raw``'s output."""
        if self.head == "none":
            return out * self.y_scale + self.y_offset
        if self.probs:
            return out
        if self.head == "sigmoid":
            return torch.sigmoid(out)
        return torch.softmax(out, dim=1)


# torch.onnx logs "torchvision is not installed. Skipping torchvision::nms" (and three more
# ops) on every export: its registry lists torchvision's ops, which no model here uses.
_EXPORTER_LOGGER = "torch.onnx._internal.exporter._registration"
_TORCHVISION_NOTICE = "torchvision is not installed"


def _not_torchvision_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_TORCHVISION_NOTICE)


@contextlib.contextmanager
def quiet_onnx_export() -> Iterator[None]:
    """Drop the exporter's "torchvision is not installed" notices, and only those."""
    logger = logging.getLogger(_EXPORTER_LOGGER)
    logger.addFilter(_not_torchvision_notice)
    try:
        yield
    finally:
        logger.removeFilter(_not_torchvision_notice)


def _head(task: str) -> str:
    return {"binary": "sigmoid", "multiclass": "softmax"}.get(task, "none")


def resolve_amp(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on *device*: None (off, or not on CUDA)."""
    if amp is False or device.type != "cuda":
        return None
    if amp == "fp16" or (amp is True and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        msg = "train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'"
        raise TrainingError(msg)
    return torch.device(name)


class TorchEngine:
    """Trains a ``ScoringModel`` batch by batch with a torch optimiser."""

    streaming = True

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self.device = resolve_device(ctx.train.device)
        # torch draws initial weights and dropout masks from its global generator; seeding it
        # here (and restoring its state from checkpoints) makes CPU runs reproducible.
        torch.manual_seed(ctx.train.seed)
        net, probs = self.build_network()
        self.model = self.build_scoring(net, probs)
        self.model.to(self.device)
        self.check_shapes()
        self.optimizer = self._optimizer()
        # Mixed precision (CUDA only): autocast in the forward pass; fp16 also needs a
        # gradient scaler so that small gradients do not underflow (bf16 does not).
        self.amp = resolve_amp(ctx.train.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.target_fitted = False
        self.batch_norm = any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules()
        )
        self.rng = np.random.default_rng(ctx.train.seed)

    def build_scoring(self, net: nn.Module, probs: bool) -> ScoringModel:
        """``net`` with the normalisation in front and the output activation behind."""
        info = self.ctx.info
        return ScoringModel(net, info.offset, info.scale, _head(info.task), probs)

    def build_network(self) -> tuple[nn.Module, bool]:
        """The network on normalised inputs, and whether it outputs probabilities."""
        m = self.ctx.model
        net = build_mlp(
            self.ctx.n_inputs, self.ctx.n_outputs, m.hidden, m.activation, m.dropout, m.batch_norm
        )
        return net, False

    def check_shapes(self) -> None:
        """Run two dummy events through the model; a mismatch is a ``TrainingError``."""
        x = torch.zeros((2, self.ctx.n_inputs), device=self.device)
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model.raw(x)
        except (RuntimeError, ValueError, TypeError) as exc:
            msg = (
                f"the model does not accept {self.ctx.n_inputs} input features "
                f"({', '.join(self.ctx.info.names[:5])}...): {exc}"
            )
            raise TrainingError(msg) from exc
        want = (2, self.ctx.n_outputs)
        if tuple(out.shape) != want:
            msg = (
                f"the model returns shape {tuple(out.shape)!r} for 2 events; expected {want!r} "
                f"({self.ctx.n_outputs} output(s) for a {self.ctx.info.task} task)"
            )
            raise TrainingError(msg)

    def _optimizer(self) -> torch.optim.Optimizer:
        t = self.ctx.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        if t.optimizer == "sgd":
            return torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
        cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=t.lr, weight_decay=t.weight_decay)

    def _loss(self, out: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        task, probs = self.ctx.info.task, self.model.probs
        if task == "binary":
            target = y.reshape(-1, 1).to(out.dtype)
            if probs:
                per = nn.functional.binary_cross_entropy(
                    out.clamp(1e-7, 1 - 1e-7), target, reduction="none"
                )
            else:
                per = nn.functional.binary_cross_entropy_with_logits(out, target, reduction="none")
            per = per[:, 0]
        elif task == "multiclass":
            logp = torch.log(out.clamp_min(1e-7)) if probs else torch.log_softmax(out, dim=1)
            per = nn.functional.nll_loss(logp, y.long(), reduction="none")
        else:
            target = (y.to(out.dtype) - self.model.y_offset) / self.model.y_scale
            per = (out[:, 0] - target) ** 2
        return (per * w).sum() / w.sum().clamp_min(1e-12)

    def train_epoch(self, batches: Iterable[FeatureBatch], epoch: int, on_batch: OnBatch) -> float:
        """One pass over ``batches`` in mini-batches of ``train.batch_size``."""
        self.model.train()
        dev = self.device
        # Sums stay on the device: reading a number back after every step would make each
        # step wait for the GPU.
        total = torch.zeros((), dtype=torch.float64, device=dev)
        weight = torch.zeros((), dtype=torch.float64, device=dev)
        for batch in batches:
            n = len(batch.y)
            if self.ctx.info.task == "regression" and not self.target_fitted:
                self._fit_target(batch)
            # One transfer per chunk, then mini-batches in a random order within it; the
            # generator's state is in the checkpoint, so a resumed run draws the same order.
            X, y, w = (torch.from_numpy(a).to(dev) for a in (batch.X, batch.y, batch.w))
            perm = torch.from_numpy(self.rng.permutation(n)).to(dev)
            for idx in torch.tensor_split(perm, max(1, -(-n // self.ctx.train.batch_size))):
                if len(idx) < 2 and self.batch_norm:
                    continue  # batch norm cannot normalise a single event
                loss, w_sum = self._step(X[idx], y[idx], w[idx])
                total += loss * w_sum
                weight += w_sum
            self._check_finite(total)
            on_batch(n)
        return float(total / weight) if float(weight) > 0 else float("nan")

    def _fit_target(self, batch: FeatureBatch) -> None:
        y = batch.y.astype(np.float64)
        std = float(y.std()) if len(y) > 1 else 1.0
        self.model.y_offset.fill_(float(y.mean()) if len(y) else 0.0)
        self.model.y_scale.fill_(std if std > 0 else 1.0)
        self.target_fitted = True

    def _step(
        self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            out = self.model.raw(x)
        loss = self._loss(out.float(), y, w)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()  # type: ignore[no-untyped-call]
            self.optimizer.step()
        return loss.detach().double(), w.sum().double()

    def _check_finite(self, total: torch.Tensor) -> None:
        if not torch.isfinite(total):
            msg = (
                f"the training loss became {float(total)!r}; lower train.lr "
                f"(now {self.ctx.train.lr!r}) or check the feature scales"
            )
            raise TrainingError(msg)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Scores (after the output activation) of raw features, as float32 numpy."""
        self.model.eval()
        outs = []
        with torch.no_grad():
            for start in range(0, len(X), _PREDICT_BATCH):
                x = torch.from_numpy(np.ascontiguousarray(X[start : start + _PREDICT_BATCH]))
                outs.append(self.model(x.to(self.device)).float().cpu().numpy())
        if not outs:
            return np.zeros((0, self.ctx.n_outputs), np.float32)
        return np.concatenate(outs)

    def save(self, directory: Path) -> None:
        """Model, optimiser and RNG state (so a resumed run continues identically)."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "np_rng": self.rng.bit_generator.state,
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        torch.save(state, directory / _CHECKPOINT)

    def load(self, directory: Path) -> None:
        # weights_only: a checkpoint is data; never let it run code.
        state = torch.load(directory / _CHECKPOINT, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.target_fitted = True
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"].cpu())
        self.rng.bit_generator.state = state["np_rng"]
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])

    def export_onnx(self, path: Path) -> None:
        """torch.onnx (dynamo exporter) of the ``ScoringModel`` with a dynamic batch axis."""
        # Exported in place (moved to the CPU and back): deep-copying a Keras model would
        # serialise its compiled optimizer.
        try:
            model = self.model.to("cpu").eval()
            example = {"features": torch.zeros((2, self.ctx.n_inputs))}
            export_module(model, example, path, self.ctx.model.kind)
        finally:
            self.model.to(self.device)

    def feature_importances(self) -> np.ndarray | None:
        return None

    def close(self) -> None:
        """Nothing to free: this engine keeps no data between batches."""


def export_module(
    model: nn.Module,
    example: dict[str, torch.Tensor],
    path: Path,
    kind: str,
    *,
    varargs: bool = False,
) -> None:
    """torch.onnx (dynamo) of *model*: inputs named as *example*'s keys, one ``scores``
    output, a dynamic batch axis shared by every input (*varargs*: ``forward(*inputs)``)."""
    batch = torch.export.Dim("batch")
    dynamic: tuple[Any, ...] = tuple({0: batch} for _ in example)
    try:
        with warnings.catch_warnings(), quiet_onnx_export():
            # The exporter warns about its own internals (pytree deprecations); nothing
            # a user can act on.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            program: Any = torch.onnx.export(
                model,
                tuple(example.values()),
                input_names=list(example),
                output_names=["scores"],
                dynamic_shapes=(dynamic,) if varargs else dynamic,
                dynamo=True,
                verbose=False,
                external_data=False,
            )
            program.save(str(path), external_data=False)
    except Exception as exc:  # the exporter raises many unrelated types
        msg = f"cannot export the {kind!r} model to ONNX: {exc}"
        raise TrainingError(msg) from exc
