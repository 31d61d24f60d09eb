"""Set-based models (``model.kind: deepsets | transformer``) on the generated sample.

Three engines train on the same preprocessed features (same seed, epochs, batches): the
MLP on the flat vector, Deep Sets and the transformer (with pairwise features) on the
per-collection tensors. Each set model is exported to ONNX and checked there with
ONNX Runtime: parity with the native model, invariance under any permutation of an
event's objects (padded ones included), blindness to the values in padded slots.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from mlaas4hep import artifact
from mlaas4hep.errors import SpecError
from mlaas4hep.preprocess.pipeline import FeatureBatch, FeatureInfo, Preprocessor
from mlaas4hep.spec import PipelineSpec, load_spec
from mlaas4hep.train.bundle import features_document
from mlaas4hep.train.engine import Engine, EngineContext, create_engine
from mlaas4hep.train.evaluate import ScoreAccumulator
from mlaas4hep.train.export import export_onnx, input_blocks
from mlaas4hep.train.run import check_engine

EPOCHS = 10
# The generated sample's label hardly depends on the objects' arrangement: the set models
# must match the MLP on the same inputs, up to this (a fraction of the AUC's spread).
AUC_TOLERANCE = 0.005
MODELS: dict[str, dict[str, Any]] = {
    "mlp": {"kind": "mlp"},
    "deepsets": {"kind": "deepsets"},
    "transformer": {"kind": "transformer", "pairwise": True},
}


def sets_spec(files: dict[str, Path], model: dict[str, Any]) -> PipelineSpec:
    return load_spec(
        {
            "name": "sets",
            "data": {
                "tree": "Events",
                "step_size": 1000,
                "datasets": [
                    {"name": "signal", "files": [str(files["signal"])], "label": 1},
                    {"name": "background", "files": [str(files["background"])], "label": 0},
                ],
            },
            "preprocess": {
                "features": {
                    "scalars": ["MET_pt"],
                    "objects": {
                        "Jet": {
                            "fields": ["pt", "eta", "phi", "mass", "btagDeepB"],
                            "sort_by": "pt",
                            "length": 6,
                            "mask": True,
                        },
                        "Muon": {"fields": ["pt", "eta", "phi"], "length": 2, "mask": True},
                    },
                }
            },
            "model": model,
            "train": {"epochs": EPOCHS, "batch_size": 128, "lr": 3e-3, "seed": 1},
        }
    )


@dataclass(frozen=True)
class Trained:
    info: FeatureInfo
    test: FeatureBatch
    engines: dict[str, Engine]
    sessions: dict[str, ort.InferenceSession]
    auc: dict[str, float]


def _concat(batches: list[FeatureBatch]) -> FeatureBatch:
    parts = [np.concatenate([getattr(b, k) for b in batches]) for k in ("X", "y", "w", "split")]
    return FeatureBatch(*parts)


@pytest.fixture(scope="module")
def trained(
    sample_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Trained]:
    # One thread: these networks are tiny, and on a busy 2-core machine a second torch
    # thread costs far more in contention than it gains.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("sets")
    try:
        pre = Preprocessor(sets_spec(sample_files, MODELS["mlp"]), cache_dir=tmp / "cache")
        info = pre.fit()
        train, test = _concat(list(pre.batches("train"))), _concat(list(pre.batches("test")))
        engines, sessions, auc = {}, {}, {}
        for name, model in MODELS.items():
            spec = sets_spec(sample_files, model)
            ctx = EngineContext(
                info, spec.model, spec.train, tmp / name, features=spec.preprocess.features
            )
            engine = create_engine(ctx)
            for epoch in range(EPOCHS):
                engine.train_epoch([train], epoch, lambda n: None)
            acc = ScoreAccumulator("binary", 2)
            acc.add(engine.predict(test.X), test.y, test.w)
            auc[name] = float(acc.metrics()["auc"])  # type: ignore[arg-type]
            export_onnx(engine, tmp / f"{name}.onnx", info, {})
            engines[name] = engine
            sessions[name] = ort.InferenceSession(
                str(tmp / f"{name}.onnx"), providers=["CPUExecutionProvider"]
            )
        yield Trained(info, test, engines, sessions, auc)
    finally:
        torch.set_num_threads(threads)


def _feeds(trained: Trained, name: str, X: np.ndarray) -> dict[str, np.ndarray]:
    return artifact.onnx_feeds(X, trained.info.names, input_blocks(trained.engines[name]))


def _run(trained: Trained, name: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(trained.sessions[name].run([artifact.OUTPUT_TENSOR], feeds)[0])


@pytest.mark.parametrize("name", ["deepsets", "transformer"])
def test_reaches_the_mlp_auc_on_the_same_inputs(trained: Trained, name: str) -> None:
    assert trained.auc["mlp"] > 0.8  # the MLP learnt something: a real bar to reach
    assert trained.auc[name] >= trained.auc["mlp"] - AUC_TOLERANCE, trained.auc


@pytest.mark.parametrize("name", ["deepsets", "transformer"])
def test_exported_graph_takes_one_tensor_per_collection(trained: Trained, name: str) -> None:
    inputs = {i.name: i.shape for i in trained.sessions[name].get_inputs()}
    assert list(inputs) == ["Jet", "Muon", "scalars"]
    assert inputs["Jet"][1:] == [6, 6]
    assert inputs["Muon"][1:] == [2, 4]
    assert inputs["scalars"][1:] == [1]
    assert all(not isinstance(shape[0], int) for shape in inputs.values())  # dynamic batch
    native = trained.engines[name].predict(trained.test.X)
    onnx_scores = _run(trained, name, _feeds(trained, name, trained.test.X))
    assert np.max(np.abs(onnx_scores - native)) < 1e-4


def _permute_objects(feeds: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Every event's objects in a new random order (padded slots included)."""
    rng = np.random.default_rng(seed)
    out = dict(feeds)
    for name in ("Jet", "Muon"):
        x = feeds[name]
        order = np.argsort(rng.random(x.shape[:2]), axis=1)
        out[name] = np.ascontiguousarray(np.take_along_axis(x, order[:, :, None], axis=1))
    return out


@pytest.mark.parametrize("name", ["deepsets", "transformer"])
def test_onnx_is_invariant_under_permutations_of_the_objects(trained: Trained, name: str) -> None:
    feeds = _feeds(trained, name, trained.test.X)
    permuted = _permute_objects(feeds, seed=5)
    moved = np.any(permuted["Jet"] != feeds["Jet"], axis=(1, 2))
    assert moved.mean() > 0.9  # the permutation really reorders most events
    diff = np.abs(_run(trained, name, permuted) - _run(trained, name, feeds))
    assert float(diff.max()) < 1e-5


def test_the_invariance_check_catches_an_order_dependent_model(trained: Trained) -> None:
    # The same permutation through the MLP, which sees slots: its scores do change.
    feeds = _feeds(trained, "deepsets", trained.test.X)
    permuted = _permute_objects(feeds, seed=5)
    blocks = input_blocks(trained.engines["deepsets"])
    where = {n: i for i, n in enumerate(trained.info.names)}
    X = np.empty_like(trained.test.X)
    for block in blocks:
        X[:, [where[f] for f in block.features]] = permuted[block.name].reshape(len(X), -1)
    mlp = trained.engines["mlp"]
    assert float(np.max(np.abs(mlp.predict(X) - mlp.predict(trained.test.X)))) > 1e-3


@pytest.mark.parametrize("name", ["deepsets", "transformer"])
def test_values_in_padded_slots_are_ignored(trained: Trained, name: str) -> None:
    feeds = _feeds(trained, name, trained.test.X)
    changed = dict(feeds)
    for coll in ("Jet", "Muon"):
        x = feeds[coll].copy()
        padded = x[..., -1] == 0
        assert padded.any()
        x[..., :-1][padded] = 123.0  # garbage fields where the mask says "no object"
        changed[coll] = x
    diff = np.abs(_run(trained, name, changed) - _run(trained, name, feeds))
    assert float(diff.max()) < 1e-5


def test_features_document_declares_the_inputs(sample_files: dict[str, Path]) -> None:
    spec = sets_spec(sample_files, MODELS["deepsets"])
    info = FeatureInfo(
        names=tuple(_flat_names(spec)), task="binary", n_classes=2, class_names=("b", "s"),
        normalize="none", offset=np.zeros(1), scale=np.ones(1), stats={},
    )  # fmt: skip
    doc = features_document(info, spec)
    parsed = artifact.BundleFeatures.from_json(doc, "features.json")
    assert [(b.name, b.shape) for b in parsed.inputs] == [
        ("Jet", (6, 6)), ("Muon", (2, 4)), ("scalars", (1,)),
    ]  # fmt: skip
    assert parsed.inputs[0].features[:6] == (
        "Jet_pt_0", "Jet_eta_0", "Jet_phi_0", "Jet_mass_0", "Jet_btagDeepB_0", "Jet_mask_0",
    )  # fmt: skip
    X = np.arange(2 * len(info.names), dtype=np.float32).reshape(2, -1)
    feeds = artifact.onnx_feeds(X, info.names, parsed.inputs)
    assert feeds["Muon"][1, 1, 3] == X[1, info.names.index("Muon_mask_1")]


def _flat_names(spec: PipelineSpec) -> list[str]:
    from mlaas4hep.preprocess.features import feature_names

    return list(feature_names(spec.preprocess.features))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mask": False}, "set 'mask: true'"),
        (None, "preprocess.features.objects is empty"),
        ({"folds": 3}, "train.folds is not supported"),
    ],
)
def test_set_models_need_masked_collections(
    sample_files: dict[str, Path], change: dict[str, Any] | None, message: str
) -> None:
    raw = sets_spec(sample_files, MODELS["deepsets"]).model_dump(mode="json")
    objects = raw["preprocess"]["features"]["objects"]
    if change is None:
        objects.clear()
    elif "folds" in change:
        raw["train"].update(change)
    else:
        objects["Jet"].update(change)
    with pytest.raises(SpecError, match=message):
        check_engine(load_spec(raw))


def test_model_options_belong_to_their_kind(sample_files: dict[str, Path]) -> None:
    with pytest.raises(SpecError, match=r"'phi' \(a deepsets option\)"):
        sets_spec(sample_files, {"kind": "transformer", "phi": [8]})
    with pytest.raises(SpecError, match=r"multiple of model\.heads"):
        sets_spec(sample_files, {"kind": "transformer", "embed_dim": 10, "heads": 4})


def test_mixed_precision_only_on_cuda() -> None:
    from mlaas4hep.train.torch_mlp import resolve_amp

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_amp(True, cpu) is None  # ignored on the CPU
    assert resolve_amp("fp16", cpu) is None
    assert resolve_amp(False, cuda) is None
    assert resolve_amp("fp16", cuda) is torch.float16
    assert resolve_amp("bf16", cuda) is torch.bfloat16
