"""README.md followed on a fresh clone, as written: ``make demo``, then "Everyday use".

The repository is cloned (``git clone``: what is committed, nothing else) into a temporary
directory; there ``make demo`` runs, then every command of the README's "Everyday use"
block in order, each in its own ``bash -euo pipefail -c`` from the clone's root, with
``mlaas4hep serve`` started in the background where the README names it. Every command
must exit 0.

What is not literal, and why:

- ``.venv``: installing the project's dependencies (torch and all, over 1 GB) per run is
  not affordable. The clone gets a venv of its own whose site-packages are this
  interpreter's, hard-linked (seconds, no space; skipped with the reason when they are on
  another filesystem), with ``mlaas4hep`` pointing at the clone's ``src/`` (a ``.pth``
  file). Its ``.installed`` stamp is newer than ``pyproject.toml``, so the Makefile's
  install step is up to date (checked with ``make -q``; pip is never run). Hard links,
  not a ``.pth`` to the shared packages: the bwrap sandbox of jobs and uploads shows
  only the venv's own directories.
- the reader's shell: the clone's ``.venv/bin`` first on ``PATH`` (an activated venv),
  ``HOME`` a temporary directory (the service's data and the saved token land there).
- port 8000: used when free. When it is taken (another service on this host), the
  service gets a free port and ``MLAAS4HEP_URL`` points the CLI at it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from doc_runner import REPO
from doc_snippets import markdown_snippets

from mlaas4hep.loopback import free_port, listening

pytestmark = pytest.mark.slow
DOC_PORT = 8000
STEP_TIMEOUT_S = 300


@dataclass
class Step:
    command: str
    rc: int
    took: float
    output: str


def test_readme_on_a_fresh_clone(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("needs git to clone the repository")
    clone = tmp_path / "mlaas4hep"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    env = _reader_env(tmp_path, clone)
    _overlay_venv(clone)
    up_to_date = subprocess.run(["make", "-q", ".venv/.installed"], cwd=clone, check=False)
    assert up_to_date.returncode == 0, "make would reinstall .venv; the stamp trick broke"

    steps: list[Step] = []
    _step(steps, "make demo", clone, env, timeout=600)
    everyday = _everyday_commands((clone / "README.md").read_text())
    server: subprocess.Popen[bytes] | None = None
    try:
        for command in everyday:
            if command.split("#")[0].split() == ["mlaas4hep", "serve"]:
                server = _serve(command, clone, env, tmp_path / "serve.log")
                continue
            _step(steps, command, clone, env, timeout=STEP_TIMEOUT_S)
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
    assert server is not None, "the Everyday use block no longer starts `mlaas4hep serve`"
    failed = [s for s in steps if s.rc != 0]
    log = (tmp_path / "serve.log").read_text(errors="replace")[-3000:]
    assert not failed, _report(steps, failed, log)


def _reader_env(tmp_path: Path, clone: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLAAS4HEP_", "XDG_"))}
    home = tmp_path / "home"
    home.mkdir()
    env["HOME"] = str(home)
    env["PATH"] = os.pathsep.join([str(clone / ".venv" / "bin"), env["PATH"]])
    env.pop("VIRTUAL_ENV", None)
    return env


def _overlay_venv(clone: Path) -> None:
    """``clone/.venv``: the clone's own mlaas4hep on this interpreter's packages, which are
    hard-linked (no copy, and the jobs' sandbox, which binds the venv, sees them)."""
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    shared = Path(sysconfig.get_paths()["purelib"])
    if os.stat(shared).st_dev != os.stat(venv).st_dev:
        pytest.skip("the venv's packages are on another filesystem: they cannot be hard-linked")
    shutil.rmtree(purelib)
    subprocess.run(["cp", "-al", str(shared), str(purelib)], check=True)
    for editable in purelib.glob("__editable__*mlaas4hep*"):
        editable.unlink()  # the checkout's own src, not this clone's (unlinks the link only)
    (purelib / "_mlaas4hep_clone.pth").write_text(f"{clone / 'src'}\n")
    script = venv / "bin" / "mlaas4hep"
    script.write_text(f"#!{python}\nimport sys\nfrom mlaas4hep.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    (venv / ".installed").touch()


def _everyday_commands(readme: str) -> list[str]:
    """The "Everyday use" block's commands in order (continuation lines joined)."""
    block = next(s for s in markdown_snippets(readme, "README.md") if s.heading == "Everyday use")
    commands, pending = [], ""
    for line in block.code.splitlines():
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip() and not pending.lstrip().startswith("#"):
            commands.append(pending.strip())
        pending = ""
    return commands


def _step(steps: list[Step], command: str, cwd: Path, env: dict[str, str], timeout: float) -> None:
    started = time.monotonic()
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\n(timed out after {timeout:.0f} s)"
    steps.append(Step(command, proc.returncode, time.monotonic() - started, out))


def _serve(command: str, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start the README's ``mlaas4hep serve`` in the background (on 8000 when free)."""
    argv = ["bash", "-c", f"exec {command.split('#')[0].strip()}"]
    if listening(DOC_PORT, timeout_s=0.2):
        port = free_port()
        argv[-1] += f" --port {port}"
        env["MLAAS4HEP_URL"] = f"http://127.0.0.1:{port}"
    else:
        port = DOC_PORT
    with log.open("ab") as out:
        server = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=out)
    assert listening(port, server, timeout_s=60), log.read_text(errors="replace")[-3000:]
    return server


def _report(steps: list[Step], failed: list[Step], server_log: str) -> str:
    lines = ["README.md followed on a fresh clone: commands that did not exit 0:"]
    lines += [f"  exit {s.rc}: {s.command}" for s in failed]
    done = [f"{s.command.split('#')[0].strip()} [exit {s.rc}, {s.took:.0f} s]" for s in steps]
    lines.append("all steps: " + "; ".join(done))
    for s in failed:
        lines += [f"--- {s.command} (exit {s.rc}, {s.took:.0f} s), end of output ---"]
        lines += s.output.splitlines()[-30:]
    lines += ["--- mlaas4hep serve log (end) ---", server_log]
    return "\n".join(lines)
