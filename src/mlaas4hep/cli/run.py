"""``mlaas4hep run pipeline.yaml --out DIR``: the whole pipeline locally.

Preprocess, train, evaluate, export to ONNX and write the artifact bundle into ``DIR``.
A progress bar (events, epoch, ETA) goes to stderr; with ``--progress-json`` one JSON object
per line goes to stdout instead (what a service job reads), the last one with
``"phase": "done"``. ``--resume`` continues an interrupted run from its latest checkpoint.
Settings that need no data (``train.device: cuda`` without a GPU) fail before any file is
read; a failed run removes what it created in ``DIR`` except the first-pass cache, unless it
can be resumed (see ``mlaas4hep.train.run``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast

from mlaas4hep.cli.mlflow_export import check_run_option, export_after_run
from mlaas4hep.spec import load_spec
from mlaas4hep.train.progress import Progress

if TYPE_CHECKING:
    from mlaas4hep.jobs.dask_map import DaskDistributor
    from mlaas4hep.preprocess.partitioned import Distributor
    from mlaas4hep.train.tune import TuneOptions

_BAR = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="the pipeline spec (YAML or JSON)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (the bundle)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument(
        "--progress-json", action="store_true", help="one JSON progress object per line on stdout"
    )
    parser.add_argument(
        "--allow-user-code",
        action="store_true",
        help="allow model.kind 'python' (runs the model file named in the spec)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="checkpoint inside an epoch this often (default 300; every epoch end anyway)",
    )
    parser.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="preprocess on this Dask cluster (tcp://host:8786); training stays in this process",
    )
    parser.add_argument(
        "--study-storage",
        metavar="URL",
        help="keep a tune: search's Optuna study in this database (SQLAlchemy URL, e.g. "
        "postgresql+psycopg://...); default: sqlite in OUT/tune/study.db",
    )
    parser.add_argument(
        "--study-name", metavar="NAME", help="the tune: search's study name (default: the spec's)"
    )
    parser.add_argument(
        "--feature-cache-gb",
        type=float,
        default=4.0,
        metavar="GB",
        help="disk budget for caching train features after epoch 1 (default 4; 0 = off)",
    )
    parser.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        metavar="URI",
        help="export the finished run to this MLflow server (alone: $MLFLOW_TRACKING_URI); "
        "a failed export is a warning, never a failed run",
    )
    parser.add_argument(
        "--mlflow-experiment",
        metavar="NAME",
        help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else the spec's name)",
    )


def run(args: argparse.Namespace) -> int:
    from mlaas4hep.train.run import run_pipeline

    spec = load_spec(args.spec)
    mlflow_uri = None if args.mlflow is None else check_run_option(args.mlflow)
    show: JsonLines | ProgressBar = (
        JsonLines(sys.stdout) if args.progress_json else ProgressBar(sys.stderr)
    )
    try:
        with _distributor(args.dask_scheduler) as distributor:
            result = run_pipeline(
                spec, args.out, resume=args.resume, progress=show,
                allow_user_code=args.allow_user_code, checkpoint_every_s=args.checkpoint_every,
                feature_cache_bytes=int(args.feature_cache_gb * (1 << 30)),
                distributor=distributor, tune=_tune_options(args, distributor),
            )  # fmt: skip
    except KeyboardInterrupt:
        show.close()
        print(f"interrupted; continue with: mlaas4hep run {args.spec} --out {args.out} --resume",
              file=sys.stderr)  # fmt: skip
        raise
    show.close()
    if not args.progress_json:
        test = result.metrics["test"]
        shown = {
            k: round(float(test[k]), 4) for k in ("auc", "accuracy", "loss", "rmse") if k in test
        }
        print(f"model: {result.model_path}\ntest ({result.metrics['evaluated_on']}): {shown}")
    if mlflow_uri is not None:  # after the bundle is complete; never fails the run
        export_after_run(result.out_dir, mlflow_uri, args.mlflow_experiment)
    return 0


@contextlib.contextmanager
def _distributor(address: str | None) -> Iterator[Distributor | None]:
    if address is None:
        yield None
        return
    from mlaas4hep.jobs.dask_map import DaskDistributor, connect

    client = connect(address)
    try:
        yield DaskDistributor(client)
    finally:
        client.close()


def _tune_options(args: argparse.Namespace, distributor: Distributor | None) -> TuneOptions:
    """Where a ``tune:`` search keeps its study; its trials go to the Dask cluster if any."""
    from mlaas4hep.train.tune import TuneOptions

    pool = None
    if args.dask_scheduler is not None and distributor is not None:  # a DaskDistributor
        from mlaas4hep.jobs.tune import trial_pool

        pool = trial_pool(cast("DaskDistributor", distributor))
    return TuneOptions(args.study_storage, args.study_name, pool)


class JsonLines:
    """Progress as JSON lines; chunk updates (training, first pass) are throttled to about
    one per second, keeping the last one of each pass."""

    def __init__(self, stream: TextIO, interval_s: float = 1.0) -> None:
        self.stream, self.interval_s = stream, interval_s
        self._last: float | None = None  # not 0.0: monotonic time starts near boot

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        recent = self._last is not None and now - self._last < self.interval_s
        if p.ticking and recent and not p.ends_pass:
            return
        self._last = now
        self.stream.write(json.dumps(p.to_dict()) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class ProgressBar:
    """A one-line bar on a terminal; plain lines (epochs and phases only) otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._open = False
        self._pass: tuple[str, int | None] | None = None  # the pass the open bar draws

    def __call__(self, p: Progress) -> None:
        if p.ticking:
            if self.tty:
                if self._pass != (p.phase, p.epoch):  # the first pass's bar stays on screen
                    self._end_line()
                    self._pass = (p.phase, p.epoch)
                self.stream.write("\r" + bar_line(p))
                self._open = True
            return
        self._end_line()
        self.stream.write(summary_line(p) + "\n")
        self.stream.flush()

    def _end_line(self) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False

    def close(self) -> None:
        self._end_line()
        self.stream.flush()


def bar_line(p: Progress) -> str:
    """``epoch 2/10 [#####.....] 12,000/30,000 events  8.1k ev/s  ETA 0:00:02``; the first
    pass reads ``first pass [...]``."""
    frac = min(1.0, p.events / p.total) if p.total else 0.0
    filled = int(frac * _BAR)
    rate = p.events / p.elapsed_s if p.elapsed_s > 0 else 0.0
    eta = p.eta_s()
    total = f"{p.total:,}" if p.total else "?"
    return (
        f"{_pass_name(p)} [{'#' * filled}{'.' * (_BAR - filled)}] "
        f"{p.events:,}/{total} events  {rate / 1000:.1f}k ev/s  ETA {_clock(eta)}"
    )


def _pass_name(p: Progress) -> str:
    return f"epoch {p.epoch}/{p.epochs}" if p.phase == "train" else "first pass"


def summary_line(p: Progress) -> str:
    """One line for a phase change or the end of an epoch (with its metrics)."""
    if p.phase == "validate":
        shown = "  ".join(f"{k} {v:.4f}" for k, v in p.metrics.items() if k != "seconds")
        note = f"  ({p.message})" if p.message else ""
        return f"epoch {p.epoch}/{p.epochs} done in {p.elapsed_s:.1f}s  {shown}{note}"
    return f"[{p.phase}] {p.message}".rstrip()


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
