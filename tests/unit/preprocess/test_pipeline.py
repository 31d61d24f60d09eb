"""The streaming Preprocessor over an in-memory source (no ROOT files needed)."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from mlaas4hep.errors import DataQualityError, ExpressionError, SpecError
from mlaas4hep.preprocess.pipeline import FeatureInfo, Preprocessor
from mlaas4hep.spec import validate_spec

from .conftest import FakeSource, make_events, make_spec, spec_dict


def prep(source: FakeSource, **pre: object) -> Preprocessor:
    return Preprocessor(make_spec(**pre), stream_fn=source.stream, names_fn=source.names)


def all_events(source: FakeSource) -> dict[str, ak.Array]:
    return {ds: ak.concatenate([a for _, a in files]) for ds, files in source.files.items()}


def test_fit_reports_features_cutflow_and_counts(source: FakeSource) -> None:
    info = prep(source).fit()
    assert info.names[:3] == ("MET_pt", "HT", "nGoodJet")
    assert len(info.names) == 3 + 4 * 3
    assert (info.task, info.n_classes, info.class_names) == ("binary", 1, ("bkg", "sig"))
    # the cut flow equals a direct numpy computation
    ev = all_events(source)
    for ds, arr in ev.items():
        ngood = ak.to_numpy(ak.sum(arr.Jet_pt > 30, axis=1))
        c1 = ngood >= 2
        c2 = c1 & (ak.to_numpy(arr.MET_pt) > 10)
        flow = [row["datasets"][ds] for row in info.cutflow]
        assert [f["before"] for f in flow] == [len(arr), int(c1.sum())]
        assert [f["after"] for f in flow] == [int(c1.sum()), int(c2.sum())]
        assert info.events[ds]["read"] == len(arr)
        assert info.events[ds]["passed"] == int(c2.sum())
    assert info.cutflow[1]["efficiency"] == pytest.approx(
        info.cutflow[1]["after"] / info.cutflow[1]["before"]
    )
    assert set(info.stats) == set(info.names)
    assert info.offset.dtype == np.float32
    assert (info.scale > 0).all()


def test_features_match_a_direct_computation(source: FakeSource) -> None:
    p = prep(source, cuts=[])
    batch = next(p.batches())
    arr = source.files["sig"][0][1][:300]
    good = arr.Jet_pt[arr.Jet_pt > 30]
    np.testing.assert_allclose(batch.X[:, 1], ak.to_numpy(ak.sum(good, axis=1)), rtol=1e-5)
    lead = ak.to_numpy(ak.max(arr.Jet_pt, axis=1, mask_identity=False, initial=0))
    np.testing.assert_allclose(
        batch.X[:, 3], np.where(ak.num(arr.Jet_pt) > 0, lead, 0.0), rtol=1e-6
    )
    assert batch.X.dtype == np.float32
    assert batch.y.dtype == np.float32
    assert (batch.y == 1).all()
    assert (batch.w == 1).all()


def test_same_event_same_split_whatever_chunking_and_file_order() -> None:
    a, b = make_events(600, 11, signal=True), make_events(500, 12, signal=True)
    bkg = make_events(400, 13, signal=False)

    def splits(order: list[tuple[str, ak.Array]], step: int) -> dict[int, int]:
        d = spec_dict()
        d["data"]["step_size"] = step
        d["data"]["identifiers"] = ["run", "event"]
        src = FakeSource({"sig": order, "bkg": [("b", bkg)]})
        p = Preprocessor(validate_spec(d), stream_fn=src.stream, names_fn=src.names)
        out: dict[int, int] = {}
        for r in p.chunks():
            ids = r.X[:, 0]  # MET_pt is unique enough per event to key the comparison
            out.update(zip(ids.tolist(), r.split.tolist(), strict=True))
        return out

    first = splits([("a", a), ("b", b)], 97)
    second = splits([("b", b), ("a", a)], 1000)
    assert first == second
    assert set(first.values()) == {0, 1, 2}


def test_batches_by_split_partition_the_events(source: FakeSource) -> None:
    p = prep(source)
    info = p.fit()
    sizes = {s: sum(len(b) for b in p.batches(s)) for s in ("train", "validation", "test")}
    total = sum(e["passed"] for e in info.events.values())
    assert sum(sizes.values()) == total
    assert sizes["train"] == sum(e["train"] for e in info.events.values())
    for s, code in (("train", 0), ("test", 2)):
        assert all((b.split == code).all() for b in p.batches(s))
    with pytest.raises(SpecError, match="unknown split"):
        next(p.batches("training"))  # type: ignore[arg-type]


def test_shuffle_is_seeded_mixes_datasets_and_keeps_every_event(source: FakeSource) -> None:
    d = spec_dict()
    d["train"] = {"shuffle_buffer": 400}
    p = Preprocessor(validate_spec(d), stream_fn=source.stream, names_fn=source.names)
    plain = np.concatenate([b.X for b in p.batches("train")])
    one = list(p.batches("train", shuffle=True, seed=5))
    two = list(p.batches("train", shuffle=True, seed=5))
    other = np.concatenate([b.X for b in p.batches("train", shuffle=True, seed=6)])
    mixed = np.concatenate([b.X for b in one])
    assert np.array_equal(mixed, np.concatenate([b.X for b in two]))
    assert not np.array_equal(mixed, other)
    key = lambda X: np.sort(X[:, 0])  # noqa: E731
    assert np.array_equal(key(mixed), key(plain))
    # both classes appear early: datasets are interleaved, not one after the other
    assert set(one[0].y.tolist()) == {0.0, 1.0}


def test_balance_equalises_class_weights(source: FakeSource) -> None:
    p = prep(source, balance=True)
    info = p.fit()
    assert len(info.class_weights) == 2
    sums = np.zeros(2)
    for b in p.batches("train"):
        np.add.at(sums, b.y.astype(int), b.w)
    assert sums[0] == pytest.approx(sums[1], rel=1e-5)


def test_weights_from_dataset_and_global_expressions(source: FakeSource) -> None:
    d = spec_dict(weight="where(MET_pt > 50, 2, 1)")
    d["data"]["datasets"][1]["weight"] = "genWeight"
    p = Preprocessor(validate_spec(d), stream_fn=source.stream, names_fn=source.names)
    for b in p.batches():
        met = b.X[:, 0]
        factor = np.where(met > 50, 2.0, 1.0)
        if (b.y == 1).all():
            np.testing.assert_array_equal(b.w, factor)
        else:
            assert set(np.unique(np.abs(b.w / factor)).tolist()) == {1.0}


def test_nonfinite_features_fail_or_are_dropped(source: FakeSource) -> None:
    define = {
        "HT": "sum(Jet_pt[Jet_pt > 30])",
        "nGoodJet": "count(Jet_pt[Jet_pt > 30])",
        "r": "MET_pt / (nGoodJet - 2)",
    }
    features = {"scalars": ["MET_pt", "r"]}
    with pytest.raises(DataQualityError, match=r"\{'r': \d+\} \(from defines \{'define:r'"):
        prep(source, define=define, features=features).fit()
    p = prep(source, define=define, features=features, nonfinite="drop")
    info = p.fit()
    dropped = sum(e["dropped_nonfinite"] for e in info.events.values())
    assert dropped == info.nonfinite["r"] > 0
    assert info.nonfinite["define:r"] >= dropped  # counted before the cuts
    assert all(np.isfinite(b.X).all() for b in p.batches())


def test_select_filters_objects_and_updates_the_counter(source: FakeSource) -> None:
    p = prep(
        source,
        select={"Jet": "(Jet_pt > 40) & (abs(Jet_eta) < 2.4)"},
        define={"HT": "sum(Jet_pt)", "nGoodJet": "nJet"},
        cuts=["nJet >= 1"],
    )
    batch = next(p.batches())
    arr = source.files["sig"][0][1][:300]
    sel = arr.Jet_pt[(arr.Jet_pt > 40) & (abs(arr.Jet_eta) < 2.4)]
    keep = ak.to_numpy(ak.num(sel)) >= 1
    np.testing.assert_allclose(batch.X[:, 1], ak.to_numpy(ak.sum(sel, axis=1))[keep], rtol=1e-5)
    np.testing.assert_array_equal(batch.X[:, 2], ak.to_numpy(ak.num(sel))[keep])


def test_errors_name_the_place(source: FakeSource) -> None:
    with pytest.raises(ExpressionError, match=r"(?s)preprocess.define.HT.*closest: 'Jet_pt'"):
        _ = prep(source, define={"HT": "sum(Jet_ptt)"}).branches
    with pytest.raises(ExpressionError, match=r"(?s)Jet_pt \+ pt\n {13}\^"):
        _ = prep(source, define={"HT": "Jet_pt + pt"}).branches
    with pytest.raises(ExpressionError, match="defined later"):
        _ = prep(
            source, define={"a": "b + 1", "b": "MET_pt"}, cuts=[], features={"scalars": ["a"]}
        ).branches
    with pytest.raises(SpecError, match="per-object list"):
        prep(source, features={"scalars": ["Jet_pt"]}).fit()
    with pytest.raises(ExpressionError, match=r"cuts\[0\] must be a condition"):
        prep(source, cuts=["MET_pt"]).fit()
    with pytest.raises(ExpressionError, match=r"in preprocess\.cuts"):
        prep(source, cuts=["MET_pt >"])
    with pytest.raises(DataQualityError, match="no training events"):
        prep(source, cuts=["MET_pt < 0"]).fit()


def test_fit_is_cached_by_spec_and_file_identity(source: FakeSource, tmp_path: Path) -> None:
    files = {}
    for ds, entries in source.files.items():
        files[ds] = []
        for name, arr in entries:
            path = tmp_path / name
            path.write_text("x")
            files[ds].append((str(path), arr))
    src = FakeSource(files)
    p = Preprocessor(
        make_spec(), cache_dir=tmp_path / "cache", stream_fn=src.stream, names_fn=src.names
    )
    info = p.fit()
    reads = len(src.reads)
    again = Preprocessor(
        make_spec(), cache_dir=tmp_path / "cache", stream_fn=src.stream, names_fn=src.names
    ).fit()
    assert len(src.reads) == reads  # served from the cache
    assert again.to_dict() == info.to_dict()
    Path(files["sig"][0][0]).write_text("changed")
    Preprocessor(
        make_spec(), cache_dir=tmp_path / "cache", stream_fn=src.stream, names_fn=src.names
    ).fit()
    assert len(src.reads) > reads


def test_feature_info_round_trips_through_json(source: FakeSource) -> None:
    import json

    info = prep(source).fit()
    back = FeatureInfo.from_dict(json.loads(json.dumps(info.to_dict())))
    assert back.names == info.names
    np.testing.assert_array_equal(back.scale, info.scale)
    assert back.cutflow == info.cutflow


def test_label_expressions_for_each_task(source: FakeSource) -> None:
    p = prep(source, task="binary", label="MET_pt > 30")
    for b in p.batches():
        assert set(np.unique(b.y).tolist()) <= {0.0, 1.0}
        np.testing.assert_array_equal(b.y, (b.X[:, 0] > 30).astype(np.float32))
    p = prep(source, task="multiclass", classes=["few", "some", "many"],
             label="where(nGoodJet < 3, 0, where(nGoodJet < 5, 1, 2))")  # fmt: skip
    info = p.fit()
    assert (info.task, info.n_classes, info.class_names) == (
        "multiclass",
        3,
        ("few", "some", "many"),
    )
    batch = next(p.batches())
    assert batch.y.dtype == np.int64
    assert set(np.unique(batch.y).tolist()) <= {0, 1, 2}
    with pytest.raises(DataQualityError, match="must give"):
        prep(source, task="binary", label="nGoodJet").fit()
    p = prep(source, label="log(HT)")
    assert p.fit().task == "regression"
    assert next(p.batches()).y.dtype == np.float32


def test_runtime_errors_name_the_define(source: FakeSource) -> None:
    define = {"HT": "sum(Jet_pt)", "nGoodJet": "nJet", "bad": "sum(Jet_pt * Muon_pt)"}
    with pytest.raises(ExpressionError, match=r"(?s)in preprocess\.define\.bad: .*\^.*Muon_pt"):
        prep(source, define=define).fit()
