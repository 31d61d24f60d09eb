"""The evaluation part of the model card, and the card's table and number formats.

Tables are Markdown with every column padded to one width (readable as plain text too)
and numbers right-aligned; efficiencies are percentages with 4 significant digits,
other figures 4 significant digits, counts with thousands separators, ``-`` for a value
that is missing or could not be measured.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from mlaas4hep.spec import DatasetSpec, PreprocessSpec
from mlaas4hep.train.working_points import MIN_EVENTS

_TOP_IMPORTANCES = 10


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Collection[int] = ()
) -> str:
    """A Markdown table, columns padded to equal width; *numeric* columns right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows), 3) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (w + 1) + ":" if i in numeric else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def cell(text: str) -> str:
    """*text* as one Markdown table cell: ``|`` escaped (an expression's ``a | b``)."""
    return text.replace("|", "\\|")


def dataset_label(dataset: DatasetSpec, pre: PreprocessSpec) -> str:
    """What a dataset's events are labelled with, as a table cell: its class name (with
    the class index), its label expression or number, else the global label expression
    (``preprocess.label``); ``-`` when none."""
    if dataset.class_ is not None:
        classes = pre.classes or []
        index = f" (class {classes.index(dataset.class_)})" if dataset.class_ in classes else ""
        return cell(f"{dataset.class_}{index}")
    if isinstance(dataset.label, str):
        return cell(f"`{dataset.label}`")
    if dataset.label is not None:
        return str(dataset.label)
    return cell(f"`{pre.label}`") if pre.label else "-"


def number(value: Any) -> str:
    """4 significant digits for floats; ``-`` for None."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def percent(value: Any) -> str:
    """An efficiency as a percentage with 4 significant digits (0.99993 -> ``99.99 %``)."""
    if not isinstance(value, int | float):
        return "-"
    return f"{100 * value:.4g} %"


def count(value: Any) -> str:
    """An event count with thousands separators."""
    return f"{value:,}" if isinstance(value, int) else number(value)


def class_name(names: Sequence[str], k: int) -> str:
    return names[k] if k < len(names) else f"class {k}"


def metrics_section(metrics: Mapping[str, Any]) -> str:
    """``## Metrics``: headline figures, working points, KS tests, importances, plots."""
    test = metrics.get("test", {})
    where = metrics.get("evaluated_on", "test")
    parity = metrics.get("onnx", {}).get("max_abs_diff")
    intro = (
        f"On the {where} split: {count(test.get('n_events'))} events, sum of weights "
        f"{number(test.get('sum_weights'))}. ONNX Runtime vs native, max |difference| of "
        f"the scores: {number(parity)}."
    )
    classes = (metrics.get("confusion_matrix") or {}).get("classes") or []
    parts = [f"## Metrics ({where} split)\n\n{intro}\n\n{_headline(test, classes)}\n"]
    parts += _working_points(metrics.get("working_points"))
    parts += _confusion(metrics.get("confusion_matrix"), metrics.get("task"))
    parts += _regression(metrics.get("regression"))
    parts += _overtraining(metrics.get("overtraining"))
    parts += _importance(metrics.get("permutation_importance"))
    parts.append(_plots(metrics))
    return "\n".join(parts)


_HEADLINE = (
    ("loss", "loss"),
    ("accuracy", "accuracy"),
    ("auc", "ROC AUC"),
    ("rmse", "RMSE"),
    ("mae", "MAE"),
    ("response", "response"),
    ("resolution", "resolution"),
)


def _headline(test: Mapping[str, Any], classes: Sequence[str]) -> str:
    rows = [
        [label, number(test[key]), number(test.get(f"{key}_unweighted"))]
        for key, label in _HEADLINE
        if key in test
    ]
    per_class = test.get("auc_per_class") or []
    unweighted = test.get("auc_per_class_unweighted") or []
    for k, value in enumerate(per_class):
        other = unweighted[k] if k < len(unweighted) else None
        rows.append([f"ROC AUC {class_name(classes, k)} vs rest", number(value), number(other)])
    return table(["metric", "weighted", "unweighted"], rows, numeric={1, 2})


def _working_points(doc: Any) -> list[str]:
    if not isinstance(doc, Mapping) or not doc.get("weighted"):
        return []
    unweighted = list(doc.get("unweighted") or [])
    rows = []
    for i, p in enumerate(doc["weighted"]):
        u = unweighted[i] if i < len(unweighted) else {}
        at = "ε_B" if p["fixed"] == "eff_b" else "ε_S"
        rows.append(
            [
                str(p["class"]),
                f"{at} = {percent(p['target'])}",
                percent(p["eff_s"]),
                percent(p["eff_b"]),
                number(p["rejection"]) if p["eff_s"] is not None else "-",
                number(p["threshold"]),
                percent(u.get("eff_s")),
                percent(u.get("eff_b")),
            ]
        )
    header = ["signal", "working point", "ε_S", "ε_B", "1/ε_B", "score >=",
              "ε_S unweighted", "ε_B unweighted"]  # fmt: skip
    note = (
        "A cut on the signal class's score (one class against the rest). ε_S at fixed "
        "ε_B and ε_B at fixed ε_S are interpolated linearly between the points of the "
        "ROC curve; `score >=` is the nearest real cut on the safe side. `-`: fewer than "
        f"{MIN_EVENTS:g} (effective) background or signal events pass the cut, too few to "
        "measure it."
    )
    return [f"### Working points\n\n{note}\n\n{table(header, rows, numeric=set(range(2, 8)))}\n"]


def _confusion(doc: Any, task: Any) -> list[str]:
    if task != "multiclass" or not isinstance(doc, Mapping) or not doc.get("weighted"):
        return []
    classes = [str(c) for c in doc.get("classes", [])]
    rows = [
        [c, *(percent(v) for v in row)] for c, row in zip(classes, doc["weighted"], strict=False)
    ]
    header = ["true \\ predicted", *classes]
    text = table(header, rows, numeric=set(range(1, len(header))))
    return [f"### Confusion matrix\n\nWeighted, each row normalised to its true class.\n\n{text}\n"]


def _regression(doc: Any) -> list[str]:
    if not isinstance(doc, Mapping):
        return []
    if doc.get("definition") == "ratio":
        how = (
            "Response: median of prediction / truth; resolution: half the 16-84% width of "
            "prediction / truth, divided by the response."
        )
    else:
        how = (
            "Response: median of prediction - truth; resolution: half the 16-84% width of "
            "prediction - truth."
        )
    rows = [
        [number(b["low"]), number(b["high"]), count(b["n_events"]), number(b["response"]),
         number(b["resolution"])]
        for b in doc.get("bins", [])
    ]  # fmt: skip
    header = ["truth from", "to", "events", "response", "resolution"]
    text = table(header, rows, numeric=set(range(5)))
    return [f"### Response and resolution\n\n{how} Weighted, in bins of the truth.\n\n{text}\n"]


def _overtraining(doc: Any) -> list[str]:
    if not isinstance(doc, Mapping) or not doc.get("tests"):
        return []
    rows = [
        [str(t["class"]), str(t["score"]), count(t["n_train"]), count(t["n_test"]),
         number(t.get("ks_pvalue")), number(t.get("ks_pvalue_weighted"))]
        for t in doc["tests"]
    ]  # fmt: skip
    header = ["class", "score", "train events", "test events", "KS p-value",
              "KS p-value weighted"]  # fmt: skip
    note = (
        "Kolmogorov-Smirnov test of the score distribution, train sample vs test split, per "
        "true class; a p-value far below 0.01 points at overtraining."
    )
    return [f"### Overtraining\n\n{note}\n\n{table(header, rows, numeric={2, 3, 4, 5})}\n"]


def _importance(doc: Any) -> list[str]:
    if not isinstance(doc, Mapping) or not doc.get("features"):
        return []
    what = "decrease of the ROC AUC" if doc.get("metric") == "auc" else "increase of the MSE"
    features = list(doc["features"])
    rows = [[str(f["name"]), number(f["importance"]), number(f["std"])]
            for f in features[:_TOP_IMPORTANCES]]  # fmt: skip
    note = (
        f"The {what} (weighted) when one feature is shuffled across {count(doc.get('events'))} "
        f"test events, mean of {doc.get('repeats')} shuffle(s) and their spread; the top "
        f"{len(rows)} of {len(features)}."
    )
    text = table(["feature", "importance", "spread"], rows, numeric={1, 2})
    return [f"### Permutation importance\n\n{note}\n\n{text}\n"]


def _plots(metrics: Mapping[str, Any]) -> str:
    names = metrics.get("plots") or ["roc.png", "scores.png", "history.png"]
    listed = ", ".join(f"`plots/{n}`" for n in names)
    return f"Plots (each also as PDF): {listed}.\n"
