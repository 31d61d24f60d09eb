"""Run documentation snippets against a real ``mlaas4hep serve``, as a reader would.

One session: a working directory laid out like the repository root (``examples/`` copied,
``data/`` generated), ``HOME`` in a temporary directory (so ``mlaas4hep token --save`` and
the service's default data directory ``~/.local/share/mlaas4hep`` land there), and
``mlaas4hep serve --grpc-port 8001`` on 127.0.0.1:8000 when those ports are free. When
they are not, the server takes free ports, ``MLAAS4HEP_URL`` points the CLI at it and
``localhost:8000`` / ``127.0.0.1:8000`` (and 8001) in the snippets are rewritten to them
(each such rewrite is listed in a failure report).

Shell snippets run with ``bash -uo pipefail -c`` in document order, the snippets of one
file sharing their variables as one terminal session would (``export TOKEN=...`` in one
block, ``$TOKEN`` in the next). Instead of ``-e``, an ERR trap records every command that
exits non-zero and the snippet fails at its end: one run names all failing commands.
``curl`` on their PATH adds ``--fail-with-body``, so an HTTP error status is a failure too
(the docs call curl with ``-s``, which exits 0 on a 404).

Python snippets of one file run in one interpreter (this one), each ``exec``-ed in the
namespace the earlier ones left, as in a notebook; tracebacks give the doc's own line
numbers.
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
from doc_python import PythonSession
from doc_registry import EPILOGUES, PRELUDES, REWRITES, SKIPS, Skip
from doc_snippets import Snippet

from mlaas4hep.loopback import free_port, listening

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: mlaas4hep, python
DOC_PORT = 8000
DOC_GRPC_PORT = 8001  # docs/inference.md: `mlaas4hep serve --grpc-port 8001`
DATA_EVENTS = 20_000  # the session's data/ before the README makes its own
CARD_EVENTS = 4_000  # per dataset, for the model the session deploys
_FAILED = re.compile(r"^@@docs-failed line (\d+) exit (\d+): (.*)$", re.M)

# Helpers the rewrites and preludes of doc_registry call; `docs_` marks them as the
# harness's, not the docs'.
BASH_HELPERS = r"""
docs_api() {
  command curl -sS --fail-with-body -H "Authorization: Bearer $(mlaas4hep token --user alice)" \
    "$MLAAS4HEP_DOCS_URL/api/v1/$1" "${@:2}"
}
docs_json() { python -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
docs_job() {  # [STATE [NAME]]: the newest such job's id
  docs_api "jobs?limit=100${1:+&state=$1}" \
    | docs_json "next(j['id'] for j in d['items'] if j['name'] == '${2:-}' or not '${2:-}')"
}
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
    grpc_port: int = DOC_GRPC_PORT
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    card: str = ""
    job_id: str = ""
    _bash_vars: str = ""
    _python: dict[str, PythonSession] = field(default_factory=dict)

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
        tools = self.base / "bin"
        tools.mkdir()
        real_curl = shutil.which("curl") or "/usr/bin/curl"
        (tools / "curl").write_text(f'#!/bin/sh\nexec {real_curl} --fail-with-body "$@"\n')
        (tools / "curl").chmod(0o755)
        env.update(HOME=str(home), PATH=os.pathsep.join([str(tools), str(BIN), env["PATH"]]))
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.env = env
        self._serve()
        self.env["MLAAS4HEP_DOCS_URL"] = self.url
        if self.port != DOC_PORT:
            self.env["MLAAS4HEP_URL"] = self.url
        self._bash_vars = subprocess.run(
            ["bash", "-c", "compgen -v"], capture_output=True, text=True, check=True, env=env
        ).stdout.replace("\n", " ")
        # What the README's "Everyday use" leaves for the other pages (that block runs in
        # test_readme_walkthrough.py): a saved token; runs/tth (made in _reader_files).
        argv = [str(BIN / "mlaas4hep"), "token", "--user", "alice", "--save"]
        subprocess.run(argv, env=self.env, capture_output=True, check=True)
        self._deploy_model_and_card()
        self._reader_files()
        return self

    def _serve(self) -> None:
        for port in (DOC_PORT, free_port()):
            if port == DOC_PORT and listening(port, timeout_s=0.2):
                continue  # taken: fall back to a free port and rewrite the docs' URLs
            self.port = port
            if listening(DOC_GRPC_PORT, timeout_s=0.2) or port != DOC_PORT:
                self.grpc_port = free_port()
            log = (self.base / f"server-{port}.log").open("ab")
            argv = [str(BIN / "mlaas4hep"), "serve", "--port", str(port)]
            argv += ["--grpc-port", str(self.grpc_port)]
            self.proc = subprocess.Popen(argv, cwd=self.root, env=self.env, stdout=log, stderr=log)
            log.close()
            if listening(port, self.proc, timeout_s=60):
                return
            self.stop()
        msg = f"mlaas4hep serve did not start; see {self.base}/server-*.log"
        raise RuntimeError(msg)

    def stop(self) -> None:
        for session in self._python.values():
            session.stop()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def served_version(self, model: str) -> str:
        """The newest version of *model* the service serves now."""
        headers = {"Authorization": f"Bearer {self.token()}"}
        r = httpx.get(f"{self.url}/v2/models/{model}", headers=headers, timeout=30)
        r.raise_for_status()
        return str(max(int(v) for v in r.json()["versions"]))

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
        from mlaas4hep.data.samples import write_sample, write_sample_set

        headers = {"Authorization": f"Bearer {self.token()}"}
        # Files of their own (the service keeps one dataset per content: the docs' uploads
        # of data/*.root must not find these under another name).
        own = write_sample_set(self.base / "session-data", CARD_EVENTS, seed=11)
        with httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=60) as client:
            for name in ("signal", "background"):
                body = own[name].read_bytes()
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
            self.job_id = job_id
            # The reader's dataset of the apply example (docs/service.md: dataset:ttH.root).
            ttH = write_sample(self.base / "ttH.root", "signal", CARD_EVENTS, seed=12)
            body = ttH.read_bytes()
            r = client.post("/datasets", params={"name": "ttH.root"}, content=body)
            assert r.status_code == 201, r.text

    def _reader_files(self) -> None:
        """The files the docs assume the reader has, made from the session's own."""
        root, data = self.root, self.root / "data"
        for name in ("data/ttH_1.root", "nano.root", "events.root", "signal.root"):
            shutil.copyfile(data / "signal.root", root / name)
        shutil.copyfile(data / "background.root", root / "big.root")
        # runs/tth, which the README's `mlaas4hep run` makes (that block runs in
        # test_readme_walkthrough.py): the session model's bundle, as `download` writes it.
        argv = [str(BIN / "mlaas4hep"), "download", self.job_id, "--out", "runs/tth"]
        argv += ["--token", self.token()]
        done = subprocess.run(argv, cwd=root, env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
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
                    "apply": {"model": "tth-classifier", "files": ["dataset:ttH.root"]},
                }
            )
        )
        # Rows of the served model's width (the doc's rows.json is the reader's).
        headers = {"Authorization": f"Bearer {self.token()}"}
        deadline = time.monotonic() + 60  # the repository poll loads what the job published
        while True:
            meta = httpx.get(f"{self.url}/v2/models/tth-classifier", headers=headers, timeout=30)
            if meta.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        width = int(meta.json()["inputs"][0]["shape"][1])
        (root / "rows.json").write_text(json.dumps([[0.1] * width, [0.2] * width]))
        models = Path(self.env["HOME"]) / ".local" / "share" / "mlaas4hep" / "models"
        version = next(models.glob("tth-classifier/*/model.onnx")).parent
        for name in ("model.onnx", "metadata.json"):
            shutil.copyfile(version / name, root / name)

    # -- running ----------------------------------------------------------------------

    def prepare(self, snippet: Snippet) -> tuple[str, str, str, list[str]]:
        """(prelude, code, epilogue) of *snippet* after the registry's rewrites, and the
        list of what was changed, for the failure report."""
        code, notes = snippet.code, []
        for rw in (r for r in REWRITES if r.snippet == snippet.id):
            assert rw.old in code, f"doc_registry.py: {rw.old!r} is not in {snippet.id}"
            new = rw.new(code) if callable(rw.new) else rw.new
            if "{version}" in new:
                new = new.replace("{version}", self.served_version("tth-classifier"))
            code = code.replace(rw.old, new)
            notes.append(f"rewrote {rw.old!r} -> {new!r}: {rw.reason}")
        for doc_port, port in ((DOC_PORT, self.port), (DOC_GRPC_PORT, self.grpc_port)):
            for host in (f"localhost:{doc_port}", f"127.0.0.1:{doc_port}"):
                if port != doc_port and host in code:
                    code = code.replace(host, f"127.0.0.1:{port}")
                    notes.append(f"rewrote {host} -> 127.0.0.1:{port}: {doc_port} was taken")
        preludes = [p for p in PRELUDES if p.snippet == snippet.id]
        notes += [f"prelude {p.code.strip()!r}: {p.reason}" for p in preludes]
        epilogue = EPILOGUES.get(snippet.id, "")
        if epilogue:
            notes.append(f"epilogue {epilogue.strip()!r}: the call mlaas4hep makes")
        return "".join(p.code for p in preludes), code, epilogue, notes

    def run(self, snippet: Snippet, timeout: float = 300, cwd: Path | None = None) -> Outcome:
        """Run *snippet* (in the working directory, or *cwd*) and say how it went."""
        prelude, code, epilogue, notes = self.prepare(snippet)
        started = time.monotonic()
        if snippet.lang == "python":
            ok, out, err = self._run_python(snippet, prelude, code, epilogue, cwd, timeout)
            rc, offset = (0 if ok else 1), 0
        else:
            script, offset = self._bash_script(snippet, prelude, code + epilogue)
            argv = ["bash", "-uo", "pipefail", "-c", script]
            rc, out, err = self._run_bash(argv, cwd or self.root, timeout)
        took = time.monotonic() - started
        if rc == 0:
            return Outcome(True, f"{snippet.id}: ok in {took:.1f} s")
        return Outcome(False, _report(snippet, rc, out, err, notes, offset, took))

    def _run_bash(self, argv: list[str], cwd: Path, timeout: float) -> tuple[int, str, str]:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
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
        return proc.returncode, out, err

    def _run_python(
        self,
        snippet: Snippet,
        prelude: str,
        code: str,
        epilogue: str,
        cwd: Path | None,
        timeout: float,
    ) -> tuple[bool, str, str]:
        where = cwd or self.root
        key = f"{snippet.source}@{where}"
        session = self._python.setdefault(key, PythonSession(self.env))
        logs = self.base / "logs" / snippet.id.replace("/", "_").replace("#", "_")
        logs.parent.mkdir(exist_ok=True)
        outs, errs = [], []
        parts = [(prelude, "<prelude>", 1), (code, snippet.source, snippet.line)]
        parts.append((epilogue, "<epilogue>", 1))
        for part, filename, line in parts:
            if not part:
                continue
            ok, out, err = session.run(part, filename, line, where, logs, timeout)
            outs.append(out)
            errs.append(err if ok is not None else f"{err}\n(timed out after {timeout:.0f} s)")
            if not ok:
                return False, "".join(outs), "".join(errs)
        return True, "".join(outs), "".join(errs)

    def _bash_script(self, snippet: Snippet, prelude: str, code: str) -> tuple[str, int]:
        """The snippet inside a wrapper that loads and saves the file's shell variables;
        and the script's line the snippet's first line is on."""
        state = self.base / "state" / (snippet.source.replace("/", "_") + ".sh")
        state.parent.mkdir(exist_ok=True)
        head = (
            BASH_HELPERS
            + f"[ -f {shlex.quote(str(state))} ] && source {shlex.quote(str(state))}\n"
            + "__docs_fail=0\n"
            + 'trap \'__docs_rc=$?; __docs_fail=1; printf "@@docs-failed line %s exit %s: %s\\n" '
            '"$LINENO" "$__docs_rc" "$BASH_COMMAND" >&2\' ERR\n' + prelude
        )
        tail = (
            "\ntrap - ERR\n"
            "for __docs_v in $(compgen -v); do\n"
            f'  case " {self._bash_vars} " in *" $__docs_v "*) ;; __docs*) ;; '
            '*) declare -p "$__docs_v" ;; esac\n'
            f"done > {shlex.quote(str(state))}\n"
            'exit "$__docs_fail"\n'
        )
        return head + code + tail, head.count("\n") + 1


def skip_reason(snippet: Snippet) -> str | None:
    """The registry's reason not to run *snippet* here, or None."""
    rule: Skip | None = next((s for s in SKIPS if s.snippet == snippet.id), None)
    if rule is None:
        return None
    if rule.unless is not None and rule.unless():
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
