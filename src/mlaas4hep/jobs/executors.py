"""Choosing the executor from the settings: ``executor.kind`` is ``local`` or ``dask``."""

from __future__ import annotations

from mlaas4hep.config import Settings
from mlaas4hep.errors import SpecError
from mlaas4hep.jobs.executor_local import LocalExecutor
from mlaas4hep.jobs.store import JobStore

KINDS = ("local", "dask")


def make_executor(store: JobStore, settings: Settings) -> LocalExecutor:
    """The executor ``settings.executor.kind`` names (the Dask one imports dask lazily).

    Raises:
        SpecError: an unknown kind, or ``dask`` without dask.distributed installed.
    """
    kind = settings.executor.kind
    if kind == "local":
        return LocalExecutor(store, settings)
    if kind == "dask":
        try:
            from mlaas4hep.jobs.executor_dask import DaskExecutor
        except ImportError as exc:
            msg = (
                f"executor.kind 'dask' needs dask.distributed ({exc}); "
                "install it with: pip install 'mlaas4hep[dask]'"
            )
            raise SpecError(msg) from exc
        return DaskExecutor(store, settings)
    msg = f"unknown executor.kind {kind!r}; choose one of {', '.join(KINDS)}"
    raise SpecError(msg)
