"""Hyperparameter search: the ``tune:`` section of a spec, run by Optuna.

```
 run_source ── first pass ── FeatureStore.write (train + validation shards, once)
      │
      ▼  run_study: study (Optuna RDB storage) ── ask ──► TrialTask ──► pool.submit(run_trial)
      │            ◄── tell (value, per-epoch curve, pruned/failed) ◄── TrialOutcome
      ▼
 best trial's spec + checkpoints ──► the run's model (export, evaluation, bundle)
```

The study lives in a SQL database through Optuna's ``RDBStorage``: ``TuneOptions.storage``
(``mlaas4hep run --study-storage URL``), by default ``sqlite:///<out>/tune/study.db``. A
service job runs sandboxed, away from the service's database: the job keeps its study in
its own directory and the service copies it into its database under the name
``job-<id>`` when the job succeeds (``mlaas4hep.jobs.tune``), from ``tune/trials.json``.

Only this process (the driver) talks to the storage: trials run in ``TuneOptions.pool``
(a ``concurrent.futures.Executor``; a Dask client's executor puts them on the cluster's
workers), or, by default, in this process (``parallel: 1``) or in as many local processes
as ``tune.parallel``. Each trial decides its own pruning from the finished trials the
driver hands it, so a trial needs no connection to anything.

The trial's value is ``tune.metric`` at the epoch whose model the trial keeps (the best
validation loss, as in any run), so the best trial's value is that of the exported model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from mlaas4hep.artifact import CHECKPOINTS_DIR
from mlaas4hep.errors import Conflict, SpecError, TrainingError
from mlaas4hep.spec import PipelineSpec, TuneSpec, with_params
from mlaas4hep.train.engine import EngineContext
from mlaas4hep.train.feature_cache import CachingSource
from mlaas4hep.train.loop import LoopConfig
from mlaas4hep.train.progress import Progress, ProgressCallback
from mlaas4hep.train.stream import BatchSource
from mlaas4hep.train.tune_space import distributions, spec_values
from mlaas4hep.train.tune_table import write_tables
from mlaas4hep.train.tune_trial import FeatureStore, TrialOutcome, TrialTask, run_trial

if TYPE_CHECKING:
    import optuna

    from mlaas4hep.preprocess.info import FeatureInfo

TUNE_DIR = "tune"
STUDY_DB = "study.db"
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class TuneOptions:
    """Where a search keeps its study and where its trials run (all optional).

    ``storage``: a SQLAlchemy URL (SQLite or PostgreSQL); ``study_name``: default the
    spec's name; ``pool``: runs the trials (e.g. ``distributed.Client.get_executor()``);
    trials of user code (``model.kind: python``) always stay in the job's own processes.
    """

    storage: str | None = None
    study_name: str | None = None
    pool: Executor | None = None


@dataclass(frozen=True)
class StudyResult:
    """The search's outcome: the best trial's spec and the summary for ``metrics.json``."""

    best_spec: PipelineSpec
    checkpoints: Path  # the best trial's checkpoints
    features: FeatureStore
    summary: dict[str, Any]


def run_study(
    spec: PipelineSpec,
    source: BatchSource,
    info: FeatureInfo,
    out: Path,
    progress: ProgressCallback,
    options: TuneOptions,
    *,
    allow_user_code: bool = False,
) -> StudyResult:
    """Preprocess once, run the trials of ``spec.tune``, write the tables and plots.

    Raises:
        Conflict: the storage already holds a study of that name.
        TrainingError: no trial completed (the first failures are in the message).
    """
    tune = _tune_of(spec)
    _quiet_optuna()
    work = out / "work"
    progress(Progress("evaluate", message="tune: storing the features for the trials"))
    store = FeatureStore.write(source, work / "tune-features", spec.train.seed)
    (out / TUNE_DIR).mkdir(parents=True, exist_ok=True)
    name = options.study_name or spec.name
    storage = options.storage or f"sqlite:///{(out / TUNE_DIR / STUDY_DB).resolve()}"
    study, engine = _create_study(tune, storage, name)
    try:
        search = _Search(spec, tune, info, store, work / "trials", progress, allow_user_code)
        with _pool(options, tune, spec) as pool:
            search.optimise(study, pool)
        best = _best(study, tune)
        best_spec = with_params(spec, spec_values(tune, best.params))
        summary = write_tables(study, tune, out / TUNE_DIR, name, storage)
    finally:
        engine.dispose()
    return StudyResult(best_spec, work / "trials" / str(best.number) / CHECKPOINTS_DIR, store,
                       summary)  # fmt: skip


def _tune_of(spec: PipelineSpec) -> TuneSpec:
    if spec.tune is None:
        raise SpecError("the spec has no tune: section; nothing to search")
    return spec.tune


def _quiet_optuna() -> None:
    """Optuna logs each created study and told trial at INFO; the run reports them itself."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _create_study(tune: TuneSpec, url: str, name: str) -> tuple[optuna.Study, Any]:
    import optuna
    from optuna.exceptions import DuplicatedStudyError

    sampler: optuna.samplers.BaseSampler = (
        optuna.samplers.RandomSampler(seed=tune.seed)
        if tune.sampler == "random"
        else optuna.samplers.TPESampler(seed=tune.seed)
    )
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, sampler=sampler,
            direction=tune.resolved_direction(), pruner=optuna.pruners.NopPruner(),
        )  # fmt: skip
    except DuplicatedStudyError as exc:
        storage.engine.dispose()
        msg = (
            f"the study storage already holds a study named {name!r}; choose another name "
            "(--study-name) or remove it (optuna delete-study)"
        )
        raise Conflict(msg) from exc
    return study, storage.engine


def _best(study: optuna.Study, tune: TuneSpec) -> optuna.trial.FrozenTrial:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        errors = [str(t.user_attrs.get("error")) for t in study.trials if "error" in t.user_attrs]
        shown = "; ".join(errors[:3]) or "every trial was pruned"
        msg = (
            f"no trial of the search completed with a {tune.metric!r} ({len(study.trials)} "
            f"tried): {shown}. Narrow tune.space or lower the pruning"
        )
        raise TrainingError(msg)
    return study.best_trial


class _Inline(Executor):
    """Runs each submitted call at once, in this thread (one trial at a time)."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


@contextlib.contextmanager
def _pool(options: TuneOptions, tune: TuneSpec, spec: PipelineSpec) -> Iterator[Executor]:
    if options.pool is not None and spec.model.kind != "python":
        yield options.pool  # not ours to shut down
        return
    if tune.parallel == 1:
        yield _Inline()
        return
    # Processes, not threads: torch seeds and draws from one generator per process; no
    # more of them than this machine (or the job's CPU set) has cores: ``parallel: 256``
    # must not start 256 interpreters in one job.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=local_workers(tune), mp_context=context) as pool:
        yield pool


def local_workers(tune: TuneSpec) -> int:
    """How many local processes run trials: ``tune.parallel``, at most the usable cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(tune.parallel, cores or 1))


class _Search:
    """The ask / run / tell loop of one study."""

    def __init__(
        self,
        spec: PipelineSpec,
        tune: TuneSpec,
        info: FeatureInfo,
        store: FeatureStore,
        trials_dir: Path,
        progress: ProgressCallback,
        allow_user_code: bool,
    ) -> None:
        self.spec, self.tune, self.info, self.store = spec, tune, info, store
        self.trials_dir, self.progress = trials_dir, progress
        self.allow_user_code = allow_user_code
        self.space = distributions(tune)
        self.asked = 0
        self.started = time.monotonic()

    def optimise(self, study: optuna.Study, pool: Executor) -> None:
        running: dict[Future[TrialOutcome], optuna.trial.Trial] = {}
        while True:
            while len(running) < self.tune.parallel and self._budget_left():
                trial = study.ask(self.space)
                self.asked += 1
                task = self._task(study, trial)
                if task is not None:
                    running[pool.submit(run_trial, task)] = trial
            if not running:
                return
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: running[f].number):
                self._tell(study, running.pop(future), future.result())

    def _budget_left(self) -> bool:
        t = self.tune
        if t.n_trials is not None and self.asked >= t.n_trials:
            return False
        return t.timeout is None or time.monotonic() - self.started < t.timeout

    def _task(self, study: optuna.Study, trial: optuna.trial.Trial) -> TrialTask | None:
        """The trial's task, or None (and the trial failed) when its spec is invalid."""
        from optuna.trial import TrialState

        try:
            spec = with_params(self.spec, spec_values(self.tune, trial.params))
        except SpecError as exc:  # a combination the ranges allow but the spec does not
            self._fail(study, trial, str(exc))
            return None
        finished = tuple(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        return TrialTask(
            trial.number, spec, self.info, self.store.directory,
            self.trials_dir / str(trial.number), self.tune.metric,
            self.tune.resolved_direction(), self.tune.pruning, finished, self.allow_user_code,
        )  # fmt: skip

    def _fail(self, study: optuna.Study, trial: optuna.trial.Trial, error: str) -> None:
        from optuna.trial import TrialState

        trial.set_user_attr("error", error[:2000])
        study.tell(trial, state=TrialState.FAIL)
        self._report(trial.number, "failed", None, error)

    def _tell(self, study: optuna.Study, trial: optuna.trial.Trial, outcome: TrialOutcome) -> None:
        from optuna.trial import TrialState

        for epoch, value in sorted(outcome.curve.items()):
            trial.report(value, epoch)
        trial.set_user_attr("seconds", outcome.seconds)
        trial.set_user_attr("epochs", outcome.epochs)
        trial.set_user_attr("pid", outcome.pid)
        if outcome.state == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
            shutil.rmtree(self.trials_dir / str(trial.number), ignore_errors=True)
        elif outcome.state == "complete" and outcome.value is not None:
            study.tell(trial, outcome.value)
        else:
            error = outcome.error or f"the trial reported no {self.tune.metric!r}"
            self._fail(study, trial, error)
            return
        self._report(trial.number, outcome.state, outcome.value, None)

    def _report(self, number: int, state: str, value: float | None, error: str | None) -> None:
        budget = f"/{self.tune.n_trials}" if self.tune.n_trials else ""
        shown = f", {self.tune.metric} {value:.4f}" if value is not None else ""
        why = f": {error.splitlines()[0][:200]}" if error else ""
        metrics: dict[str, float] = {self.tune.metric: value} if value is not None else {}
        message = f"tune: trial {number + 1}{budget} {state}{shown}{why}"
        self.progress(Progress("evaluate", metrics=metrics, message=message))


def read_trials(path: Path) -> dict[str, Any]:
    """The ``tune/trials.json`` of a run (see ``tune_table.write_tables``)."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@dataclass(frozen=True)
class Adopted:
    """What ``run_source`` trains on after a search: the best trial, ready to resume."""

    spec: PipelineSpec
    ctx: EngineContext
    config: LoopConfig
    source: CachingSource
    summary: dict[str, Any]


def adopt_best(
    spec: PipelineSpec,
    source: BatchSource,
    out: Path,
    progress: ProgressCallback,
    options: TuneOptions | None,
    ctx: EngineContext,
    config: LoopConfig,
) -> Adopted:
    """Run the search, then make the best trial's checkpoints the run's own.

    The run then "resumes" the finished trial (no epoch left: it loads the best model) and
    exports, evaluates and bundles it like any model, with the best trial's spec.
    """
    found = run_study(spec, source, ctx.info, out, progress, options or TuneOptions(),
                      allow_user_code=ctx.allow_user_code)  # fmt: skip
    best = found.best_spec
    shutil.rmtree(config.checkpoint_dir, ignore_errors=True)
    # A trial's files are the job's own (user code may run in it): links stay links.
    shutil.copytree(found.checkpoints, config.checkpoint_dir, symlinks=True)
    return Adopted(
        best,
        dataclasses.replace(ctx, model=best.model, train=best.train),
        dataclasses.replace(config, train=best.train, spec_hash=best.spec_hash()),
        CachingSource(found.features, found.features.directory, 0),  # no cache: the store
        found.summary,
    )
