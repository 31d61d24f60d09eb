"""The MLflow export's pure parts: params within MLflow's limits, metrics from the bundle's
history, URIs without credentials, and failures that never raise (no server needed; the
real server is in tests/integration/test_mlflow_export.py)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from mlaas4hep.train import tracking
from mlaas4hep.train.tracking import (
    ExportResult,
    ExportTarget,
    TrackingError,
    experiment_name,
    export_safely,
    redact,
    resolve_tracking_uri,
    write_marker,
)
from mlaas4hep.train.tracking_values import (
    MAX_KEY_LENGTH,
    MAX_PARAM_VALUE_LENGTH,
    MAX_PARAMS,
    epoch_metrics,
    final_metrics,
    flatten_params,
)


def test_params_are_the_flattened_model_train_and_preprocess_sections() -> None:
    spec = {
        "name": "x",
        "data": {"tree": "Events"},
        "model": {"kind": "mlp", "hidden": [16, 8], "dropout": 0.1},
        "train": {"epochs": 3, "early_stopping": None, "device": "cpu"},
        "preprocess": {"define": {"HT": "sum(Jet_pt)"}, "cuts": ["nJet >= 2"], "balance": False},
    }
    params, notes = flatten_params(spec)
    assert params == {
        "model.kind": "mlp",
        "model.hidden": "[16, 8]",
        "model.dropout": "0.1",
        "train.epochs": "3",
        "train.early_stopping": "null",
        "train.device": "cpu",
        "preprocess.define.HT": "sum(Jet_pt)",
        "preprocess.cuts": '["nJet >= 2"]',
        "preprocess.balance": "false",
    }
    assert notes == []


def test_params_stay_within_mlflow_limits_and_say_what_was_cut() -> None:
    defines = {f"v{i}": "x" for i in range(MAX_PARAMS + 5)}
    spec = {
        "model": {"kind": "mlp", "k" * (MAX_KEY_LENGTH + 1): 1, "bad?key": 2, "..": 3},
        "train": {"note": "y" * (MAX_PARAM_VALUE_LENGTH + 100)},
        "preprocess": {"define": defines},
    }
    params, notes = flatten_params(spec)
    assert len(params) == MAX_PARAMS
    assert all(len(k) <= MAX_KEY_LENGTH for k in params)
    assert "model.bad?key" not in params
    assert len(params["train.note"]) == MAX_PARAM_VALUE_LENGTH
    assert params["train.note"].endswith("[truncated]")
    text = "; ".join(notes)
    assert "'model.bad?key' left out" in text
    assert "'train.note' cut to 6000 characters" in text
    assert "params past the first 1000 left out" in text


def test_metrics_come_from_the_history_and_the_final_sections() -> None:
    history = [
        {"epoch": 1, "train_loss": 0.7, "val_auc": 0.6, "seconds": 1.0},
        {"epoch": 2, "train_loss": 0.6, "val_auc": float("nan"), "val_loss": None},
        "not a row",
    ]
    assert epoch_metrics(history) == [
        ("train_loss", 0.7, 1),
        ("val_auc", 0.6, 1),
        ("seconds", 1.0, 1),
        ("train_loss", 0.6, 2),
    ]
    metrics = {
        "evaluated_on": "validation",
        "test": {"auc": 0.8, "confusion_matrix": [[1, 2]], "flag": True},
        "training": {"epochs_run": 2, "stopped_early": False},
        "onnx": {"max_abs_diff": 1e-7},
    }
    assert final_metrics(metrics) == {
        "validation_auc": 0.8,
        "training_epochs_run": 2.0,
        "onnx_max_abs_diff": 1e-7,
    }


def test_uris_never_show_credentials() -> None:
    assert redact("https://alice:s3cret@mlflow.example.org:8443/x") == (
        "https://***@mlflow.example.org:8443/x"
    )
    assert redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    url = tracking._run_url("https://alice:s3cret@host/mlflow/", "1", "abc")
    assert url == "https://host/mlflow/#/experiments/1/runs/abc"


def test_the_tracking_uri_comes_from_the_option_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(TrackingError, match="no MLflow tracking URI"):
        resolve_tracking_uri(None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(None) == "http://env:5000"
    assert resolve_tracking_uri("http://flag:5000") == "http://flag:5000"


def test_experiment_names() -> None:
    assert experiment_name(None, "ttH") == "ttH"
    assert experiment_name("hep/{name}", "ttH") == "hep/ttH"
    assert len(experiment_name(None, "x" * 600)) == 500


def test_an_unreachable_server_is_a_result_not_an_exception(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.onnx").write_bytes(b"onnx")
    (bundle / "spec.yaml").write_text("name: t\nmodel: {kind: mlp}\n")
    (bundle / "metrics.json").write_text(json.dumps({"history": []}))
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = export_safely(bundle, ExportTarget(f"http://u:p@127.0.0.1:{port}"))
    assert not result.ok
    assert result.error is not None
    assert "cannot reach the MLflow tracking server 'http://***@127.0.0.1" in result.error
    assert "u:p" not in result.error


def test_a_directory_that_is_no_bundle_is_named(tmp_path: Path) -> None:
    result = export_safely(tmp_path, ExportTarget("http://127.0.0.1:9"))
    assert not result.ok
    assert "is not a complete mlaas4hep bundle" in str(result.error)


def test_the_marker_replaces_a_planted_link_and_never_makes_a_directory(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "mlflow.json").symlink_to(victim)
    write_marker(bundle, ExportResult(ok=False, tracking_uri="http://x", error="down"))
    assert victim.read_text() == "keep"
    assert not (bundle / "mlflow.json").is_symlink()
    assert json.loads((bundle / "mlflow.json").read_text())["error"] == "down"
    with pytest.raises(NotADirectoryError):
        write_marker(tmp_path / "typo", ExportResult(ok=True, tracking_uri="http://x"))
    assert not (tmp_path / "typo").exists()
