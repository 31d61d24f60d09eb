"""``mlaas4hep apply`` / ``predict`` / ``Model`` on a model trained by ``mlaas4hep run``:
real generated ROOT files, the real preprocessing, ONNX Runtime, friend trees read back."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import uproot
import yaml

from mlaas4hep.apply import Model, score_file
from mlaas4hep.cli import main
from mlaas4hep.data.samples import write_sample
from mlaas4hep.errors import SpecError
from mlaas4hep.preprocess.pipeline import Preprocessor
from mlaas4hep.preprocess.split import SPLIT_CODES, assign_split
from mlaas4hep.spec import load_spec

IDS = ["run", "luminosityBlock", "event"]
# signal's event numbers are (seed << 40) + ...: above 2**53 (and odd), so a float64
# anywhere on the way would change them; background's are above 2**24.
SIGNAL_SEED, BACKGROUND_SEED, EVENTS = 2**14 + 1, 3, 3000


def spec_dict(samples: Path, datasets: list[dict[str, Any]], model: dict[str, Any]) -> Any:
    spec = yaml.safe_load(Path("examples/tth-vs-qcd.yaml").read_text())
    spec["data"]["datasets"] = datasets
    spec["data"]["step_size"] = 1000
    spec["model"] = model
    spec["train"] = {"epochs": 1, "batch_size": 512, "device": "cpu", "seed": 1}
    return spec


def train(tmp: Path, name: str, spec: Any) -> Path:
    spec["name"] = spec["deploy"]["name"] = name
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp / name
    assert main(["run", str(path), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("apply-samples")
    write_sample(d / "signal.root", "signal", EVENTS, seed=SIGNAL_SEED, basket_entries=500)
    write_sample(d / "background.root", "background", EVENTS, seed=BACKGROUND_SEED)
    return d


@pytest.fixture(scope="module")
def bundle(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    datasets = [
        {"name": "ttH", "files": [str(samples / "signal.root")], "label": 1},
        {"name": "QCD", "files": [str(samples / "background.root")], "label": 0},
    ]
    model = {"kind": "xgboost", "n_estimators": 20, "max_depth": 3}
    return train(tmp_path_factory.mktemp("runs"), "tth", spec_dict(samples, datasets, model))


def read(path: Path, tree: str = "Events") -> dict[str, np.ndarray]:
    with uproot.open(path) as f:
        return {k: np.asarray(v) for k, v in f[tree].arrays(library="np").items()}


def test_bundle_carries_what_applying_needs(bundle: Path) -> None:
    model = Model.load(bundle)
    f = model.features
    assert f.format == "mlaas4hep-bundle/2"
    assert f.identifiers == tuple(IDS)
    assert f.branches["event"] == "uint64"
    assert f.branches["Jet_pt"] == "var * float32"
    assert "HT" not in f.branches  # a define, not an input branch
    assert model.output_columns == ("tth_score",)


def test_apply_equals_the_runs_test_evaluation(bundle: Path, samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "friends"
    inputs = [str(samples / "signal.root"), str(samples / "background.root")]
    assert main(["apply", str(bundle), *inputs, "--out", str(out), "--step-size", "700"]) == 0
    spec = load_spec(bundle / "spec.yaml")
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    # what `run` evaluated on: the test split of its own preprocessing, through ONNX Runtime
    expected = np.concatenate(
        [
            session.run(["scores"], {"features": b.X})[0][:, 0]
            for b in Preprocessor(spec).batches("test")
        ]
    )
    got = []
    for name in ("signal", "background"):
        source = read(samples / f"{name}.root")
        friend = read(out / f"{name}.tth.friend.root")
        n = len(source["event"])
        assert len(friend["event"]) == n  # same entries, same order, exact ids
        for i in IDS:
            assert friend[i].dtype == source[i].dtype
            np.testing.assert_array_equal(friend[i], source[i])
        passed = friend["tth_pass"]
        assert passed.dtype == np.bool_
        assert 0 < passed.sum() < n
        assert np.isnan(friend["tth_score"][~passed]).all()
        assert np.isfinite(friend["tth_score"][passed]).all()
        ids = [friend[i][passed] for i in IDS]
        split = spec.preprocess.split
        codes = assign_split(ids, validation=split.validation, test=split.test, seed=split.seed)
        got.append(friend["tth_score"][passed][codes == SPLIT_CODES["test"]])
    scores = np.concatenate(got)
    assert len(scores) == len(expected) > 100
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    assert read(samples / "signal.root")["event"].min() > 2**53
    assert read(samples / "background.root")["event"].min() > 2**24


def test_model_predict_on_uproot_arrays_equals_score_file(bundle: Path, samples: Path) -> None:
    model = Model.load(bundle)
    path = samples / "signal.root"
    chunks = list(score_file([model], str(path), step_size=1000))
    with uproot.open(path) as f:
        tree = f["Events"]
        events = tree.arrays(model.branches(tree.keys()))  # what a coffea processor holds
    scores = model.predict(events)
    expected = np.concatenate([c.columns["tth_score"] for c in chunks])
    assert scores.shape == (EVENTS,)
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores, expected)  # NaN where failing, on both sides
    passed = np.concatenate([c.columns["tth_pass"] for c in chunks])
    mapping = {f: events[f] for f in events.fields}
    np.testing.assert_array_equal(model.passes(mapping), passed)


def test_only_passing_parquet_and_two_models(bundle: Path, samples: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    spec = yaml.safe_load((other / "spec.yaml").read_text())
    spec["deploy"]["name"] = "tth2"
    (other / "spec.yaml").write_text(yaml.safe_dump(spec))
    src = str(samples / "background.root")
    argv = ["apply", str(bundle), src, "--model", str(other), "--out", str(tmp_path / "o")]
    assert main([*argv, "--format", "parquet", "--only-passing"]) == 0
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "o" / "background.tth+tth2.friend.parquet")
    assert table.column_names == [*IDS, "tth_score", "tth_pass", "tth2_score", "tth2_pass"]
    cols = {k: table.column(k).to_numpy() for k in table.column_names}
    assert cols["tth_pass"].all()
    assert 0 < len(cols["event"]) < EVENTS
    np.testing.assert_array_equal(cols["tth_score"], cols["tth2_score"])
    assert table.schema.field("event").type == "uint64"


def test_truncated_input_fails_alone(
    bundle: Path, samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (samples / "signal.root").read_bytes()
    broken = tmp_path / "broken.root"
    broken.write_bytes(data[: len(data) // 2])
    good = samples / "background.root"
    out = tmp_path / "o"
    status = main(["apply", str(bundle), str(broken), str(good), "--out", str(out)])
    assert status == 2
    err = capsys.readouterr().err
    assert str(broken) in err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert not (out / "broken.tth.friend.root").exists()
    assert sorted(p.name for p in out.iterdir()) == ["background.tth.friend.root"]
    assert len(read(out / "background.tth.friend.root")["event"]) == EVENTS


def test_missing_identifiers_and_no_ids(bundle: Path, samples: Path, tmp_path: Path) -> None:
    model = Model.load(bundle)
    path = str(samples / "background.root")
    with pytest.raises(SpecError, match=r"no identifier branch 'evt'.*--no-ids"):
        next(score_file([model], path, ids=["run", "evt"]))
    assert main(["apply", str(bundle), path, "--out", str(tmp_path), "--no-ids"]) == 0
    friend = read(tmp_path / "background.tth.friend.root")
    assert list(friend) == ["entry", "tth_score", "tth_pass"]
    np.testing.assert_array_equal(friend["entry"], np.arange(EVENTS))


def test_predict_prints_ids_and_scores(
    bundle: Path, samples: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = samples / "signal.root"
    assert main(["predict", str(bundle), "--input", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == [*IDS, "tth_score", "tth_pass"]
    assert len(lines) == EVENTS + 1
    events = read(path)["event"]
    assert [int(line.split("\t")[2]) for line in lines[1:4]] == events[:3].tolist()


def test_multiclass_columns(samples: Path, tmp_path: Path) -> None:
    extra = write_sample(tmp_path / "ttbar.root", "background", 2000, seed=7)
    datasets = [
        {"name": "ttH", "files": [str(samples / "signal.root")], "label": 0},
        {"name": "QCD", "files": [str(samples / "background.root")], "label": 1},
        {"name": "tt", "files": [str(extra)], "label": 2},
    ]
    model = {"kind": "xgboost", "n_estimators": 5, "max_depth": 2}
    bundle = train(tmp_path, "three", spec_dict(samples, datasets, model))
    m = Model.load(bundle)
    assert m.output_columns == ("three_score_ttH", "three_score_QCD", "three_score_tt")
    out = tmp_path / "o"
    assert main(["apply", str(bundle), str(extra), "--out", str(out)]) == 0
    friend = read(out / "ttbar.three.friend.root")
    passed = friend["three_pass"]
    total = sum(friend[c][passed] for c in m.output_columns)
    np.testing.assert_allclose(total, 1.0, atol=1e-5)


def test_progress_json_lines_parse_as_job_progress(
    bundle: Path, samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlaas4hep.jobs.progress import parse_line

    src = [str(samples / "signal.root"), str(samples / "background.root")]
    assert main(["apply", str(bundle), *src, "--out", str(tmp_path), "--progress-json"]) == 0
    lines = [parse_line(line) for line in capsys.readouterr().out.splitlines()]
    assert [p and p["phase"] for p in lines] == ["apply", "apply", "done"]
    assert lines[-1] is not None
    assert lines[-1]["events"] == 2 * EVENTS


def test_predict_into_a_closed_pipe_ends_quietly(bundle: Path, samples: Path) -> None:
    import subprocess
    import sys

    argv = [sys.executable, "-m", "mlaas4hep.cli", "predict", str(bundle)]
    argv += ["--input", str(samples / "signal.root")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert proc.stdout.readline().startswith(b"run\t")
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 0
    assert b"Traceback" not in err
    assert b"BrokenPipe" not in err


@pytest.mark.xrootd
def test_remote_input_through_the_real_xrootd_server_equals_the_local_file(
    bundle: Path, samples: Path, tmp_path: Path, xrootd_server: Any
) -> None:
    url = xrootd_server.put(samples / "signal.root", "apply/signal.root")
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert main(["apply", str(bundle), str(samples / "signal.root"), "--out", str(local)]) == 0
    assert main(["apply", str(bundle), url, "--out", str(remote), "--step-size", "700"]) == 0
    (written,) = list(remote.iterdir())
    assert written.name == "signal.tth.friend.root"
    want, got = read(local / written.name), read(written)
    assert want.keys() == got.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name], want[name])  # NaN where both fail the cuts


def test_an_input_without_entries_keeps_the_identifier_types(
    bundle: Path, samples: Path, tmp_path: Path
) -> None:
    """An empty tree gets an empty friend whose identifiers have the source's types (so the
    outputs of one sample concatenate), locally and as Parquet."""
    empty = write_sample(tmp_path / "empty.root", "signal", 0, seed=5)
    with uproot.open(empty) as f:
        want = {i: f["Events"][i].interpretation.to_dtype for i in IDS}
    assert main(["apply", str(bundle), str(empty), "--out", str(tmp_path / "o")]) == 0
    got = read(tmp_path / "o" / f"empty.{Model.load(bundle).name}.friend.root")
    assert {k: len(v) for k, v in got.items()} == dict.fromkeys(got, 0)
    assert {i: got[i].dtype for i in IDS} == want
    assert want["event"] == np.dtype(np.uint64)  # not the int64 it used to be
