"""The artifact bundle of a run, and its model card.

    OUT/
      model.onnx        raw features in, scores out (export.py)
      spec.yaml         the resolved spec (defaults filled in), readable by load_spec
      metadata.json     what the inference service reads (format ``mlaas4hep-model/1``,
                        docs/inference.md): tensors, feature names, labels, spec hash, metrics
      features.json     feature names in input order, task, classes, normalisation constants
      stats.json        the preprocessing statistics and the cut flow
      reweight.json     with preprocess.reweight: its histograms and factor maps
      metrics.json      test metrics, per-epoch history, parity, timings
      plots/*.png       plots.py
      checkpoints/      checkpoint.py
      README.md         the model card: data, cuts, features, metrics, how to query it

Every file is written atomically, so a reader (the model repository, the UI) never sees a
half-written bundle file.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlaas4hep import artifact
from mlaas4hep.artifact import MODEL_FILE, BundleFeatures
from mlaas4hep.errors import TrainingError
from mlaas4hep.preprocess.reweight import REWEIGHT_FILE
from mlaas4hep.train import card
from mlaas4hep.train.atomic import atomic_write_text
from mlaas4hep.train.set_inputs import SET_KINDS, input_blocks

if TYPE_CHECKING:
    from mlaas4hep.preprocess.pipeline import FeatureInfo
    from mlaas4hep.spec import PipelineSpec

# Where `mlaas4hep serve` listens by default; the card's curl command names it.
SERVICE_URL = "http://127.0.0.1:8000"
# ONNX TensorProto element types our exported graphs use -> Open Inference Protocol names.
_V2_DATATYPES = {1: "FP32", 11: "FP64", 7: "INT64", 6: "INT32", 9: "BOOL"}


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays -> Python; NaN/inf -> None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Pretty JSON, written atomically."""
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def features_document(
    info: FeatureInfo, spec: PipelineSpec, branches: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The input contract of the model (``features.json``, ``artifact.BundleFeatures``).

    *branches*: input branch -> type, as the preprocessing bound them (empty when unknown).
    """
    doc = BundleFeatures(
        features=tuple(info.names),
        task=info.task,
        n_classes=info.n_classes,
        class_names=tuple(info.class_names),
        normalize=info.normalize,
        offset=tuple(float(v) for v in np.asarray(info.offset)),
        scale=tuple(float(v) for v in np.asarray(info.scale)),
        identifiers=tuple(spec.data.identifiers),
        branches=dict(branches or {}),
        tree=spec.data.tree,
        inputs=model_inputs(spec),
    )
    return doc.to_json()


def model_inputs(spec: PipelineSpec) -> tuple[artifact.InputBlock, ...]:
    """The graph's inputs when it has several (set-based models); () for ``features``."""
    if spec.model.kind not in SET_KINDS:
        return ()
    return input_blocks(spec.preprocess.features)


def write_bundle(
    out: Path,
    spec: PipelineSpec,
    info: FeatureInfo,
    metrics: dict[str, Any],
    cutflow: Sequence[dict[str, Any]],
    branches: Mapping[str, str] | None = None,
) -> None:
    """Write spec.yaml, features.json, stats.json, metrics.json and README.md into ``out``."""
    atomic_write_text(out / artifact.SPEC_FILE, spec.to_yaml())
    write_json(out / artifact.FEATURES_FILE, features_document(info, spec, branches))
    write_json(out / artifact.STATS_FILE, {"stats": info.stats, "cutflow": list(cutflow)})
    if info.reweight:
        write_json(out / REWEIGHT_FILE, info.reweight)
    write_json(out / artifact.METRICS_FILE, metrics)
    atomic_write_text(out / artifact.CARD_FILE, model_card(spec, info, metrics, cutflow))
    if (out / MODEL_FILE).is_file():
        document = metadata_document(out / MODEL_FILE, spec, info, metrics)
        write_json(out / artifact.METADATA_FILE, document)


def metadata_document(
    model: Path, spec: PipelineSpec, info: FeatureInfo, metrics: dict[str, Any]
) -> dict[str, Any]:
    """``metadata.json``: the serving contract, tensors read from the exported graph."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    test = metrics.get("test", {})
    defaults = {init.name for init in graph.initializer}  # optional inputs (k-folding's fold)
    folds: dict[str, Any] = {}
    if spec.train.folds:  # what the service needs to compute a fold (serve/folds.py)
        folds = {
            "folds": spec.train.folds,
            "fold_identifiers": list(spec.data.identifiers),
            "fold_seed": spec.preprocess.split.seed,
        }
    return {
        "format": artifact.METADATA_FORMAT,
        "inputs": [_tensor(t) for t in graph.input if t.name not in defaults],
        "outputs": [_tensor(t) for t in graph.output],
        "feature_names": list(info.names),
        "labels": list(info.class_names),
        "spec_hash": spec.spec_hash(),
        "metrics": {k: v for k, v in test.items() if isinstance(v, int | float)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "description": spec.description or f"{info.task} model of pipeline {spec.name!r}",
        **folds,
    }


def _tensor(value: Any) -> dict[str, Any]:
    tensor = value.type.tensor_type
    # A named (symbolic) dimension such as the batch axis is dynamic: -1 in the V2 protocol.
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    datatype = _V2_DATATYPES.get(tensor.elem_type)
    if datatype is None:
        msg = f"the exported graph's tensor {value.name!r} has an unsupported element type"
        raise TrainingError(msg)
    return {"name": value.name, "datatype": datatype, "shape": shape}


def model_card(
    spec: PipelineSpec,
    info: FeatureInfo,
    metrics: dict[str, Any],
    cutflow: Sequence[dict[str, Any]],
) -> str:
    """A Markdown model card: data, weights, cuts, features, model, evaluation, how to query."""
    name = spec.deploy.name if spec.deploy else spec.name
    parts = [
        f"# {name}\n",
        (spec.description or f"A {info.task} model trained by mlaas4hep.") + "\n",
        *_warnings_section(metrics),
        _data_section(spec),
        _weights_section(spec, info),
        _cuts_section(cutflow),
        _features_section(info),
        _model_section(spec, metrics),
        card.metrics_section(metrics),
        _query_section(name, info, model_inputs(spec)),
    ]
    return "\n".join(parts)


def _warnings_section(metrics: dict[str, Any]) -> list[str]:
    """The run's warnings (``metrics.json`` → ``warnings``), first thing after the title."""
    warnings = metrics.get("warnings") or []
    if not warnings:
        return []
    items = "\n".join(f"- **{w.get('code', 'warning')}**: {w.get('message', '')}" for w in warnings)
    return [f"## Warnings\n\n{items}\n"]


def _data_section(spec: PipelineSpec) -> str:
    rows = [
        [
            d.name,
            card.dataset_label(d, spec.preprocess),
            str(len(d.files)),
            ", ".join(f"`{f}`" for f in d.files[:3]) + (" ..." if len(d.files) > 3 else ""),
        ]
        for d in spec.data.datasets
    ]
    table = card.table(["dataset", "label", "files", "e.g."], rows, numeric={2})
    return f"## Data\n\nTree `{spec.data.tree or '(the only one)'}`.\n\n{table}\n"


def _weights_section(spec: PipelineSpec, info: FeatureInfo) -> str:
    """Which event weights and class-balancing factors the loss and the figures used."""
    pre = spec.preprocess
    per_dataset = [f"`{d.name}`: `{d.weight}`" for d in spec.data.datasets if d.weight]
    if pre.weight or per_dataset:
        sources = ([f"`{pre.weight}` for every event"] if pre.weight else []) + per_dataset
        weights = f"Event weights: {'; '.join(sources)}."
    else:
        weights = "No event weights: every event counts 1."
    weights += "".join(
        f" Reweighted (`{REWEIGHT_FILE}`): {', '.join(map(repr, r['classes']))} in "
        f"{', '.join(r['variables'])} to {r['target']}, factors clipped at {r['max_weight']:g}."
        for r in info.reweight.get("rules", ())
    )
    if info.class_weights:
        names = [card.class_name(info.class_names, k) for k in range(len(info.class_weights))]
        factors = ", ".join(f"{n} x{f:.4g}" for n, f in zip(names, info.class_weights, strict=True))
        balance = (
            f"`preprocess.balance: true`: the classes are reweighted to equal totals ({factors})."
        )
    else:
        balance = "`preprocess.balance: false`: no class reweighting."
    return (
        f"## Weights\n\n{weights} {balance}\n\n"
        "Training and the *weighted* figures below use the event weights times the class "
        "factors; ROC curves, AUC, working points and KS tests compare the classes one by "
        "one, so the class factors do not change them. *Unweighted* figures count every "
        "event once.\n"
    )


def _cuts_section(cutflow: Sequence[dict[str, Any]]) -> str:
    if not cutflow:
        return "## Cuts\n\nNone.\n"
    datasets = list(cutflow[0].get("datasets") or {})
    header = ["cut", "expression", "before", "after", "efficiency", "cumulative"]
    header += [f"{d} after" for d in datasets] + [f"{d} cumulative" for d in datasets]
    rows = []
    for r in cutflow:
        per = r.get("datasets") or {}
        rows.append(
            [
                str(r.get("cut", "")),
                f"`{r.get('expr', '')}`",
                card.count(r.get("before")),
                card.count(r.get("after")),
                card.percent(r.get("efficiency")),
                card.percent(r.get("cumulative")),
                *(card.count(per.get(d, {}).get("after")) for d in datasets),
                *(card.percent(per.get(d, {}).get("cumulative")) for d in datasets),
            ]
        )
    numeric = set(range(2, len(header)))
    note = "Efficiency: after / before the cut; cumulative: after / events read."
    return f"## Cuts\n\n{card.table(header, rows, numeric=numeric)}\n\n{note}\n"


def _features_section(info: FeatureInfo) -> str:
    names = ", ".join(f"`{n}`" for n in info.names)
    classes = f" Classes: {', '.join(info.class_names)}." if info.class_names else ""
    return (
        f"## Features\n\n{len(info.names)} features, in this order: {names}.\n\n"
        f"Task: {info.task}.{classes} Normalisation: {info.normalize} (inside the model).\n"
    )


def _model_section(spec: PipelineSpec, metrics: dict[str, Any]) -> str:
    options = json.dumps(spec.model.model_dump(mode="json"))
    t = metrics.get("training", {})
    folds = (
        f"\n{spec.train.folds} models (`train.folds`), each trained without one fold of the "
        "events and evaluated on it (figures below: out of fold; fold 0's epochs above). "
        f"Input `{artifact.FOLD_INPUT}` (INT64 per row) picks each row's model: the fold of "
        "a simulated event; without it, or -1, the mean of the models (real data).\n"
        if spec.train.folds
        else ""
    )
    return (
        f"## Model\n\n`{options}`\n\nTrained for {t.get('epochs_run', '?')} epoch(s), best "
        f"epoch {t.get('best_epoch', '?')}{' (stopped early)' if t.get('stopped_early') else ''}.\n"
        + folds
    )


def _query_section(
    name: str, info: FeatureInfo, blocks: tuple[artifact.InputBlock, ...] = ()
) -> str:
    """How to query the model: a curl command (V2) and Python (ONNX Runtime), both runnable.

    The curl line reads the token from ``$TOKEN`` inside double quotes, so the shell
    expands it; the JSON body is in single quotes (it holds no single quote).
    """
    if blocks:
        return _query_sets_section(name, info, blocks)
    n = len(info.names)
    example = json.dumps(
        {
            "inputs": [
                {
                    "name": artifact.INPUT_TENSOR,
                    "shape": [1, n],
                    "datatype": "FP32",
                    "data": [0.0] * n,
                }
            ]
        }
    )
    url = f"{SERVICE_URL}/v2/models/{urllib.parse.quote(name, safe='')}/infer"
    return (
        f"## How to query it\n\nInput `{artifact.INPUT_TENSOR}`: FP32, shape `[batch, "
        f"{n}]`, raw values in the feature order above. Output `{artifact.OUTPUT_TENSOR}`: "
        f"{_scores_doc(info)}.\n\n"
        "Open Inference Protocol (V2), once the model is deployed as "
        f"`{name}` (a token in `$TOKEN`, e.g. `export TOKEN=$(mlaas4hep token --user alice)`):"
        "\n\n```bash\n"
        'curl -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\\n'
        f"     -d '{example}' \\\n"
        f"     {url}\n```\n\n"
        "Locally, from this directory:\n\n```python\n"
        "import numpy as np\nimport onnxruntime\n\n"
        f"X = np.zeros((1, {n}), dtype=np.float32)  # raw features, in the order above\n"
        f"session = onnxruntime.InferenceSession({MODEL_FILE!r})\n"
        f"scores = session.run([{artifact.OUTPUT_TENSOR!r}], {{{artifact.INPUT_TENSOR!r}: X}})[0]\n"
        "```\n"
    )


def _scores_doc(info: FeatureInfo) -> str:
    if info.task == "binary":
        second = info.class_names[1] if len(info.class_names) > 1 else "class 1"
        return f"shape `[batch, 1]`, probability of {second}"
    if info.task == "multiclass":
        return f"shape `[batch, {info.n_classes}]`, one probability per class"
    return "shape `[batch, 1]`, the predicted value"


def _query_sets_section(
    name: str, info: FeatureInfo, blocks: tuple[artifact.InputBlock, ...]
) -> str:
    """The query section of a set-based model: one input per collection, then scalars."""
    lines = "\n".join(_input_line(b) for b in blocks)
    example = json.dumps(
        {
            "inputs": [
                {"name": b.name, "shape": [1, *b.shape], "datatype": "FP32",
                 "data": [0.0] * len(b.features)}
                for b in blocks
            ]
        }
    )  # fmt: skip
    url = f"{SERVICE_URL}/v2/models/{urllib.parse.quote(name, safe='')}/infer"
    return (
        f"## How to query it\n\nInputs, raw values:\n\n{lines}\n\nOutput "
        f"`{artifact.OUTPUT_TENSOR}`: {_scores_doc(info)}.\n\n"
        "Open Inference Protocol (V2), once the model is deployed as "
        f"`{name}` (a token in `$TOKEN`):\n\n```bash\n"
        'curl -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\\n'
        f"     -d '{example}' \\\n"
        f"     {url}\n```\n"
    )


def _input_line(block: artifact.InputBlock) -> str:
    shape = ", ".join(map(str, block.shape))
    if len(block.shape) == 1:
        return f"- `{block.name}`: FP32, shape `[batch, {shape}]`: {', '.join(block.features)}"
    first = ", ".join(block.features[: block.shape[1]])
    return (
        f"- `{block.name}`: FP32, shape `[batch, {shape}]` (objects x fields, the mask last: "
        f"1 present, 0 padded): {first} for object 0, then object 1, ..."
    )
