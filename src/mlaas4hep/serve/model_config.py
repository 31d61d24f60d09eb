"""A loaded version's configuration as Triton's ``ModelConfig`` JSON (the V2
model-configuration extension: what ``tritonclient`` reads)."""

from __future__ import annotations

from typing import Any

from mlaas4hep.serve.manager import LoadedVersion
from mlaas4hep.serve.metadata import TensorSpec


def model_config(loaded: LoadedVersion) -> dict[str, Any]:
    """A version's configuration as Triton's ``ModelConfig`` JSON (what tritonclient reads).

    Every input and output has a dynamic first axis, so ``max_batch_size`` is the batching
    policy's and ``dims`` leave the batch axis out (a tensor of one value per row is
    ``dims: [1]`` reshaped to ``[]``, Triton's convention).
    """
    batching, policy = loaded.config.batching, loaded.config.version_policy
    if policy.specific:
        versions: dict[str, Any] = {"specific": {"versions": list(policy.specific)}}
    elif policy.latest is None:
        versions = {"all": {}}
    else:
        versions = {"latest": {"num_versions": policy.latest}}
    meta = loaded.metadata
    return {
        "name": loaded.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": versions,
        "max_batch_size": batching.max_batch_size,
        "input": [_config_tensor(t) for t in meta.inputs],
        "output": [_config_tensor(t) for t in meta.outputs],
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(batching.max_queue_delay_ms * 1000),
            "default_queue_policy": {"max_queue_size": batching.max_queue_size},
        },
        "instance_group": [{"name": loaded.name, "kind": "KIND_CPU", "count": 1}],
        "parameters": {
            "max_queue_rows": {"string_value": str(batching.max_queue_rows)},
            "version": {"string_value": str(loaded.version)},
            "feature_names": {"string_value": ",".join(meta.feature_names)},
            "raw_event_columns": {"string_value": str(loaded.raw.preprocessor is not None)},
        },
    }


def _config_tensor(spec: TensorSpec) -> dict[str, Any]:
    tensor: dict[str, Any] = {"name": spec.name, "data_type": "TYPE_" + spec.datatype}
    dims = list(spec.shape[1:])
    if dims:
        tensor["dims"] = dims
    else:
        tensor["dims"], tensor["reshape"] = [1], {"shape": []}
    return tensor
