"""ONNX export of an MLP prints no "torchvision is not installed" notices (and hides nothing
else)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlaas4hep.train.engine import EngineContext
from mlaas4hep.train.torch_mlp import TorchEngine, quiet_onnx_export

from .conftest import make_spec
from .fakes import FakeSource

EXPORTER_LOGGER = "torch.onnx._internal.exporter._registration"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def exporter_log() -> Iterator[Records]:
    records = Records()
    logger = logging.getLogger(EXPORTER_LOGGER)
    logger.addHandler(records)
    try:
        yield records
    finally:
        logger.removeHandler(records)


def test_mlp_export_logs_no_torchvision_notice(tmp_path: Path, exporter_log: Records) -> None:
    spec = make_spec(None)
    ctx = EngineContext(FakeSource().fit(), spec.model, spec.train, tmp_path / "work", False)
    TorchEngine(ctx).export_onnx(tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx").stat().st_size > 0
    assert not [m for m in exporter_log.messages if "torchvision" in m]


def test_only_that_notice_is_silenced(exporter_log: Records) -> None:
    logger = logging.getLogger(EXPORTER_LOGGER)
    with quiet_onnx_export():
        logger.warning("torchvision is not installed. Skipping %s", "torchvision::nms")
        logger.warning("something else is wrong")
    logger.warning("torchvision is not installed. Skipping %s", "torchvision::nms")
    assert exporter_log.messages == [
        "something else is wrong",
        "torchvision is not installed. Skipping torchvision::nms",  # outside the export
    ]
