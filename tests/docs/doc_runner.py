"""Run documentation snippets against a real ``mlaas4hep serve``, as a reader would.

One session: a working directory laid out like the repository root (``examples/`` copied,
``data/`` generated), ``HOME`` in a temporary directory (so ``mlaas4hep token --save`` and
the service's default data directory ``~/.local/share/mlaas4hep`` land there), and
``mlaas4hep serve`` on 127.0.0.1:8000 when that port is free. When it is not, the server
takes a free port, ``MLAAS4HEP_URL`` points the CLI at it and ``localhost:8000`` /
``127.0.0.1:8000`` in the snippets are rewritten to it (each such rewrite is listed in a
failure report).

Shell snippets run with ``bash -uo pipefail -c`` in document order, the snippets of one
file sharing their variables as one terminal session would (``export TOKEN=...`` in one
block, ``$TOKEN`` in the next). Instead of ``-e``, an ERR trap records every command that
exits non-zero and the snippet fails at its end: one run names all failing commands.
``curl`` runs with ``--fail-with-body``, so an HTTP error status is a failure too (the docs
call curl with ``-s``, which exits 0 on a 404). Python snippets run with this
interpreter.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from doc_registry import EPILOGUES, PRELUDES, REWRITES, SKIPS, Skip
from doc_snippets import Snippet

from mlaas4hep.loopback import free_port, listening

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: mlaas4hep, python
DOC_PORT = 8000
DATA_EVENTS = 20_000  # the session's data/ before the README makes its own
CARD_EVENTS = 4_000  # per dataset, for the model the session deploys
_FAILED = re.compile(r"^@@docs-failed line (\d+) exit (\d+): (.*)$", re.M)

# Helpers the rewrites and preludes of doc_registry call; `docs_` marks them as the
# harness's, not the docs'.
BASH_HELPERS = r"""
curl() { command curl --fail-with-body "$@"; }
docs_api() {
  command curl -sS --fail-with-body -H "Authorization: Bearer $(mlaas4hep token --user alice)" \
    "$MLAAS4HEP_DOCS_URL/api/v1/$1" "${@:2}"
}
docs_json() { python -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
docs_job() { docs_api "jobs?limit=1${1:+&state=$1}" | docs_json 'd["items"][0]["id"]'; }
docs_next_cursor() { docs_api "jobs?limit=1" | docs_json 'd["next_cursor"] or ""'; }
docs_dataset() {
  docs_api datasets | docs_json "next(x['id'] for x in d['items'] if x['name'] == '$1')"
}
docs_spare_job() {
  docs_api jobs -H 'Content-Type: application/yaml' --data-binary @"$MLAAS4HEP_DOCS_SPARE" \
    | docs_json 'd["id"]'
}
"""


@dataclass
class Outcome:
    """What one snippet did: ``ok``, or the failing commands and the output."""

    ok: bool
    report: str


@dataclass
class DocsSession:
    """The working directory, the environment and the server the snippets run against."""

    base: Path
    root: Path = field(init=False)
    card_dir: Path = field(init=False)
    port: int = DOC_PORT
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    card: str = ""
    _bash_vars: str = ""

    def __post_init__(self) -> None:
        self.root = self.base / "work"
        self.card_dir = self.base / "card"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- set-up -----------------------------------------------------------------------

    def start(self) -> DocsSession:
        from mlaas4hep.data.samples import write_sample_set

        shutil.copytree(REPO / "examples", self.root / "examples")
        write_sample_set(self.root / "data", DATA_EVENTS, seed=0)
        home = self.base / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLAAS4HEP_", "XDG_"))}
        env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.env = env
        self._serve()
        self.env["MLAAS4HEP_DOCS_URL"] = self.url
        if self.port != DOC_PORT:
            self.env["MLAAS4HEP_URL"] = self.url
        self._bash_vars = subprocess.run(
            ["bash", "-c", "compgen -v"], capture_output=True, text=True, check=True, env=env
        ).stdout.replace("\n", " ")
        self._deploy_model_and_card()
        self._reader_files()
        return self

    def _serve(self) -> None:
        for port in (DOC_PORT, free_port()):
            if port == DOC_PORT and listening(port, timeout_s=0.2):
                continue  # taken: fall back to a free port and rewrite the docs' URLs
            self.port = port
            log = (self.base / f"server-{port}.log").open("ab")
            argv = [str(BIN / "mlaas4hep"), "serve", "--port", str(port)]
            self.proc = subprocess.Popen(argv, cwd=self.root, env=self.env, stdout=log, stderr=log)
            log.close()
            if listening(port, self.proc, timeout_s=60):
                return
            self.stop()
        msg = f"mlaas4hep serve did not start; see {self.base}/server-*.log"
        raise RuntimeError(msg)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def token(self) -> str:
        argv = [str(BIN / "mlaas4hep"), "token", "--user", "alice"]
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    def _small_spec(self, deploy: str | None) -> str:
        """examples/tth-vs-qcd.yaml on the session's uploaded datasets, small and fast."""
        doc: dict[str, Any] = yaml.safe_load((REPO / "examples" / "tth-vs-qcd.yaml").read_text())
        for entry, name in zip(doc["data"]["datasets"], ("signal", "background"), strict=True):
            entry["files"] = [f"dataset:docs-{name}.root"]
        doc["data"].update(max_events=CARD_EVENTS, step_size=2000)
        doc["train"].update(epochs=2, device="cpu")
        doc["deploy"] = {"name": deploy} if deploy else None
        return yaml.safe_dump(doc, sort_keys=False)

    def _deploy_model_and_card(self) -> None:
        """Train and deploy ``tth-classifier`` (the model the docs query) through the
        service, and keep its model card."""
        headers = {"Authorization": f"Bearer {self.token()}"}
        with httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=60) as client:
            for name in ("signal", "background"):
                body = (self.root / "data" / f"{name}.root").read_bytes()
                r = client.post("/datasets", params={"name": f"docs-{name}.root"}, content=body)
                assert r.status_code == 201, r.text
            r = client.post(
                "/jobs",
                content=self._small_spec("tth-classifier"),
                headers={"Content-Type": "application/yaml"},
            )
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            deadline = time.monotonic() + 300
            while (job := client.get(f"/jobs/{job_id}").json())["state"] not in (
                "succeeded",
                "failed",
                "cancelled",
            ):
                assert time.monotonic() < deadline, job
                time.sleep(0.5)
            log = client.get(f"/jobs/{job_id}/logs").text
            assert job["state"] == "succeeded", (job.get("reason"), log[-3000:])
            # The card's directory: the bundle as `mlaas4hep download` writes it.
            self.card_dir.mkdir()
            for name in ("README.md", "model.onnx"):
                r = client.get(f"/jobs/{job_id}/artifacts/{name}")
                assert r.status_code == 200, (name, r.text)
                (self.card_dir / name).write_bytes(r.content)
            self.card = (self.card_dir / "README.md").read_text()

    def _reader_files(self) -> None:
        """The files the docs assume the reader has, made from the session's own."""
        root, data = self.root, self.root / "data"
        for name in ("data/ttH_1.root", "nano.root", "events.root", "signal.root"):
            shutil.copyfile(data / "signal.root", root / name)
        (root / "pipeline.yaml").write_text(self._small_spec(None))
        spare = self.base / "spare-job.yaml"
        spare.write_text(self._small_spec(None))
        self.env["MLAAS4HEP_DOCS_SPARE"] = str(spare)
        user_model = (REPO / "examples" / "user_torch_model.py").read_text()
        (root / "mymodel.py").write_text(user_model)
        (root / "apply.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": "score-ttH",
                    "apply": {"model": "tth-classifier", "files": ["dataset:docs-signal.root"]},
                }
            )
        )
        (root / "rows.json").write_text(json.dumps([[0.1] * 42, [0.2] * 42]))
        models = Path(self.env["HOME"]) / ".local" / "share" / "mlaas4hep" / "models"
        version = next(models.glob("tth-classifier/*/model.onnx")).parent
        (root / "tth-classifier").mkdir()
        for name in ("model.onnx", "metadata.json"):
            if (version / name).is_file():
                shutil.copyfile(version / name, root / name)
                shutil.copyfile(version / name, root / "tth-classifier" / name)

    # -- running ----------------------------------------------------------------------

    def prepare(self, snippet: Snippet) -> tuple[str, list[str]]:
        """The snippet's code with the registry's rewrites, preludes and epilogues applied,
        and the list of what was changed (for the failure report)."""
        code, notes = snippet.code, []
        for rw in (r for r in REWRITES if r.snippet == snippet.id):
            assert rw.old in code, f"doc_registry.py: {rw.old!r} is not in {snippet.id}"
            code = code.replace(rw.old, rw.new)
            notes.append(f"rewrote {rw.old!r} -> {rw.new!r}: {rw.reason}")
        if self.port != DOC_PORT:
            for host in ("localhost:8000", "127.0.0.1:8000"):
                if host in code:
                    code = code.replace(host, f"127.0.0.1:{self.port}")
                    notes.append(f"rewrote {host} -> 127.0.0.1:{self.port}: port 8000 was taken")
        preludes = [p for p in PRELUDES if p.snippet == snippet.id]
        prelude = "".join(p.code for p in preludes)
        notes += [f"prelude {p.code.strip()!r}: {p.reason}" for p in preludes]
        epilogue = EPILOGUES.get(snippet.id, "")
        if epilogue:
            notes.append(f"epilogue {epilogue.strip()!r}: the call mlaas4hep makes")
        return prelude + code + epilogue, notes

    def run(self, snippet: Snippet, timeout: float = 300, cwd: Path | None = None) -> Outcome:
        """Run *snippet* (in the working directory, or *cwd*) and say how it went."""
        code, notes = self.prepare(snippet)
        if snippet.lang == "python":
            argv, offset = [sys.executable, "-c", code], 0
        else:
            script, offset = self._bash_script(snippet, code)
            argv = ["bash", "-uo", "pipefail", "-c", script]
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=cwd or self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # so a timeout ends the whole snippet, children too
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            err += f"\n(timed out after {timeout:.0f} s)"
        took = time.monotonic() - started
        if proc.returncode == 0:
            return Outcome(True, f"{snippet.id}: ok in {took:.1f} s")
        return Outcome(False, _report(snippet, proc.returncode, out, err, notes, offset, took))

    def _bash_script(self, snippet: Snippet, code: str) -> tuple[str, int]:
        """The snippet inside a wrapper that loads and saves the file's shell variables."""
        state = self.base / "state" / (snippet.source.replace("/", "_") + ".sh")
        state.parent.mkdir(exist_ok=True)
        head = (
            BASH_HELPERS
            + f"[ -f {shlex.quote(str(state))} ] && source {shlex.quote(str(state))}\n"
            + "__docs_fail=0\n"
            + 'trap \'__docs_rc=$?; __docs_fail=1; printf "@@docs-failed line %s exit %s: %s\\n" '
            '"$LINENO" "$__docs_rc" "$BASH_COMMAND" >&2\' ERR\n'
        )
        tail = (
            "\ntrap - ERR\n"
            "for __docs_v in $(compgen -v); do\n"
            f'  case " {self._bash_vars} " in *" $__docs_v "*) ;; __docs*) ;; '
            '*) declare -p "$__docs_v" ;; esac\n'
            f"done > {shlex.quote(str(state))}\n"
            'exit "$__docs_fail"\n'
        )
        prelude_lines = code.count("\n") - snippet.code.count("\n")
        offset = head.count("\n") + 1 + prelude_lines
        return head + code + tail, offset


def skip_reason(snippet: Snippet) -> str | None:
    """The registry's reason not to run *snippet* here, or None."""
    rule: Skip | None = next((s for s in SKIPS if s.snippet == snippet.id), None)
    if rule is None:
        return None
    if rule.unless_module is not None:
        from importlib.util import find_spec

        if find_spec(rule.unless_module) is not None:
            return None
    return rule.reason


def _report(
    snippet: Snippet, rc: int, out: str, err: str, notes: list[str], offset: int, took: float
) -> str:
    lines = [f"{snippet.id} ({snippet.source}, line {snippet.line}) failed after {took:.1f} s:"]
    failed = _FAILED.findall(err)
    for line, code, command in failed:
        doc_line = snippet.line + int(line) - offset
        lines.append(f"  {snippet.source}:{doc_line}: exit {code}: {command}")
    if not failed:
        lines.append(f"  exit {rc}")
    lines += [f"  ({n})" for n in notes]
    lines.append("--- stderr (end) ---")
    lines += [ln for ln in err.splitlines() if not _FAILED.match(ln)][-40:]
    lines.append("--- stdout (end) ---")
    lines += out.splitlines()[-15:]
    return "\n".join(lines)
