"""Partitions on a Dask cluster: the ``Distributor`` of ``mlaas4hep.preprocess.partitioned``.

The process that trains (a job, itself on a Dask worker) connects a client to the
scheduler, keeps a bounded window of partition futures submitted and takes their results
in partition order, so results stream to it in the order of the local stream and memory
stays bounded by the window, not the dataset. A worker that dies takes its tasks with it;
the scheduler reruns them elsewhere (``distributed.scheduler.allowed-failures``).

Workers read the job's input files by the names in the spec: on one host they share the
file system; in production the inputs are ``root://`` URLs (through the XRootD proxy) or
paths on storage every worker mounts.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar, cast

from distributed import Client, Future, KilledWorker

from mlaas4hep.errors import Mlaas4hepError

T = TypeVar("T")
R = TypeVar("R")
CONNECT_TIMEOUT_S = 30.0


class ClusterError(Mlaas4hepError, ConnectionError):
    """The Dask scheduler cannot be reached, or the cluster lost a job's work."""


class ClusterClient(Protocol):
    """The part of ``distributed.Client`` used here, typed (distributed's is not)."""

    status: str  # "running" while connected to the scheduler

    def submit(self, func: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]: ...
    def nthreads(self) -> dict[str, int]: ...
    def cancel(self, futures: list[Future[Any]]) -> None: ...
    def subscribe_topic(self, topic: str, handler: Callable[[Any], None]) -> None: ...
    def unsubscribe_topic(self, topic: str) -> None: ...
    def close(self) -> None: ...


def connect(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> ClusterClient:
    """A client of the scheduler at *address* (``tcp://host:8786``), not the default one.

    Raises:
        ClusterError: nothing answers at *address* within *timeout_s*.
    """
    if address.startswith("gateway://"):
        _register_gateway_comm()
    make: Callable[..., Any] = Client
    try:
        return cast(ClusterClient, make(address, timeout=timeout_s, set_as_default=False))
    except (OSError, TimeoutError) as exc:
        msg = (
            f"cannot reach the Dask scheduler at {address!r} within {timeout_s:g} s: {exc}; "
            "check executor.address and that `dask scheduler` runs there"
        )
        raise ClusterError(msg) from exc


def _register_gateway_comm() -> None:
    """Dask Gateway's proxy addresses need its comm backend, registered on import."""
    try:
        import dask_gateway  # type: ignore[import-not-found]  # noqa: F401
    except ImportError as exc:
        msg = (
            "a gateway:// scheduler address needs the dask-gateway client: "
            "pip install dask-gateway (in the service and worker images)"
        )
        raise ClusterError(msg) from exc


class DaskDistributor:
    """Runs functions on the cluster's workers, at most *in_flight* at once, in order."""

    def __init__(self, client: ClusterClient, in_flight: int | None = None) -> None:
        self.client = client
        self.in_flight = in_flight

    def window(self) -> int:
        """Tasks kept submitted: ``in_flight``, else twice the cluster's threads."""
        if self.in_flight is not None:
            return self.in_flight
        return max(2, 2 * sum(self.client.nthreads().values()))

    def map_ordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        """Yield ``fn(item)`` for each item in order; errors of a task are raised here.

        Stopping early (closing the generator) cancels the tasks still pending.
        """
        prefix = f"mlaas4hep-part-{uuid.uuid4().hex[:12]}"
        todo = iter(enumerate(items))
        pending: deque[Future[R]] = deque()

        def refill(limit: int) -> None:
            while len(pending) < limit:
                nxt = next(todo, None)
                if nxt is None:
                    return
                i, item = nxt
                pending.append(self.client.submit(fn, item, key=f"{prefix}-{i}", pure=False))

        limit = self.window()
        try:
            refill(limit)
            while pending:
                result = _result(pending.popleft())  # the future goes with its last reference
                refill(limit)
                yield result
        finally:
            if pending:
                with contextlib.suppress(Exception):  # the cluster may be gone already
                    self.client.cancel(list(pending))


def _result(future: Future[R]) -> R:
    """The task's result; its own errors as they are, a task the cluster gave up on as a
    ``ClusterError`` saying why."""
    try:
        return future.result()
    except KilledWorker as exc:
        msg = (
            f"the Dask workers running task {future.key!r} died too often and the scheduler "
            f"gave up (distributed.scheduler.allowed-failures): {exc}; check the workers' "
            "memory and logs, then run again"
        )
        raise ClusterError(msg) from exc


@contextlib.contextmanager
def distributor_at(address: str) -> Iterator[DaskDistributor]:
    """A ``DaskDistributor`` on the scheduler at *address*, disconnected on exit.

    Raises ClusterError (see ``connect``).
    """
    client = connect(address)
    try:
        yield DaskDistributor(client)
    finally:
        client.close()
