"""Reading an uploaded file's schema outside the web process: a bounded, sandboxed worker.

An upload is hostile bytes, and uproot is a large deserializer (it even generates Python
classes from a file's streamer records). So the web process never parses one: it runs
``inspect_tree`` in a child process,

* inside the job sandbox (:mod:`mlaas4hep.jobs.sandbox`: no network, no capabilities,
  seccomp, of the service's data only the dataset's directory visible, as a worker-slot
  uid of its own on a root host) when the executor's sandbox passes its probe; else as a
  plain child (logged: ``executor.sandbox: none``, or a host that cannot sandbox);
* under rlimits the child sets before it touches the file: address space, CPU seconds,
  output file size (its answer goes to a capped file, never into a pipe the server
  buffers), open files, no core dumps; and a wall-clock deadline after which its whole
  process group is killed;
* at most :attr:`InspectLimits.concurrent` at a time per service.

Whatever happens to the child (a crash, a limit, a hang), the caller gets a
:class:`~mlaas4hep.errors.SpecError` (HTTP 422) saying what went wrong, and the service
carries on. The schema of an accepted upload is kept beside it (``.schema.json``), so
pages never parse a file again.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlaas4hep.config import MiB, Settings
from mlaas4hep.documents import load_json
from mlaas4hep.errors import Mlaas4hepError, PayloadTooLarge, SpecError
from mlaas4hep.jobs import sandbox as jobs_sandbox

log = logging.getLogger(__name__)
_CHILD = (
    "import sys; from mlaas4hep.jobs.dataset_inspect import child_main; child_main(sys.argv[1:])"
)
_OUT = "schema.json"


@dataclass(frozen=True)
class InspectLimits:
    """What one inspection may use."""

    wall_s: float = 60.0
    cpu_s: int = 30
    memory_bytes: int = 1024 * MiB  # RLIMIT_AS: uproot + numpy map ~150 MiB
    output_bytes: int = 16 * MiB  # the JSON schema (a branch is ~200 bytes)
    concurrent: int = 2


class InspectFailed(SpecError):
    """The upload could not be read as a ROOT file (HTTP 422)."""


class DatasetInspector:
    """Runs inspections for one service (built once by the dataset store)."""

    def __init__(self, settings: Settings, limits: InspectLimits | None = None) -> None:
        self.limits = limits or InspectLimits()
        self._sandbox: jobs_sandbox.Sandbox | None = None  # probed at the first upload
        self._settings = settings.executor
        self._slot = settings.executor.workers  # a uid no job slot uses
        self._gate = threading.BoundedSemaphore(self.limits.concurrent)
        self._probe_lock = threading.Lock()

    def sandbox(self) -> jobs_sandbox.Sandbox:
        """The sandbox inspections run in, probed once (a trivial command, ~0.1 s)."""
        with self._probe_lock:
            if self._sandbox is None:
                box = jobs_sandbox.probe(jobs_sandbox.resolve(self._settings))
                if not (box.enabled and box.ready):
                    log.warning(
                        "dataset uploads are parsed without the sandbox (%s); limits apply",
                        box.describe(),
                    )
                self._sandbox = box
            return self._sandbox

    def inspect(self, path: Path, shown_as: str) -> dict[str, Any]:
        """The schema of ROOT file *path* (``TreeSchema.to_dict()``); *shown_as* in messages.

        Raises:
            InspectFailed: not a readable ROOT file, or the reader crashed or hit a limit.
        """
        with self._gate, tempfile.TemporaryDirectory(prefix="mlaas4hep-inspect-") as tmp:
            out = Path(tmp)
            argv = [sys.executable, "-c", _CHILD, str(path), str(out / _OUT)]
            argv += [str(self.limits.cpu_s), str(self.limits.memory_bytes)]
            argv.append(str(self.limits.output_bytes))
            code = self._run(argv, out, path.parent)
            answer = _read_answer(out / _OUT, self.limits.output_bytes)
        if answer is None:
            raise InspectFailed(self._crash_message(code, shown_as))
        if not answer.get("ok"):
            text = str(answer.get("message", "unreadable"))
            raise InspectFailed(text.replace(str(path), repr(shown_as)[1:-1])[:2000])
        schema = answer.get("schema")
        if not isinstance(schema, dict):
            raise InspectFailed(self._crash_message(code, shown_as))
        schema["path"] = shown_as
        return schema

    def _run(self, argv: list[str], out: Path, readable: Path) -> int | None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OPENBLAS_NUM_THREADS": "1"}
        env.update(HOME=str(out), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
        box = self.sandbox()
        if not (box.enabled and box.ready):
            return self._wait(argv, env, ())
        jobs_sandbox.grant(box, self._slot, out, (readable,))
        plan = jobs_sandbox.SandboxPlan(writable=out, readable=(readable,), network=False)
        with jobs_sandbox.seccomp_pipe() as fd:
            cmd = jobs_sandbox.wrap(box, argv, plan, slot=self._slot, seccomp_fd=fd)
            return self._wait(cmd, env, (fd,))

    def _wait(self, cmd: list[str], env: dict[str, str], fds: tuple[int, ...]) -> int | None:
        """Exit code, or None when the deadline passed (the process group is killed)."""
        proc = subprocess.Popen(
            cmd,
            env=env,
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            return proc.wait(timeout=self.limits.wall_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None

    def _crash_message(self, code: int | None, shown_as: str) -> str:
        if code is None:
            why = f"reading it took longer than {self.limits.wall_s:g} s"
        elif code < 0 and -code in (signal.SIGXCPU, signal.SIGKILL):
            why = f"reading it used more than {self.limits.cpu_s} s of CPU or was killed"
        elif code < 0 and -code == signal.SIGXFSZ:
            why = "its branch list is larger than the service accepts"
        elif code < 0:
            why = f"the reader crashed ({signal.Signals(-code).name})"
        else:
            why = f"the reader stopped (exit {code}; out of memory or a damaged file)"
        return (
            f"{shown_as!r} cannot be read as a ROOT file: {why}; check the file with "
            "`mlaas4hep inspect FILE` locally, or re-create it"
        )


def _read_answer(path: Path, cap: int) -> dict[str, Any] | None:
    try:
        with path.open("rb") as fh:
            raw = fh.read(cap + 1)
        answer = load_json(raw, what="the inspection answer", limit=cap)
    except (OSError, ValueError, PayloadTooLarge):  # DocumentError is a ValueError
        return None
    return answer if isinstance(answer, dict) else None


def child_main(args: list[str]) -> None:
    """The worker: limit itself, then inspect ``args[0]`` and write JSON to ``args[1]``."""
    path, out, cpu_s, memory, output = args[0], args[1], *map(int, args[2:5])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (output, output))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    from mlaas4hep.data.schema import inspect_tree

    try:
        answer: dict[str, Any] = {"ok": True, "schema": inspect_tree(path).to_dict()}
    except Mlaas4hepError as exc:
        answer = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
    except MemoryError:
        answer = {"ok": False, "error": "MemoryError", "message": "the file needs too much memory"}
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(answer, fh)
