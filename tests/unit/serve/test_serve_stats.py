"""Per-version statistics, the batcher's execution observer and the model configuration."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlaas4hep.serve import openapi
from mlaas4hep.serve.batching import Batcher
from mlaas4hep.serve.manager import LoadedVersion
from mlaas4hep.serve.model_config import model_config
from mlaas4hep.serve.repository import ModelConfig, VersionPolicy
from mlaas4hep.serve.runtime import OnnxModel
from mlaas4hep.serve.settings import BatchPolicy
from mlaas4hep.serve.stats import MAX_BATCH_SIZES, VersionStats


def test_stats_add_up_in_the_protocol_shape() -> None:
    stats = VersionStats()
    stats.executed(8, [0.001, 0.002], 0.004)  # two requests coalesced into one run
    stats.succeeded(5, 0.010, 0.001, 0.0005)
    stats.succeeded(3, 0.020, 0.002, 0.0005)
    stats.failed(0.003)
    doc = stats.to_json("m", 2)
    assert doc["name"] == "m"
    assert doc["version"] == "2"
    assert doc["inference_count"] == 8
    assert doc["execution_count"] == 1
    inference = doc["inference_stats"]
    assert inference["success"] == {"count": 2, "ns": 30_000_000}
    assert inference["fail"] == {"count": 1, "ns": 3_000_000}
    assert inference["queue"] == {"count": 2, "ns": 3_000_000}
    assert inference["compute_infer"] == {"count": 2, "ns": 8_000_000}  # each charged 4 ms
    assert inference["compute_input"] == {"count": 2, "ns": 3_000_000}
    assert inference["compute_output"]["count"] == 2
    assert doc["batch_stats"] == [
        {
            "batch_size": 8,
            "compute_input": {"count": 1, "ns": 0},
            "compute_infer": {"count": 1, "ns": 4_000_000},
            "compute_output": {"count": 1, "ns": 0},
        }
    ]
    assert doc["last_inference"] > 1_700_000_000_000  # ms since the epoch


def test_batch_sizes_tracked_are_bounded() -> None:
    stats = VersionStats()
    for rows in range(1, MAX_BATCH_SIZES + 100):
        stats.executed(rows, [0.0], 1e-6)
    doc = stats.to_json("m", 1)
    assert len(doc["batch_stats"]) == MAX_BATCH_SIZES
    assert doc["execution_count"] == MAX_BATCH_SIZES + 99  # the totals stay exact


def _double(inputs: Any) -> dict[str, np.ndarray]:
    return {"y": np.asarray(inputs["x"]) * 2}


@pytest.mark.parametrize("inline_rows", [0, 64])
def test_the_batcher_reports_every_execution(inline_rows: int) -> None:
    seen: list[tuple[int, int, float]] = []

    async def main() -> None:
        batcher = Batcher(
            _double,
            BatchPolicy(),
            None,
            inline_rows=inline_rows,
            executed=lambda rows, waits, run: seen.append((rows, len(waits), run)),
        )
        await batcher.submit({"x": np.ones((4, 2))}, 4)
        await asyncio.gather(*(batcher.submit({"x": np.ones((1, 2))}, 1) for _ in range(3)))

    asyncio.run(main())
    assert sum(rows for rows, _, _ in seen) == 7
    assert sum(n for _, n, _ in seen) == 4
    assert all(run >= 0 for _, _, run in seen)


def _loaded(model_dir: Path, policy: VersionPolicy) -> LoadedVersion:
    model = OnnxModel(model_dir, 1)
    batching = BatchPolicy(max_batch_size=64, max_queue_delay_ms=1.5, max_queue_size=9)
    batcher = Batcher(model.run, batching, None)
    return LoadedVersion("small", 3, model, batcher, ModelConfig(policy, batching))


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (VersionPolicy(latest=2), {"latest": {"num_versions": 2}}),
        (VersionPolicy(latest=None), {"all": {}}),
        (VersionPolicy(latest=None, specific=(1, 3)), {"specific": {"versions": [1, 3]}}),
    ],
)
def test_model_config_is_tritons_shape(
    model_dir: Path, policy: VersionPolicy, expected: dict[str, Any]
) -> None:
    config = model_config(_loaded(model_dir, policy))
    assert config["name"] == "small"
    assert config["version_policy"] == expected
    assert config["max_batch_size"] == 64
    assert config["input"] == [{"name": "features", "data_type": "TYPE_FP32", "dims": [4]}]
    assert config["output"] == [{"name": "score", "data_type": "TYPE_FP32", "dims": [2]}]
    assert config["dynamic_batching"] == {
        "max_queue_delay_microseconds": 1500,
        "default_queue_policy": {"max_queue_size": 9},
    }
    assert config["parameters"]["version"] == {"string_value": "3"}


def test_openapi_errors_are_the_protocol_shape() -> None:
    answers = openapi.errors(400, 415)
    assert set(answers) == {400, 415}
    schema = answers[415]["content"]["application/json"]["schema"]
    assert schema["required"] == ["error"]
    assert openapi.INFER["openapi_extra"]["requestBody"]["content"]["application/json"]
