"""Issue 20's training features attacked as a hostile user of the shared service would.

Reweighting (``preprocess.reweight``), per-dataset cuts/defines/labels and the
hyperparameter search (``tune:``): specs that ask the service for unbounded work or
memory, expressions and search paths that try to reach outside the spec, and a job's
``tune/trials.json`` (written by the job, so hostile) that the executor copies into the
service's database and the job page renders. Most attacks run on the spec, the loader and
the executor step themselves; one test replays the spec attacks through the real API
(``secserver``) to show each is a 422, never a 500.

The budgets below (seconds) are 20-100x what the fixed code takes; the code before the
fixes took minutes on the same inputs (quadratic checks, one whole-spec validation per
search choice).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from security_server import SecServer, assert_no_leak

from mlaas4hep.errors import DataQualityError, ExpressionError, Mlaas4hepError, SpecError
from mlaas4hep.jobs.policy import check_expressions
from mlaas4hep.jobs.tune import MAX_ERROR_CHARS, record_search
from mlaas4hep.preprocess.labels import plan_labels
from mlaas4hep.spec import TuneSpec, load_spec, validate_spec
from mlaas4hep.train.tune import local_workers

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "jobs"))
from jobs_helpers import fake_settings, pipeline_doc, submit_as

JOBS = "/api/v1/jobs"


def doc(**sections: Any) -> dict[str, Any]:
    """A valid two-dataset spec with *sections* merged in (``preprocess`` merged deeper)."""
    base: dict[str, Any] = {
        "name": "attack",
        "data": {
            "tree": "Events",
            "datasets": [
                {"name": "sig", "files": ["/nonexistent/sig.root"], "label": 1},
                {"name": "bkg", "files": ["/nonexistent/bkg.root"], "label": 0},
            ],
        },
        "preprocess": {"features": {"scalars": ["MET_pt"]}},
    }
    pre = sections.pop("preprocess", {})
    base["preprocess"].update(pre)
    base.update(sections)
    return base


def checked(raw: dict[str, Any]) -> None:
    """What the submission policy does before reading any input: validate, then parse
    every expression and plan labels and reweighting (``check_expressions``)."""
    check_expressions(validate_spec(raw))


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """Run *fn* in a thread; fail (instead of hanging the suite) past *seconds*."""
    out: list[Any] = []

    def go() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # re-raised below, in the test's thread
            out.append(exc)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: unbounded work"
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


# ---- preprocess.reweight ---------------------------------------------------------------


def axis(**binning: Any) -> dict[str, Any]:
    return {"expr": "MET_pt", **binning}


@pytest.mark.parametrize(
    ("variables", "why"),
    [
        ([axis(n=10, lo=-1e308, hi=1e308)], "not finite"),  # hi - lo overflows to inf
        ([axis(n=10_000, lo=0.0, hi=1e-320)], "strictly increasing"),  # below resolution
        ([axis(n=10_000, lo=0, hi=1), axis(n=10_000, lo=0, hi=1)], "at most 100000 bins"),
        ([axis(edges=[0.0, float("nan"), 2.0])], "finite number"),
        ([axis(edges=[0.0, float("inf")])], "finite number"),
        ([axis(n=100, lo=0, hi=1)] * 3, "1 or 2 variables"),
    ],
)
def test_reweight_binning_that_is_not_a_finite_bounded_grid_is_refused(
    variables: list[dict[str, Any]], why: str
) -> None:
    with pytest.raises(SpecError, match=why):
        validate_spec(doc(preprocess={"reweight": [{"variables": variables}]}))


def test_reweightings_are_bounded_in_number_and_in_total_bins() -> None:
    big = [axis(n=10_000, lo=0, hi=1), axis(n=10, lo=0, hi=1)]  # 100000 bins: allowed
    many = [{"variables": big, "target": "sig", "classes": ["bkg"]}] * 5000
    with pytest.raises(SpecError, match="at most 16 items"):
        within(20, lambda: validate_spec(doc(preprocess={"reweight": many})))
    classes = [f"c{i}" for i in range(300)]  # one 100000-bin histogram per class
    raw = doc(preprocess={"classes": classes, "label": "0", "reweight": [{"variables": big}]})
    with pytest.raises(SpecError, match=r"30000000 histogram bins in all.*limit is 1000000"):
        checked(raw)
    with pytest.raises(SpecError, match="at least 1 item"):
        validate_spec(doc(preprocess={"reweight": [{"variables": big, "classes": []}]}))


@pytest.mark.parametrize(
    "target", ["dataset:bob-ttbar", "../bob/ttbar", "class:bkg", "/srv/mlaas/jobs", "bob.sig"]
)
def test_a_reweighting_target_names_only_this_specs_classes_and_datasets(target: str) -> None:
    raw = doc(preprocess={"reweight": [{"variables": [axis(n=4, lo=0, hi=1)], "target": target}]})
    with pytest.raises(SpecError, match=r"neither 'flat' nor a class or dataset.*choices"):
        checked(raw)


@pytest.mark.parametrize(
    "expr", ["__import__('os').system('id')", "MET_pt.__class__", "open('/etc/passwd')"]
)
def test_a_reweighting_variable_is_an_expression_of_the_language_only(expr: str) -> None:
    raw = doc(preprocess={"reweight": [{"variables": [{"expr": expr, "n": 4, "lo": 0, "hi": 1}]}]})
    with pytest.raises(ExpressionError, match=r"reweight\[0\]\.variables\[0\]: .* not part of"):
        checked(raw)


# ---- per-dataset cuts, defines, labels ---------------------------------------------------


def dataset(**own: Any) -> dict[str, Any]:
    raw = doc()
    raw["data"]["datasets"][0].update(own)
    return raw


@pytest.mark.parametrize(
    ("own", "error", "why"),
    [
        ({"define": {"__class__": "1"}}, SpecError, "not a valid name"),
        ({"define": {"where": "1"}}, SpecError, "word of the expression language"),
        ({"define": {"x": "__import__('os')"}}, ExpressionError, r"define\.x: strings are not"),
        ({"define": {"x": "MET_pt + " * 300 + "1"}}, ExpressionError, "the limit is 2000"),
        ({"label": "(" * 60 + "MET_pt" + ")" * 60}, ExpressionError, "deeper than 40"),
        ({"cuts": ["MET_pt.__globals__ > 0"]}, ExpressionError, r"cuts\[0\]: attribute access"),
        ({"cuts": [{"name": "x", "expr": "lambda: 1"}]}, ExpressionError, "unexpected character"),
        ({"label": 1, "class": "sig"}, SpecError, "both label"),
        ({"label": ""}, SpecError, "1 to 2000 characters"),
    ],
)
def test_per_dataset_expressions_are_checked_like_global_ones(
    own: dict[str, Any], error: type[Mlaas4hepError], why: str
) -> None:
    with pytest.raises(error, match=why):
        checked(dataset(**own))


def test_yaml_alias_bombs_inside_per_dataset_fields_are_refused() -> None:
    text = """
name: bomb
data:
  datasets:
    - name: sig
      files: [/x.root]
      label: 1
      define: &a {a0: "1", a1: "1", a2: "1", a3: "1"}
      cuts: &b [*a, *a, *a, *a, *a, *a, *a, *a]
    - {name: bkg, files: [/x.root], label: 0, cuts: [*b, *b, *b, *b, *b, *b, *b, *b]}
preprocess: {features: {scalars: [MET_pt]}}
"""
    with pytest.raises(SpecError, match=r"(?i)alias|anchor"):
        load_spec(text)


def test_thousands_of_datasets_and_classes_are_checked_in_linear_time() -> None:
    n = 15_000  # a spec of ~700 kB: under the 1 MB limit
    raw = doc()
    raw["data"]["datasets"] = [{"name": f"d{i}", "files": ["/x"], "label": i % 2} for i in range(n)]
    raw["data"]["datasets"].append({"name": "d7", "files": ["/x"], "label": 0})
    with pytest.raises(SpecError, match=r"repeated: \['d7'\]"):
        within(20, lambda: validate_spec(raw))
    classes = [f"c{i}" for i in range(40_000)] + ["c1"]
    spec = validate_spec(doc(preprocess={"classes": classes, "label": "0"}))
    with pytest.raises(SpecError, match=r"repeats \['c1'\]") as exc:
        within(20, lambda: plan_labels(spec))
    assert len(str(exc.value)) < 1000  # the message shows a few names, not 40000


# ---- tune: ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["data.datasets", "deploy.name", "model.module", "model.function", "model.framework",
     "__class__", "model.__class__", "train.__dict__", "model.kind", "train.folds",
     "train.device", "preprocess.define", "tune.n_trials", "model", "model.hidden.0"],
)  # fmt: skip
def test_a_search_varies_only_the_tunable_options(path: str) -> None:
    raw = doc(tune={"space": {path: {"type": "categorical", "choices": ["x"]}}})
    with pytest.raises(SpecError, match="cannot be tuned"):
        validate_spec(raw)


@pytest.mark.parametrize(
    ("space", "why"),
    [
        ({"train.lr": {"type": "float", "low": -1.0, "high": 0.1}}, "greater than 0"),
        ({"train.epochs": {"type": "int", "low": 1, "high": 10**9}}, "less than or equal"),
        ({"model.hidden": {"type": "categorical", "choices": [[8], {"__class__": 1}]}}, "list"),
        ({"train.lr": {"type": "float", "low": 0.1, "high": float("nan")}}, "finite"),
    ],
)
def test_search_values_are_validated_like_the_options_themselves(
    space: dict[str, Any], why: str
) -> None:
    with pytest.raises(SpecError, match=why):
        validate_spec(doc(tune={"space": space}))


@pytest.mark.parametrize(
    "tune",
    [
        {"n_trials": 10**9},
        {"parallel": 10**6},
        {"n_trials": None, "timeout": 10**9},
        {"n_trials": None},
        {"storage": "sqlite:////srv/mlaas/jobs.db"},
        {"study_name": "job-someone-elses"},
    ],
)
def test_a_search_budget_is_bounded_and_its_storage_is_not_the_users_choice(
    tune: dict[str, Any],
) -> None:
    space = {"train.lr": {"type": "float", "low": 1e-4, "high": 0.1}}
    with pytest.raises(SpecError):
        validate_spec(doc(tune={"space": space, **tune}))


def test_a_large_search_space_over_many_datasets_validates_quickly() -> None:
    raw = doc()
    raw["data"]["datasets"] = [
        {"name": f"d{i}", "files": ["/x"], "label": i % 2} for i in range(2000)
    ]
    choices = {"type": "categorical", "choices": [1e-5 * (i + 1) for i in range(1000)]}
    raw["tune"] = {"space": {"train.lr": choices, "train.weight_decay": choices}}
    spec = within(20, lambda: validate_spec(raw))  # was one whole-spec validation per choice
    assert spec.tune is not None


def test_parallel_trials_never_start_more_processes_than_cores() -> None:
    space = {"train.lr": {"type": "float", "low": 1e-4, "high": 0.1}}
    tune = TuneSpec.model_validate({"space": space, "parallel": 256})
    cores = len(os.sched_getaffinity(0))
    assert local_workers(tune) == min(256, cores)


# ---- the executor step: tune/trials.json into the service's database ------------------------

TUNED = doc(
    tune={"n_trials": 3, "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 0.1}}},
    train={"epochs": 5},
)
GOOD = {"number": 0, "state": "complete", "value": 0.5, "params": {"train.lr": 0.01}}


def trials(result: Path, text: str) -> None:
    (result / "tune").mkdir(parents=True, exist_ok=True)
    (result / "tune" / "trials.json").write_text(text)


def rows(*items: dict[str, Any]) -> Callable[[Path], None]:
    return lambda result: trials(result, json.dumps({"trials": list(items)}))


def linked(target: str) -> Callable[[Path], None]:
    def make(result: Path) -> None:
        (result / "tune").mkdir(parents=True)
        (result / "tune" / "trials.json").symlink_to(target)

    return make


def tune_dir_linked(result: Path) -> None:
    other = result.parent / "elsewhere"
    trials(other, json.dumps({"trials": [GOOD]}))
    result.mkdir(parents=True)
    (result / "tune").symlink_to(other / "tune")


def fifo(result: Path) -> None:
    (result / "tune").mkdir(parents=True)
    os.mkfifo(result / "tune" / "trials.json")


HOSTILE: dict[str, Callable[[Path], None]] = {
    "a FIFO (reading it would hang the executor)": fifo,
    "a link to /dev/zero (endless)": linked("/dev/zero"),
    "a link to /etc/passwd": linked("/etc/passwd"),
    "a link to a directory": linked("/etc"),
    "tune/ a link to another directory": tune_dir_linked,
    "nested 100000 deep": lambda r: trials(r, '{"trials":' + "[" * 100_000 + "]" * 100_000 + "}"),
    "NaN value": lambda r: trials(r, '{"trials":[' + json.dumps(GOOD)[:-1] + ',"value":NaN}]}'),
    "a 400-digit value": lambda r: trials(
        r, '{"trials":[{"state":"complete","value":1' + "0" * 400 + ',"params":{"train.lr":0.01}}]}'
    ),
    "an epoch of 31 digits": rows({**GOOD, "intermediate": {str(10**30): 0.5}}),
    "an epoch past train.epochs": rows({**GOOD, "intermediate": {"6": 0.5}}),
    "an epoch of Unicode digits": rows({**GOOD, "intermediate": {"²": 0.5}}),
    "intermediate not a mapping": rows({**GOOD, "intermediate": [0.5]}),
    "more trials than n_trials": rows(*[GOOD] * 4),
    "a parameter outside the space": rows({**GOOD, "params": {"train.lr": 5.0}}),
    "a parameter not of the space": rows({**GOOD, "params": {"model.module": "/x.py"}}),
    "a bool for a float": rows({**GOOD, "params": {"train.lr": True}}),
    "no trials list": lambda r: trials(r, json.dumps({"trials": {"0": GOOD}})),
    "over 32 MiB": lambda r: trials(r, " " * (33 << 20)),
}


@pytest.mark.parametrize("attack", list(HOSTILE))
def test_a_hostile_trials_file_fails_the_job_with_a_typed_error(
    tmp_path: Path, attack: str
) -> None:
    result = tmp_path / "job" / "attempt-1"
    HOSTILE[attack](result)
    db = f"sqlite:///{tmp_path / 'service.db'}"
    with pytest.raises(DataQualityError) as exc:
        within(30, lambda: record_search(db, "j1", TUNED, result))
    message = str(exc.value)
    assert "trials.json" in message
    assert len(message) < 1000
    assert "root:" not in message  # nothing of a linked file reaches the reason


def test_the_recorded_study_keeps_only_bounded_attributes(tmp_path: Path) -> None:
    import optuna

    row = {**GOOD, "error": "E" * 5_000_000, "seconds": {"nested": [1]}, "epochs": 3,
           "intermediate": {"1": 0.4, "2": 0.5}, "extra": "<script>"}  # fmt: skip
    result = tmp_path / "job" / "attempt-1"
    rows(row)(result)
    db = f"sqlite:///{tmp_path / 'service.db'}"
    name = record_search(db, "j1", TUNED, result)
    (trial,) = optuna.load_study(study_name=str(name), storage=db).trials
    assert trial.user_attrs == {"epochs": 3, "error": "E" * MAX_ERROR_CHARS}
    assert trial.intermediate_values == {1: 0.4, 2: 0.5}


def test_the_job_page_bounds_a_hostile_trials_table(tmp_path: Path) -> None:
    from mlaas4hep.api.ui.pages import environment
    from mlaas4hep.jobs.datasets import DatasetStore
    from mlaas4hep.jobs.layout import job_paths
    from mlaas4hep.jobs.service import JobService
    from mlaas4hep.jobs.states import Exited
    from mlaas4hep.jobs.store import JobStore
    from mlaas4hep.jobs.tune_view import MAX_COLUMNS, tune_view

    settings = fake_settings(tmp_path)
    store = JobStore(settings.db_url)
    service = JobService(store, DatasetStore(store, settings), settings)
    job, _ = submit_as(service, "alice", {**pipeline_doc(), "tune": TUNED["tune"]})
    claimed = store.claim("w", 30.0)
    assert claimed is not None
    params = {f"<img src=x onerror=alert({i})>": i for i in range(20_000)}
    row = {"number": 0, "state": "complete", "value": 0.5, "params": params}
    doc_ = {"metric": "<script>" * 1000, "best_trial": 0, "trials": [row] * 4}  # < 4 MiB
    trials(job_paths(settings.data_dir, job.id).committed(1), json.dumps(doc_))
    done = store.finish(job.id, "w", claimed.attempt, Exited(ok=True), "attempt-1", None)
    view = tune_view(service, done)
    assert view is not None
    assert len(view.paths) == MAX_COLUMNS
    assert len(view.metric) <= 40
    html = environment().get_template("_tune.html").render(tune=view, job=done)
    assert "<img" not in html
    assert "<script>" not in html
    assert html.count("<td><code>") == 4 * MAX_COLUMNS  # 4 x 64 cells, not 4 x 20000


# ---- the same attacks through the real API: 422, never 500 ----------------------------------

API_ATTACKS = {
    "reweight range overflows": doc(
        preprocess={"reweight": [{"variables": [axis(n=10, lo=-1e308, hi=1e308)]}]}
    ),
    "reweight every class of many": doc(
        preprocess={
            "classes": [f"c{i}" for i in range(300)],
            "label": "0",
            "reweight": [{"variables": [axis(n=10_000, lo=0, hi=1), axis(n=10, lo=0, hi=1)]}],
        }
    ),
    "reweight target of another user": doc(
        preprocess={"reweight": [{"variables": [axis(n=4, lo=0, hi=1)], "target": "bob-ttbar"}]}
    ),
    "tune path deploy.name": doc(
        tune={"space": {"deploy.name": {"type": "categorical", "choices": ["bobs-model"]}}}
    ),
    "tune study storage": doc(
        tune={
            "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 0.1}},
            "storage": "sqlite:////srv/mlaas/jobs.db",
        }
    ),
    "dataset define injection": dataset(define={"x": "__import__('os').system('id')"}),
}


def test_the_api_answers_each_training_attack_with_a_422(secserver: SecServer) -> None:
    seen: list[str] = []
    with secserver.client("alice") as alice:
        for attack, raw in API_ATTACKS.items():
            answer = alice.post(JOBS, json=raw)
            assert answer.status_code == 422, (attack, answer.status_code, answer.text[:500])
            seen.append(answer.text)
    assert secserver.healthy()
    assert_no_leak(secserver, *seen)
