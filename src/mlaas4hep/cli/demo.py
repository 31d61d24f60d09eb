"""``mlaas4hep demo``: the whole system end to end on embedded defaults, in a few minutes.

Generates NanoAOD-like signal/background files, serves the signal over a local XRootD
server when ``xrootd`` is installed (else reads it locally and says so), starts
``mlaas4hep serve`` (SQLite, local executor, local token issuer) on a free loopback port,
mints a token, uploads the background file, submits the example pipeline over HTTP,
follows it live, prints the test metrics and where the plots are, asks the deployed model
for predictions over the V2 and the TFaaS APIs, prints the UI URL, and shuts everything
down. ``--keep`` leaves the service running until Ctrl-C (``make serve`` does the same
with the default port).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from mlaas4hep.cli.follow import follow as wait
from mlaas4hep.client import Client
from mlaas4hep.config import MLAAS4HEP_ARGV
from mlaas4hep.errors import Mlaas4hepError
from mlaas4hep.loopback import free_port, give_to_xrootd, listening, xrootd_command

MODEL = "tth-demo"
USER = "demo"


class DemoError(Mlaas4hepError):
    """A step of the demo did not work; the message says which and where its log is."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir", type=Path, default=Path("demo-run"), help="where everything is written"
    )
    parser.add_argument("--events", type=int, default=50_000, help="events per sample file")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs")
    parser.add_argument("--no-xrootd", action="store_true", help="read the signal locally")
    parser.add_argument("--keep", action="store_true", help="keep the service up until Ctrl-C")


def run(args: argparse.Namespace) -> int:
    from mlaas4hep.data.samples import write_sample_set

    work: Path = args.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)  # a demo always starts from scratch: stale state misleads
    logs = work / "logs"
    logs.mkdir(parents=True)
    _step(f"1/7 sample data: {args.events} signal + {args.events} background events")
    files = write_sample_set(work / "data", args.events, seed=1)
    with ExitStack() as stack:
        signal = str(files["signal"])
        if args.no_xrootd:
            print("    reading the signal from the local disk (--no-xrootd)")
        elif shutil.which("xrootd") is None:
            print("    `xrootd` is not installed: reading the signal from the local disk")
            print("    (Debian: apt-get install xrootd-server to see it read over root://)")
        else:
            signal = stack.enter_context(_xrootd(files["signal"], logs))
            print(f"    signal served by XRootD: {signal}")
        _step("2/7 service: mlaas4hep serve (SQLite, local executor, local issuer)")
        url = stack.enter_context(_service(work / "service", logs / "serve.log"))
        print(f"    {url}  (log: {logs / 'serve.log'})")
        token = _mint_token(work / "service")
        with Client(url, token, timeout=120.0) as client:
            _step("3/7 upload the background file as a dataset")
            body = files["background"].read_bytes()
            client.request("POST", "/datasets", params={"name": "background.root"}, content=body)
            _step("4/7 submit the pipeline and follow it")
            spec = _demo_spec(signal, args.epochs)
            (work / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
            job = client.submit(yaml.safe_dump(spec, sort_keys=False).encode(), [], None)
            print(f"    job {job['id']} ({work / 'pipeline.yaml'})")
            final = wait(client, job["id"], poll=1.0)
            if final["state"] != "succeeded":
                log = client.logs(job["id"]).decode(errors="replace")
                (logs / "job.log").write_text(log)
                msg = f"the job {final['state']}: {final['reason']} (log: {logs / 'job.log'})"
                raise DemoError(msg)
            _step("5/7 results")
            _show_results(client, job["id"], work / "results")
        _step("6/7 predictions from the deployed model")
        rows = _wait_for_model(url, token)
        _predict_v2(url, token, rows)
        _predict_tfaas(url, token, rows)
        _step("7/7 look around")
        print(f"    web UI:   {url}/ui/   (log in with the local issuer)")
        print(f"    API docs: {url}/docs")
        print(f"    token:    export MLAAS4HEP_URL={url} MLAAS4HEP_TOKEN=$(cat {work}/token)")
        (work / "token").write_text(token)
        (work / "token").chmod(0o600)
        if args.keep:
            print("    the service keeps running; Ctrl-C stops it")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    print("demo finished; everything it wrote is under", work)
    return 0


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


@contextmanager
def _process(argv: list[str], log: Path, what: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            print(f"    {what} did not stop on SIGTERM; killing it")
            proc.kill()
            proc.wait()


@contextmanager
def _xrootd(signal: Path, logs: Path) -> Iterator[str]:
    """Serve a copy of *signal* over root:// on a free loopback port; yields its URL."""
    import tempfile

    # A fresh 0755 tree: as root, xrootd drops to the ``xrootd`` user, which must read it.
    base = Path(tempfile.mkdtemp(prefix="mlaas4hep-demo-xrootd-"))
    try:
        base.chmod(0o755)
        data, admin = base / "data", base / "admin"
        data.mkdir(mode=0o755)
        admin.mkdir(mode=0o755)
        shutil.copy2(signal, data / signal.name)  # safe: the demo's own generated file
        (data / signal.name).chmod(0o644)
        port = free_port()
        (base / "xrootd.cfg").write_text(
            f"all.export /\nxrd.port {port}\nall.adminpath {admin}\nall.pidpath {admin}\n"
            f"oss.localroot {data}\n"
        )
        try:
            argv = xrootd_command(base / "xrootd.cfg", "demo")
            give_to_xrootd(admin)
        except (FileNotFoundError, LookupError) as exc:
            raise DemoError(f"{exc}; or run the demo with --no-xrootd") from exc
        with _process(argv, logs / "xrootd.log", "xrootd") as proc:
            if not listening(port, proc, timeout_s=30):
                msg = f"xrootd did not listen on port {port} within 30 s; see {logs / 'xrootd.log'}"
                raise DemoError(msg)
            yield f"root://127.0.0.1:{port}//{signal.name}"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def _service(data_dir: Path, log: Path) -> Iterator[str]:
    port = free_port()
    argv = [*MLAAS4HEP_ARGV, "serve", "--port", str(port), "--data-dir", str(data_dir)]
    url = f"http://127.0.0.1:{port}"
    with _process(argv, log, "the service") as proc:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                msg = f"the service exited with status {proc.returncode}; see {log}"
                raise DemoError(msg)
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                msg = f"the service was not ready within 120 s; see {log}"
                raise DemoError(msg)
            time.sleep(0.5)
        yield url


def _mint_token(data_dir: Path) -> str:
    from mlaas4hep.auth.local_issuer import LocalIssuer
    from mlaas4hep.cli.token import DEFAULT_SCOPES

    return LocalIssuer(data_dir, audience="mlaas4hep").mint(USER, DEFAULT_SCOPES)


def _demo_spec(signal: str, epochs: int) -> dict[str, Any]:
    """The example pipeline (examples/tth-vs-qcd.yaml), sized for a laptop demo."""
    return {
        "version": 1,
        "name": "demo-ttH-vs-QCD",
        "data": {
            "tree": "Events",
            "datasets": [
                {"name": "ttH", "files": [signal], "label": 1},
                {
                    "name": "QCD",
                    "files": ["dataset:background.root"],
                    "label": 0,
                    "weight": "genWeight",
                },
            ],
            "identifiers": ["run", "luminosityBlock", "event"],
            "step_size": 10_000,
        },
        "preprocess": {
            "select": {"Jet": "(Jet_pt > 30) & (abs(Jet_eta) < 2.4)"},
            "define": {
                "HT": "sum(Jet_pt)",
                "nBJet": "count(Jet_btagDeepB > 0.5)",
                "leadMuon_pt": "first(Muon_pt, 0)",
            },
            "cuts": [{"name": ">= 2 good jets", "expr": "nJet >= 2"}, "MET_pt > 20"],
            "features": {
                "scalars": ["MET_pt", "HT", "nJet", "nBJet", "leadMuon_pt"],
                "objects": {
                    "Jet": {
                        "fields": ["pt", "eta", "phi", "btagDeepB"],
                        "sort_by": "pt",
                        "length": 4,
                        "pad": 0.0,
                        "mask": True,
                    }
                },
            },
            "normalize": "standard",
            "split": {"validation": 0.2, "test": 0.2, "seed": 42},
        },
        "model": {"kind": "mlp", "hidden": [64, 32], "dropout": 0.1},
        "train": {"epochs": epochs, "batch_size": 512, "lr": 2.0e-3, "seed": 42},
        "deploy": {"name": MODEL},
    }


def _show_results(client: Client, job_id: str, dest: Path) -> None:
    names = [a["name"] for a in client.artifacts(job_id)]
    metrics_name = next((n for n in names if n.endswith("metrics.json")), None)
    if metrics_name is not None:
        saved = client.download(job_id, metrics_name, dest / "metrics.json")
        metrics = json.loads(saved.read_text())
        test = metrics.get("test", metrics)
        shown = {k: v for k, v in test.items() if isinstance(v, int | float)}
        text = ", ".join(f"{k}={v:.6g}" for k, v in sorted(shown.items()))
        print(f"    test metrics: {text}")
    for name in names:
        if name.endswith(".png"):
            client.download(job_id, name, dest / Path(name).name)
    plots = sorted(p.name for p in dest.glob("*.png"))
    print(f"    plots in {dest}: {', '.join(plots) or 'none'}")


def _wait_for_model(url: str, token: str) -> list[list[float]]:
    """Wait until the published model serves; three rows of zeros in its input shape."""
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/v2/models/{MODEL}", headers=headers, timeout=10)
        if r.status_code == 200:
            width = int(r.json()["inputs"][0]["shape"][-1])
            return [[0.0] * width, [0.5] * width, [1.0] * width]
        time.sleep(1)
    msg = f"the model {MODEL!r} was not served within 60 s after the job"
    raise DemoError(msg)


def _predict_v2(url: str, token: str, rows: list[list[float]]) -> None:
    body = {
        "inputs": [
            {
                "name": "features",
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP32",
                "data": [x for row in rows for x in row],
            }
        ]
    }
    r = httpx.post(
        f"{url}/v2/models/{MODEL}/infer",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    _check(r, "V2 infer")
    out = r.json()["outputs"][0]
    print(f"    V2    POST /v2/models/{MODEL}/infer -> {out['name']} = {out['data']}")


def _predict_tfaas(url: str, token: str, rows: list[list[float]]) -> None:
    r = httpx.get(f"{url}/v2/models/{MODEL}", headers={"Authorization": f"Bearer {token}"})
    keys = r.json().get("parameters", {}).get("feature_names") or [
        f"x{i}" for i in range(len(rows[0]))
    ]
    body = {"keys": keys, "values": rows[1], "model": MODEL}
    r = httpx.post(
        f"{url}/json", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    _check(r, "TFaaS /json")
    print(f"    TFaaS POST /json -> {r.json()}")


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code != 200:
        msg = f"{what} answered {response.status_code}: {response.text[:300]}"
        raise DemoError(msg)
