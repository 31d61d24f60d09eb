"""Horizontal scaling of the job service on one machine: several API and executor processes
(`mlaas4hep serve --only api|executor`, configured by environment variables only, as in a
container) against one real PostgreSQL on loopback.

Shows: every queued job runs to completion exactly once whatever API replica accepted it;
an executor killed with SIGKILL mid-job loses nothing (its job is requeued and finished by
another); a frozen executor (SIGSTOP, alive but silent) loses its lease, its job is taken
over, and when it wakes up its stale outcome is refused and it does not harm the new attempt;
every API replica shows the same state.

The job command is a tiny script (the executor runs it exactly as it runs `mlaas4hep run`:
own process group, heartbeats, leases, commit by rename) that appends to a ledger file, so
"ran exactly once" is checked outside the database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import cycle
from pathlib import Path

import httpx
import psutil
import pytest
from jobs_server import ALL_SCOPES
from pg import postgres_server, wait_for_port

from mlaas4hep.config import MLAAS4HEP_ARGV
from mlaas4hep.jobs.layout import job_paths
from mlaas4hep.jobs.store import JobStore
from mlaas4hep.loopback import free_port

LEASE_S = 4.0
API_REPLICAS = 3
EXECUTORS = 3
JOBS = 30

# The job: one ledger line at start and one at the end; the first attempt may be slow
# (the one the test kills or freezes), later attempts are quick.
JOB_SCRIPT = """\
import json, os, sys, time
from pathlib import Path
import yaml
spec = yaml.safe_load(Path(sys.argv[1]).read_text())
out = Path(sys.argv[sys.argv.index("--out") + 1])
fake = json.loads(spec["description"].removeprefix("fake: "))
job_id, attempt = out.parent.name, int(out.name.split("-")[1].split(".")[0])
def mark(event):
    fd = os.open(fake["ledger"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{job_id} {attempt} {os.getpid()} {event}\\n".encode())
    os.close(fd)
mark("start")
print(json.dumps({"phase": "train", "epoch": 1, "epochs": 1}), flush=True)
time.sleep(fake["sleep_first"] if attempt == 1 else fake["sleep"])
(out / "model.onnx").write_bytes(b"onnx")
(out / "metrics.json").write_text(json.dumps({"auc": 0.5}))
mark("done")
"""


@dataclass
class Cluster:
    """PostgreSQL + API and executor processes sharing one data directory."""

    root: Path
    db_url: str
    apis: list[tuple[int, subprocess.Popen[bytes]]] = field(default_factory=list)
    executors: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.txt"

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/api/v1" for port, _ in self.apis]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS4HEP_")}
        env.update(
            {
                "MLAAS4HEP_DATABASE_URL": self.db_url,
                "MLAAS4HEP_DATA_DIR": str(self.data_dir),
                "MLAAS4HEP_EXECUTOR__JOB_COMMAND": json.dumps(
                    [sys.executable, str(self.root / "job.py")]
                ),
                "MLAAS4HEP_EXECUTOR__SANDBOX": "none",
                "MLAAS4HEP_EXECUTOR__WORKERS": "1",
                "MLAAS4HEP_EXECUTOR__LEASE_S": str(LEASE_S),
                "MLAAS4HEP_EXECUTOR__HEARTBEAT_S": "0.3",
                "MLAAS4HEP_EXECUTOR__POLL_S": "0.1",
                "MLAAS4HEP_EXECUTOR__CANCEL_GRACE_S": "1",
            }
        )
        return env

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        with (self.root / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                [*MLAAS4HEP_ARGV, "serve", *args], env=self.env(), stdout=log, stderr=log
            )

    def start_api(self) -> None:
        port = free_port()
        self.apis.append((port, self._spawn(["--only", "api", "--port", str(port)], f"api-{port}")))

    def start_executor(self) -> subprocess.Popen[bytes]:
        proc = self._spawn(["--only", "executor"], f"executor-{len(self.executors)}")
        self.executors.append(proc)
        return proc

    def executor_log(self, proc: subprocess.Popen[bytes]) -> str:
        index = self.executors.index(proc)
        return (self.root / f"executor-{index}.log").read_text(errors="replace")

    def wait_executors(self, timeout: float = 60) -> None:
        _until(
            lambda: all("running 1 workers" in self.executor_log(p) for p in self.executors),
            timeout,
            "executors did not start",
        )

    def stop(self) -> None:
        procs = [p for _, p in self.apis] + self.executors
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a frozen one must be able to exit
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def token(self) -> str:
        from mlaas4hep.auth.local_issuer import LocalIssuer

        return LocalIssuer(self.data_dir).mint("alice", ALL_SCOPES)


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("horizontal")
    (root / "job.py").write_text(JOB_SCRIPT)
    with postgres_server() as url:
        cluster = Cluster(root, url)
        cluster.token()  # the local issuer's key exists before the replicas read it
        try:
            # All six start at once on an empty database, as a compose/k8s roll-out does.
            for _ in range(API_REPLICAS):
                cluster.start_api()
            for _ in range(EXECUTORS):
                cluster.start_executor()
            for port, _ in cluster.apis:
                wait_for_port(port, timeout=60)
            cluster.wait_executors()
            yield cluster
        finally:
            cluster.stop()


def _doc(
    ledger: Path, name: str, sleep: float, sleep_first: float | None = None
) -> dict[str, object]:
    fake = {"ledger": str(ledger), "sleep": sleep, "sleep_first": sleep_first or sleep}
    return {
        "name": name,
        "description": "fake: " + json.dumps(fake),
        "data": {
            "tree": "Events",
            "datasets": [
                {"name": "sig", "files": ["/nonexistent/sig.root"], "label": 1},
                {"name": "bkg", "files": ["/nonexistent/bkg.root"], "label": 0},
            ],
        },
        "preprocess": {"features": {"scalars": ["MET_pt"]}},
    }


def _ledger(path: Path) -> list[tuple[str, int, int, str]]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(job, int(attempt), int(pid), event) for job, attempt, pid, event in rows]


def _started(path: Path, job_id: str, attempt: int) -> int | None:
    """The pid of *attempt* of *job_id* once it started, else None."""
    found = [pid for j, a, pid, e in _ledger(path) if (j, a, e) == (job_id, attempt, "start")]
    return found[0] if found else None


def _executor_of(cluster: Cluster, job_id: str) -> subprocess.Popen[bytes]:
    store = JobStore(cluster.db_url)
    try:
        worker = store.get(job_id).worker
    finally:
        store.close()
    assert worker is not None
    pid = int(worker.split(":")[1])
    return next(p for p in cluster.executors if p.pid == pid)


def _submit(client: httpx.Client, url: str, doc: dict[str, object]) -> str:
    response = client.post(f"{url}/jobs", json=doc)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _states(client: httpx.Client, url: str) -> dict[str, tuple[str, int]]:
    response = client.get(f"{url}/jobs", params={"limit": 200})
    assert response.status_code == 200, response.text
    return {j["id"]: (j["state"], j["attempt"]) for j in response.json()["items"]}


def _wait_done(client: httpx.Client, url: str, ids: set[str], timeout: float) -> None:
    def done() -> bool:
        states = _states(client, url)
        return all(states.get(i, ("", 0))[0] in {"succeeded", "failed"} for i in ids)

    _until(done, timeout, f"jobs not finished after {timeout} s")


def test_jobs_run_exactly_once_and_survive_a_killed_executor(cluster: Cluster) -> None:
    headers = {"Authorization": f"Bearer {cluster.token()}"}
    with httpx.Client(headers=headers, timeout=30) as client:
        urls = cycle(cluster.urls)
        # The oldest job is claimed first: the victim's first attempt would sleep a minute.
        victim = _submit(client, next(urls), _doc(cluster.ledger, "victim", 0.2, 600))
        ids = [victim] + [
            _submit(client, next(urls), _doc(cluster.ledger, f"job-{i}", 0.2))
            for i in range(1, JOBS)
        ]
        _until(lambda: _started(cluster.ledger, victim, 1) is not None, 60, "victim never ran")
        first_pid = _started(cluster.ledger, victim, 1)
        killed = _executor_of(cluster, victim)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        _wait_done(client, cluster.urls[0], set(ids), timeout=120)

        views = [_states(client, url) for url in cluster.urls]
        per_job = [
            [client.get(f"{url}/jobs/{i}").json()["state"] for url in cluster.urls] for i in ids
        ]

    # Every API replica shows the same state, for the list and for each job.
    assert views[0] == views[1] == views[2]
    assert all(states == ["succeeded"] * API_REPLICAS for states in per_job)
    assert {views[0][i] for i in ids if i != victim} == {("succeeded", 1)}
    assert views[0][victim] == ("succeeded", 2)
    # Exactly once: each job finished one attempt; only the victim started twice.
    ledger = _ledger(cluster.ledger)
    done = Counter(j for j, _, _, e in ledger if e == "done")
    starts = Counter(j for j, _, _, e in ledger if e == "start")
    assert set(done) == set(ids)
    assert set(done.values()) == {1}
    assert starts[victim] == 2
    assert all(starts[i] == 1 for i in ids if i != victim)
    assert [(a, e) for j, a, _, e in ledger if j == victim] == [
        (1, "start"),
        (2, "start"),
        (2, "done"),
    ]
    # The orphaned first attempt was killed, its partial output removed, the second committed.
    assert first_pid is not None
    assert not _alive(first_pid)
    paths = job_paths(cluster.data_dir, victim)
    assert not paths.partial(1).exists()
    assert paths.committed(2).is_dir()
    # The work was spread: several executors ran jobs, the dead one ran nothing after it died.
    store = JobStore(cluster.db_url)
    try:
        workers = {store.get(i).worker for i in ids}
        assert str(killed.pid) not in (store.get(victim).worker or "").split(":")
    finally:
        store.close()
    assert len(workers) >= 2


def _refused(log: str) -> bool:
    # Either its heartbeat or its final report was fenced off (which one depends on timing).
    return "lease lost" in log or "is no longer run by" in log


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_frozen_executor_loses_its_lease_and_its_late_outcome(cluster: Cluster) -> None:
    while sum(p.poll() is None for p in cluster.executors) < EXECUTORS:
        cluster.start_executor()  # replace the one the previous test killed
    cluster.wait_executors()
    headers = {"Authorization": f"Bearer {cluster.token()}"}
    url = cluster.urls[1]
    with httpx.Client(headers=headers, timeout=30) as client:
        job = _submit(client, url, _doc(cluster.ledger, "frozen", 2.5, 600))
        _until(lambda: _started(cluster.ledger, job, 1) is not None, 60, "job never ran")
        frozen = _executor_of(cluster, job)
        frozen.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            # Alive but silent: only the lease can tell; another executor takes over.
            _until(lambda: _started(cluster.ledger, job, 2) is not None, 60, "not taken over")
            taken_over_after = time.monotonic() - frozen_at
        finally:
            # Wake it while attempt 2 runs: its own clean-up must not kill attempt 2.
            frozen.send_signal(signal.SIGCONT)
        _wait_done(client, url, {job}, timeout=60)
        state = client.get(f"{url}/jobs/{job}").json()
        _until(lambda: _refused(cluster.executor_log(frozen)), 30, "stale outcome not refused")
        more = {
            _submit(client, u, _doc(cluster.ledger, f"after-{n}", 0.1))
            for n, u in enumerate(cluster.urls)
        }
        _wait_done(client, url, more, timeout=60)
        after = _states(client, url)

    assert (state["state"], state["attempt"]) == ("succeeded", 2)
    assert taken_over_after >= LEASE_S * 0.8  # the lease, not a dead-process check
    events = [(a, e) for j, a, _, e in _ledger(cluster.ledger) if j == job]
    assert events == [(1, "start"), (2, "start"), (2, "done")]
    assert frozen.poll() is None  # it keeps serving after its outcome was refused
    assert all(after[i][0] == "succeeded" for i in more)
