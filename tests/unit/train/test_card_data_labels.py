"""The model card's data table says what labels each dataset's events: a class name with
its index, a label expression (a ``|`` in it escaped for Markdown), a number, or the
global label expression."""

from __future__ import annotations

from mlaas4hep.spec import validate_spec
from mlaas4hep.train.bundle import _data_section


def spec(datasets: list[dict[str, object]], **pre: object) -> str:
    doc = {
        "name": "card",
        "data": {"datasets": datasets},
        "preprocess": {"features": {"scalars": ["MET_pt"]}, **pre},
    }
    return _data_section(validate_spec(doc))


def row(section: str, dataset: str) -> list[str]:
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| {dataset} "))
    return [c.strip() for c in line.strip("|").split(" | ")]


def test_classes_and_label_expressions_show_in_the_data_table() -> None:
    section = spec(
        [
            {"name": "ttH", "files": ["s.root"], "class": "ttH"},
            {"name": "ttbar", "files": ["b.root"], "class": "ttbar", "cuts": ["nMuon >= 1"]},
            {"name": "QCD", "files": ["b.root", "c.root"], "class": "QCD"},
        ],
        classes=["QCD", "ttbar", "ttH"],
    )
    assert row(section, "ttH")[1] == "ttH (class 2)"
    assert row(section, "ttbar")[1] == "ttbar (class 1)"
    assert row(section, "QCD")[:3] == ["QCD", "QCD (class 0)", "2"]


def test_expressions_numbers_and_the_global_label() -> None:
    section = spec(
        [
            {"name": "one", "files": ["s.root"], "label": "(nMuon >= 1) | (nElectron >= 1)"},
            {"name": "two", "files": ["b.root"], "label": 0},
        ],
        task="binary",
    )
    assert row(section, "one")[1] == r"`(nMuon >= 1) \| (nElectron >= 1)`"
    assert row(section, "two")[1] == "0"
    glob = spec([{"name": "all", "files": ["s.root"]}], label="nMuon >= 1", task="binary")
    assert row(glob, "all")[1] == "`nMuon >= 1`"
