"""The Python interpreter a documentation page's snippets share, as a notebook would.

Run as a script by :class:`PythonSession`: it reads one JSON request a line on stdin
(``code``, ``filename``, ``first_line``, ``cwd``, ``out``, ``err``), runs the code in the
namespace the earlier requests left, with file descriptors 1 and 2 sent to the files
``out`` and ``err`` (so the output of subprocesses is caught too), and answers
``{"ok": bool}`` on the descriptor named by its argument. Tracebacks name the doc's file
and line.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any


def _serve(reply_fd: int) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    with os.fdopen(reply_fd, "w") as reply:
        for line in sys.stdin:
            request = json.loads(line)
            ok = _exec(request, namespace)
            reply.write(json.dumps({"ok": ok}) + "\n")
            reply.flush()


def _exec(request: dict[str, Any], namespace: dict[str, Any]) -> bool:
    os.chdir(request["cwd"])
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(request["out"], "w") as out, open(request["err"], "w") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            # Blank lines first, so the traceback's line numbers are the doc's.
            source = "\n" * (request["first_line"] - 1) + request["code"]
            exec(compile(source, request["filename"], "exec"), namespace)  # noqa: S102
        except BaseException:  # report everything, SystemExit included
            traceback.print_exc()
            return False
        else:
            return True
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)


class PythonSession:
    """One interpreter for the Python snippets of one page; restarted after a timeout."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.replies = -1

    def _start(self, cwd: Path) -> subprocess.Popen[bytes]:
        read_fd, write_fd = os.pipe()
        proc = subprocess.Popen(
            [sys.executable, __file__, str(write_fd)],
            stdin=subprocess.PIPE,
            pass_fds=(write_fd,),
            cwd=cwd,
            env=self.env,
            start_new_session=True,  # a timeout ends the interpreter and its children
        )
        os.close(write_fd)
        self.replies = read_fd
        return proc

    def run(
        self, code: str, filename: str, first_line: int, cwd: Path, logs: Path, timeout: float
    ) -> tuple[bool | None, str, str]:
        """Run *code*: (ok, stdout, stderr); ok is None when it timed out."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start(cwd)
        out, err = logs.with_suffix(".out"), logs.with_suffix(".err")
        request = {"code": code, "filename": filename, "first_line": first_line}
        request |= {"cwd": str(cwd), "out": str(out), "err": str(err)}
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.replies], [], [], timeout)
        answer = os.read(self.replies, 4096) if ready else b""
        if not answer:  # timed out, or the interpreter died (os._exit in a snippet)
            self.stop()
        ok = json.loads(answer)["ok"] if answer else None
        return ok, _read(out), _read(err)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the interpreter's loop ends
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            os.close(self.replies)
            self.proc = None


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
