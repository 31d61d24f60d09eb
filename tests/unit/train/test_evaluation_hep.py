"""The evaluation a physicist would publish, checked against scikit-learn, SciPy and
distributions whose answer is known analytically; then a real ``mlaas4hep run`` (MLP and
XGBoost) on generated ROOT files, checking metrics.json, the plots and the model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from scipy import stats
from sklearn import metrics as skm

from mlaas4hep.cli import main
from mlaas4hep.data.samples import write_sample_set
from mlaas4hep.preprocess.pipeline import FeatureInfo
from mlaas4hep.train import card, evaluate, importance, overtraining, resolution
from mlaas4hep.train.evaluate import ScoreAccumulator
from mlaas4hep.train.report import evaluate_run
from mlaas4hep.train.working_points import Roc, all_working_points, effective_count

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _binary_sample(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    # Rounded scores: many ties, as a tree model gives.
    s = np.round(np.clip(rng.normal(0.4 + 0.2 * y, 0.15), 0, 1), 2)
    w = rng.uniform(0.2, 3.0, n)
    return s, y, w


# -- ROC, AUC, working points --------------------------------------------------------------


def test_roc_points_match_sklearn_with_weights_and_ties() -> None:
    s, y, w = _binary_sample()
    fpr, tpr, thresholds = evaluate.roc_points(s, y == 1, w)
    ref_fpr, ref_tpr, ref_thr = skm.roc_curve(y, s, sample_weight=w, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, atol=1e-12)
    np.testing.assert_array_equal(thresholds[1:], ref_thr[1:])
    assert np.isinf(thresholds[0])


def test_weighted_and_unweighted_auc_match_sklearn() -> None:
    s, y, w = _binary_sample()
    m = evaluate.classification_metrics("binary", s[:, None], y, w, 2)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert m["auc_unweighted"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert m["auc"] != pytest.approx(m["auc_unweighted"], abs=1e-6)  # the weights matter
    pred = (s >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred, sample_weight=w))
    assert m["accuracy_unweighted"] == pytest.approx(skm.accuracy_score(y, pred))


def test_multiclass_one_vs_rest_auc_and_normalised_confusion_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 3000)
    logits = rng.normal(size=(3000, 3)) + 1.5 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    w = rng.uniform(0.5, 2.0, 3000)
    m = evaluate.classification_metrics("multiclass", p, y, w, 3)
    for k in range(3):
        ref = skm.roc_auc_score(y == k, p[:, k], sample_weight=w)
        assert m["auc_per_class"][k] == pytest.approx(ref, abs=1e-12)
        assert m["auc_per_class_unweighted"][k] == pytest.approx(
            skm.roc_auc_score(y == k, p[:, k]), abs=1e-12
        )
    pred = p.argmax(axis=1)
    cm = evaluate.normalized_confusion(evaluate.confusion_matrix(y, pred, w, 3))
    ref_cm = skm.confusion_matrix(y, pred, sample_weight=w, normalize="true")
    np.testing.assert_allclose(cm, ref_cm, atol=1e-12)


def _analytic(n: int = 100_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background scores uniform on [0, 1], signal with density 2s (CDF s^2), as quantiles.

    A cut ``score >= t`` keeps eff_b = 1 - t and eff_s = 1 - t^2, so
    eff_s(eff_b = x) = 2x - x^2 and eff_b(eff_s = y) = 1 - sqrt(1 - y).
    """
    u = (np.arange(n) + 0.5) / n
    scores = np.r_[u, np.sqrt(u)]
    y = np.r_[np.zeros(n), np.ones(n)]
    return scores[:, None], y, np.ones(2 * n)


def test_working_points_on_a_distribution_with_a_known_answer() -> None:
    scores, y, w = _analytic()
    points = all_working_points("binary", scores, y, w, ["bkg", "sig"])["weighted"]
    by_target = {(p["fixed"], p["target"]): p for p in points}
    for x in (0.1, 0.01, 0.001):
        p = by_target["eff_b", x]
        assert p["class"] == "sig"
        assert p["eff_s"] == pytest.approx(2 * x - x * x, abs=2e-5)
        assert p["rejection"] == pytest.approx(1 / x)
        assert p["threshold"] == pytest.approx(1 - x, abs=2e-5)
        assert p["background_events"] == pytest.approx(x * 100_000)
    for eff_s in (0.5, 0.7, 0.9):
        p = by_target["eff_s", eff_s]
        assert p["eff_b"] == pytest.approx(1 - np.sqrt(1 - eff_s), abs=2e-5)
        assert p["threshold"] == pytest.approx(np.sqrt(1 - eff_s), abs=2e-5)


def test_a_working_point_needs_ten_expected_background_events() -> None:
    # 15,000 background events: eff_b = 0.1% keeps 15 (measured), unweighted. Weighted with
    # every other background event at weight 0, the effective count is 7,500: 7.5 events.
    n = 15_000
    u = (np.arange(n) + 0.5) / n
    scores = np.r_[u, np.sqrt(u)][:, None]
    y = np.r_[np.zeros(n), np.ones(n)]
    w = np.r_[np.arange(n) % 2, np.ones(n)].astype(float)
    assert effective_count(w[:n]) == pytest.approx(7500)
    wp = all_working_points("binary", scores, y, w, ["bkg", "sig"])
    weighted = {(p["fixed"], p["target"]): p for p in wp["weighted"]}
    unweighted = {(p["fixed"], p["target"]): p for p in wp["unweighted"]}
    assert unweighted["eff_b", 0.001]["eff_s"] == pytest.approx(0.002, abs=2e-4)
    assert weighted["eff_b", 0.001]["eff_s"] is None
    assert weighted["eff_b", 0.001]["threshold"] is None
    assert weighted["eff_b", 0.01]["eff_s"] == pytest.approx(0.0199, abs=3e-4)


def test_working_points_of_a_single_class_are_none() -> None:
    roc = Roc.of(np.linspace(0, 1, 50), np.ones(50, bool), np.ones(50))
    assert not roc.defined
    wp = all_working_points("binary", np.linspace(0, 1, 50)[:, None], np.ones(50), np.ones(50), [])
    assert all(p["eff_s"] is None or p["eff_b"] is None for p in wp["weighted"])


def test_multiclass_working_points_are_one_vs_rest_per_class() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 6000)
    p = rng.dirichlet(np.ones(3), 6000)
    p[np.arange(6000), y] += 1.0
    p /= p.sum(axis=1, keepdims=True)
    wp = all_working_points("multiclass", p, y, np.ones(6000), ["a", "b", "c"])["unweighted"]
    assert [q["class"] for q in wp] == ["a"] * 6 + ["b"] * 6 + ["c"] * 6
    fpr, tpr, _ = skm.roc_curve(y == 1, p[:, 1], drop_intermediate=False)
    at_10 = next(q for q in wp if q["class"] == "b" and q["target"] == 0.1)
    assert at_10["eff_s"] == pytest.approx(np.interp(0.1, fpr, tpr), abs=1e-3)


# -- Kolmogorov-Smirnov --------------------------------------------------------------------


def test_ks_pvalues_match_scipy() -> None:
    rng = np.random.default_rng(7)
    train, test = ScoreAccumulator("binary", 2), ScoreAccumulator("binary", 2)
    for acc, n, shift in ((train, 5000, 0.0), (test, 3000, 0.02)):
        y = rng.integers(0, 2, n)
        s = np.clip(rng.normal(0.4 + 0.2 * y + shift, 0.15), 0, 1)
        acc.add(s[:, None], y, rng.uniform(0.5, 1.5, n))
    records = overtraining.ks_tests(train, test, ["bkg", "sig"])
    s_tr, y_tr, _ = train.arrays()
    s_te, y_te, _ = test.arrays()
    for cls, record in enumerate(records):
        ref = stats.ks_2samp(s_tr[y_tr == cls, 0], s_te[y_te == cls, 0])
        assert record["class"] == ["bkg", "sig"][cls]
        assert record["score"] == "sig"
        assert record["ks_pvalue"] == pytest.approx(ref.pvalue, rel=1e-12)
        assert record["ks_statistic"] == pytest.approx(ref.statistic, rel=1e-12)


def test_weighted_ks_with_unit_weights_is_scipys_asymptotic_test() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.normal(0, 1, 4000), rng.normal(0.05, 1, 2500)
    d, p = overtraining.weighted_ks(a, b, np.ones(len(a)), np.ones(len(b)))
    ref = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic, rel=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


def test_weighted_ks_statistic_equals_the_duplicated_sample() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.normal(0, 1, 300), rng.normal(0.2, 1, 200)
    wa, wb = rng.integers(1, 4, 300), rng.integers(1, 4, 200)
    d, p = overtraining.weighted_ks(a, b, wa.astype(float), wb.astype(float))
    ref = stats.ks_2samp(np.repeat(a, wa), np.repeat(b, wb))
    assert d == pytest.approx(ref.statistic, rel=1e-12)
    assert p is not None
    assert 0 < p < 1
    assert overtraining.weighted_ks(a, b, np.zeros(300), np.ones(200))[1] is None


# -- regression ----------------------------------------------------------------------------


def test_weighted_quantile_with_unit_weights_is_hazen() -> None:
    x = np.random.default_rng(10).normal(size=501)
    q = np.array([0.16, 0.5, 0.84])
    np.testing.assert_allclose(
        resolution.weighted_quantile(x, np.ones(501), q), np.quantile(x, q, method="hazen")
    )
    # Weight 2 = the event twice.
    w = np.r_[np.full(250, 2.0), np.ones(251)]
    dup = np.r_[np.repeat(x[:250], 2), x[250:]]
    np.testing.assert_allclose(
        resolution.weighted_quantile(x, w, q), np.quantile(dup, q, method="hazen"), atol=0.02
    )


def test_response_and_resolution_with_a_known_bias_and_width() -> None:
    rng = np.random.default_rng(11)
    truth = rng.uniform(10, 100, 200_000)
    pred = truth * (1.05 + 0.1 * rng.normal(size=len(truth)))
    report = resolution.regression_report(pred, truth, np.ones(len(truth)))
    assert report["definition"] == "ratio"
    assert report["response"] == pytest.approx(1.05, abs=2e-3)
    assert report["resolution"] == pytest.approx(0.1 / 1.05, rel=0.02)
    assert len(report["bins"]) == resolution.N_BINS
    for b in report["bins"]:
        assert b["response"] == pytest.approx(1.05, abs=5e-3)
        assert b["resolution_unweighted"] == pytest.approx(0.1 / 1.05, rel=0.05)
    # Targets that can be negative: differences, in the target's unit.
    truth = rng.uniform(-5, 5, 200_000)
    pred = truth + 0.3 + 0.5 * rng.normal(size=len(truth))
    report = resolution.regression_report(pred, truth, rng.uniform(0.5, 1.5, len(truth)))
    assert report["definition"] == "difference"
    assert report["response"] == pytest.approx(0.3, abs=0.01)
    assert report["resolution"] == pytest.approx(0.5, rel=0.02)


def test_regression_metrics_come_weighted_and_unweighted() -> None:
    y = np.array([1.0, 2.0, 3.0])
    scores = np.array([[1.5], [2.0], [2.0]])
    w = np.array([1.0, 1.0, 2.0])
    m = evaluate.regression_metrics(scores, y, w)
    assert m["loss"] == pytest.approx(skm.mean_squared_error(y, scores, sample_weight=w))
    assert m["loss_unweighted"] == pytest.approx(skm.mean_squared_error(y, scores))
    assert m["mae_unweighted"] == pytest.approx(skm.mean_absolute_error(y, scores))


# -- permutation importance ----------------------------------------------------------------


def _onnx_logistic(path: Path, coefficients: list[float]) -> Any:
    """A fixed ONNX model: sigmoid(X @ coefficients), with the bundle's tensor names."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.array(coefficients, np.float32)[:, None], "coef")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "coef"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["scores"]),
        ],
        "logistic",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, len(coefficients)])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 1])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_permutation_importance_through_onnx_finds_the_only_feature_used(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    X = rng.normal(size=(5000, 4)).astype(np.float32)
    y = (X[:, 2] + 0.5 * rng.normal(size=5000) > 0).astype(np.int64)
    sess = _onnx_logistic(tmp_path / "m.onnx", [0.0, 0.0, 2.0, 0.0])
    report = importance.permutation_importance(
        importance.onnx_predict(sess), X, y, np.ones(5000), "binary", 2, ["a", "b", "c", "d"]
    )
    assert report["features"][0]["name"] == "c"
    assert report["features"][0]["importance"] > 0.3  # AUC ~0.92 -> ~0.5
    assert report["baseline"] == pytest.approx(skm.roc_auc_score(y, X[:, 2]), abs=1e-6)
    for row in report["features"][1:]:
        assert row["importance"] == 0.0
        assert row["std"] == 0.0
    assert (report["metric"], report["repeats"], report["grouping"]) == ("auc", 3, "column")


def test_permutation_importance_of_a_regression_is_the_rise_of_the_mse() -> None:
    rng = np.random.default_rng(13)
    X = rng.normal(size=(3000, 3))
    y = 2 * X[:, 0]
    report = importance.permutation_importance(
        lambda x: 2 * x[:, :1], X, y, np.ones(3000), "regression", 0, ["x0", "x1", "x2"]
    )
    top = report["features"][0]
    assert top["name"] == "x0"
    assert top["importance"] == pytest.approx(8.0, rel=0.1)  # E[(2x - 2x')^2] = 8
    assert report["metric"] == "mse"


def test_many_object_columns_are_shuffled_per_field() -> None:
    names = [f"Jet_{f}_{i}" for f in ("pt", "eta") for i in range(40)] + ["MET_pt"]
    groups = importance.feature_groups(names)
    assert [g for g, _ in groups] == ["Jet_pt_*", "Jet_eta_*", "MET_pt"]
    assert groups[0][1] == list(range(40))
    assert len(importance.feature_groups(names[:10])) == 10  # few columns: one by one


def test_reservoir_sample_is_uniform_over_the_stream_and_seeded() -> None:
    def fill(seed: int) -> np.ndarray:
        sample = importance.ReservoirSample(size=2000, seed=seed)
        for start in range(0, 100_000, 7000):  # ordered stream, as datasets come one by one
            idx = np.arange(start, min(start + 7000, 100_000))
            sample.add(idx[:, None].astype(np.float32), idx, np.ones(len(idx)))
        got = sample.arrays()
        assert got is not None
        return got[1]

    first = fill(1)
    assert len(first) == 2000
    assert len(np.unique(first)) == 2000
    assert abs(first.mean() - 50_000) < 3 * 100_000 / np.sqrt(12 * 2000)
    assert np.array_equal(first, fill(1))
    assert not np.array_equal(first, fill(2))


# -- plots and card, without training ------------------------------------------------------


def _info(task: str, n_classes: int, names: tuple[str, ...]) -> FeatureInfo:
    features = ("f0", "f1")
    return FeatureInfo(
        names=features, task=task, n_classes=n_classes, class_names=names,  # type: ignore[arg-type]
        normalize="none", offset=np.zeros(2, np.float32), scale=np.ones(2, np.float32), stats={},
    )  # fmt: skip


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_evaluate_run_writes_every_plot_as_png_and_pdf(task: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(14)
    k = 3 if task == "multiclass" else 0
    train, test = ScoreAccumulator(task, k), ScoreAccumulator(task, k)  # type: ignore[arg-type]
    X = rng.normal(size=(2000, 2)).astype(np.float32)
    for acc in (train, test):
        if task == "multiclass":
            y = rng.integers(0, 3, 2000)
            p = rng.dirichlet(np.ones(3), 2000) + np.eye(3)[y]
            acc.add(p / p.sum(axis=1, keepdims=True), y, np.ones(2000))
        else:
            y = rng.uniform(1, 10, 2000)
            acc.add((y * rng.normal(1, 0.1, 2000))[:, None], y, np.ones(2000))
    sample = importance.ReservoirSample(size=500)
    sample.add(X, test.arrays()[1][:2000], np.ones(2000))

    def predict(x: np.ndarray) -> np.ndarray:
        if task == "multiclass":
            return np.tile([0.2, 0.3, 0.5], (len(x), 1)) + 0.01 * x[:, :1]
        return x[:, :1]

    names = ("a", "b", "c") if task == "multiclass" else ()
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1}]
    result = evaluate_run(
        tmp_path, _info(task, k, names), history, train, test, predict=predict, sample=sample
    )
    expected = {"history", "scores", "scores_log", "permutation_importance"}
    expected |= {"roc", "confusion"} if task == "multiclass" else {"regression", "response"}
    assert {p.stem for p in result.plots} == expected
    for stem in expected:
        assert (tmp_path / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
    if task == "multiclass":
        cm = np.array(result.sections["confusion_matrix"]["weighted"])
        np.testing.assert_allclose(cm.sum(axis=1), 1.0)
        assert len(result.sections["working_points"]["weighted"]) == 18
    else:
        assert result.sections["regression"]["definition"] == "ratio"
        assert result.test["response"] == pytest.approx(1.0, abs=0.02)


def test_card_tables_are_aligned_and_numbers_rounded() -> None:
    rows = [["a", card.percent(0.9999333333333333)], ["long name", card.percent(0.5)]]
    text = card.table(["cut", "efficiency"], rows, numeric={1})
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert "99.99 %" in text
    assert "0.9999333" not in text
    assert lines[1].endswith(":|")
    assert card.count(1234567) == "1,234,567"
    assert card.number(None) == "-"


# -- a real run ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("hep-eval")
    write_sample_set(directory / "data", 2500, seed=21)
    return directory


def _spec(data_dir: Path, model: dict[str, Any]) -> Path:
    spec = yaml.safe_load((EXAMPLES / "tth-vs-qcd.yaml").read_text())
    for d in spec["data"]["datasets"]:
        d["files"] = [str(data_dir / f) for f in d["files"]]
    spec["data"]["step_size"] = 1000
    spec["model"] = model
    if model["kind"] == "xgboost":  # as examples/tth-xgboost.yaml: no negative weights, balanced
        spec["data"]["datasets"][1].pop("weight")
        spec["preprocess"]["balance"] = True
    spec["train"] = {"epochs": 2, "batch_size": 256, "device": "cpu", "seed": 1}
    path = data_dir / f"{model['kind']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "model",
    [
        {"kind": "mlp", "hidden": [16]},
        {"kind": "xgboost", "n_estimators": 20, "max_depth": 3},
    ],
    ids=["mlp", "xgboost"],
)
def test_mlaas4hep_run_writes_the_evaluation(
    model: dict[str, Any], data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert main(["run", str(_spec(data_dir, model)), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    for key in ("auc", "auc_unweighted", "accuracy_unweighted", "loss_unweighted"):
        assert isinstance(test[key], float)
    wp = metrics["working_points"]
    assert len(wp["weighted"]) == len(wp["unweighted"]) == 6
    assert {p["fixed"] for p in wp["weighted"]} == {"eff_b", "eff_s"}
    ks = metrics["overtraining"]["tests"]
    assert [t["class"] for t in ks] == ["QCD", "ttH"]
    assert all(0 <= t["ks_pvalue"] <= 1 and 0 <= t["ks_pvalue_weighted"] <= 1 for t in ks)
    pi = metrics["permutation_importance"]
    assert pi["metric"] == "auc"
    assert len(pi["features"]) == 36
    assert pi["events"] > 100
    assert metrics["confusion_matrix"]["normalized_by"] == "true class"
    assert set(metrics["evaluation_seconds"]) == {"figures", "permutation_importance", "plots"}
    stems = {"roc", "scores", "scores_log", "history", "permutation_importance"}
    if model["kind"] == "xgboost":
        stems.add("importance")
    assert set(metrics["plots"]) == {f"{s}.png" for s in stems}
    for stem in stems:
        assert (out / "plots" / f"{stem}.png").is_file()
        assert (out / "plots" / f"{stem}.pdf").is_file()
    text = (out / "README.md").read_text()
    for section in ("## Weights", "## Cuts", "### Working points", "### Overtraining",
                    "### Permutation importance", "`plots/roc.png`"):  # fmt: skip
        assert section in text, section
    if model["kind"] == "xgboost":
        assert "No event weights" in text
        assert "`preprocess.balance: true`" in text
    else:
        assert "Event weights: `QCD`: `genWeight`." in text
    cuts = text[text.index("## Cuts") : text.index("## Features")]
    assert "{" not in cuts  # no Python dict in the cut flow
    cut_rows = [line for line in text.splitlines() if line.startswith("| MET_pt > 20")]
    assert len(cut_rows) == 1
    assert " %" in cut_rows[0]
