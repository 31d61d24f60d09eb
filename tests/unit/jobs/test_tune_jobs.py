"""The service's side of a search: the executor stores it (or fails the job saying why),
and the job page's section (``_tune.html``) lists the trials and links the plots."""

from __future__ import annotations

import json
from typing import Any

from jobs_helpers import pipeline_doc, submit_as

from mlaas4hep.api.ui.pages import environment
from mlaas4hep.config import Settings
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.executor_local import LocalExecutor
from mlaas4hep.jobs.layout import job_paths
from mlaas4hep.jobs.service import JobService
from mlaas4hep.jobs.states import Exited, State
from mlaas4hep.jobs.store import JobStore
from mlaas4hep.jobs.tune_view import tune_view

TUNE = {"n_trials": 2, "space": {"model.hidden": {"type": "categorical", "choices": [[4], [8]]}}}


def tuned_doc(**fake: Any) -> dict[str, Any]:
    return {**pipeline_doc(**fake), "tune": TUNE}


def test_a_job_whose_search_left_no_trials_fails_saying_why(settings: Settings) -> None:
    store = JobStore(settings.db_url)
    service = JobService(store, DatasetStore(store, settings), settings)
    submit_as(service, "alice", tuned_doc(steps=1))
    done = LocalExecutor(store, settings).run_once()
    assert done is not None
    assert done.state is State.FAILED
    assert "cannot store the hyperparameter search" in (done.reason or "")
    assert "tune/trials.json" in (done.reason or "")


def test_job_page_section_lists_trials_and_links_plots(settings: Settings) -> None:
    store = JobStore(settings.db_url)
    service = JobService(store, DatasetStore(store, settings), settings)
    job, _ = submit_as(service, "alice", tuned_doc())
    claimed = store.claim("w", 30.0)
    assert claimed is not None
    result = job_paths(settings.data_dir, job.id).committed(1)
    (result / "tune").mkdir(parents=True)
    rows = [
        {"number": 0, "state": "complete", "value": 0.81, "params": {"model.hidden": [4]}},
        {"number": 1, "state": "pruned", "value": None, "params": {"model.hidden": "<b>x</b>"}},
    ]
    doc = {"metric": "val_auc", "direction": "maximize", "best_trial": 0, "trials": rows}
    (result / "tune" / "trials.json").write_text(json.dumps(doc))
    (result / "tune" / "history.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    done = store.finish(job.id, "w", claimed.attempt, Exited(ok=True), "attempt-1", None)
    view = tune_view(service, done)
    assert view is not None
    assert [t.state for t in view.trials] == ["complete", "pruned"]
    assert view.plots == [("tune/history.png", "Optimisation history")]
    html = environment().get_template("_tune.html").render(tune=view, job=done)
    assert f"job-{job.id}" in html
    assert "0 (best)" in html
    assert f"/ui/jobs/{job.id}/artifacts/tune/history.png" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html  # the job's text is escaped, never markup
    assert "<b>x</b>" not in html
