"""Run labels, spec flattening, and the per-epoch history and log lines of progress."""

from __future__ import annotations

import pytest

from mlaas4hep.errors import SpecError
from mlaas4hep.jobs import progress as prog
from mlaas4hep.jobs.runs import MAX_TAGS, check_labels, flatten


def test_labels_from_strings_and_mappings() -> None:
    labels = check_labels("  my run ", ["sample=ttbar", "note=a=b", "empty="])
    assert labels.name == "my run"
    assert labels.tags == {"sample": "ttbar", "note": "a=b", "empty": ""}
    assert check_labels("", {"k": "v"}).name is None


@pytest.mark.parametrize(
    ("name", "tags", "needle"),
    [
        ("x" * 129, [], "at most 128"),
        ("ok", ["=v"], "tag key ''"),
        ("ok", [f"k{i}=v" for i in range(MAX_TAGS + 1)], "at most 20"),
        ("ok", ["k=" + "v" * 257], "at most 256"),
        ("ok", ["k=a\nb"], "control characters"),
    ],
)
def test_bad_labels_say_what_to_do(name: str, tags: list[str], needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        check_labels(name, tags)


def test_flatten_keeps_scalar_lists_and_indexes_mapping_lists() -> None:
    doc = {"model": {"kind": "mlp", "hidden": [8, 4]}, "data": {"datasets": [{"name": "a"}]}}
    assert flatten(doc) == {
        "model.kind": "mlp",
        "model.hidden": [8, 4],
        "data.datasets.0.name": "a",
    }


def test_epoch_ends_build_the_history_and_the_log() -> None:
    p = None
    for epoch in (1, 2):
        p = prog.merge(p, {"phase": "train", "epoch": epoch, "epochs": 2, "events": 5})
        metrics = {"train_loss": 1.0 / epoch, "val_auc": 0.5 + epoch / 10, "seconds": 2.0}
        end = {"phase": "validate", "epoch": epoch, "epochs": 2, "metrics": metrics}
        p = prog.merge(p, end)
        assert prog.log_line(end) == (
            f"[mlaas4hep] epoch {epoch}/2: train_loss {1.0 / epoch:.4g}, "
            f"val_auc {0.5 + epoch / 10:.4g} (2.0 s)\n"
        )
    assert p is not None
    assert [h["epoch"] for h in p["history"]] == [1, 2]
    assert p["history"][1]["train_loss"] == 0.5
    # a resumed epoch replaces its earlier record; chunk updates add no log line
    p = prog.merge(p, {"phase": "validate", "epoch": 2, "metrics": {"train_loss": 0.4}})
    assert [h["train_loss"] for h in p["history"]] == [1.0, 0.4]
    assert prog.log_line({"phase": "train", "epoch": 1, "events": 3}) is None
    assert prog.log_line({"phase": "export", "message": "exporting model.onnx"}) == (
        "[mlaas4hep] export: exporting model.onnx\n"
    )


def test_a_job_cannot_send_a_history_itself() -> None:
    line = '{"phase": "train", "history": [{"epoch": 1}], "metrics": {"loss": 1}}'
    parsed = prog.parse_line(line)
    assert parsed is not None
    assert "history" not in prog.merge(None, parsed)


def test_the_history_is_bounded() -> None:
    p = None
    for epoch in range(1, prog.MAX_HISTORY + 11):
        p = prog.merge(p, {"phase": "validate", "epoch": epoch, "metrics": {"loss": 1.0}})
    assert p is not None
    assert len(p["history"]) == prog.MAX_HISTORY
    assert p["history"][0]["epoch"] == 11
