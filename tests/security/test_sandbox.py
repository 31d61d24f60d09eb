"""Issue 15 items 1 and 10: a job's user code cannot escape the sandbox, and runaway
processes or memory are stopped by the kernel's limits.

Each attack is a ``model: {kind: python, module: attack.py}`` job submitted by alice to the
shared real service; the module runs its probes at import time, prints one
``ATTACK-RESULT <json>`` line into the job log and raises (no training needed). All the
escape probes run in ONE job (a job costs a few seconds of imports); the fork bomb and the
memory hog run as two more jobs, side by side on the service's two worker slots.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from security_server import SecServer, assert_no_leak, wait_job

from mlaas4hep.auth.local_issuer import LOCAL_ISSUER
from mlaas4hep.config import MLAAS4HEP_ARGV
from mlaas4hep.jobs.layout import owner_dir

pytestmark = pytest.mark.usefixtures("root_only")

MARK = "ATTACK-RESULT "

PROBES = r"""
import ctypes, ctypes.util, json, os, signal, stat, subprocess, sys, time

libc = ctypes.CDLL(None, use_errno=True)
out = {}

def err(call):
    try:
        call()
    except OSError as exc:
        return f"refused: {exc.errno}"
    return "ALLOWED"

def rc(value):
    return "ALLOWED" if value == 0 else f"refused: {ctypes.get_errno()}"

status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
for key in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb", "NoNewPrivs", "Seccomp", "Uid"):
    out[key] = status[key].strip()
home = os.environ["HOME"]
out["mknod_block"] = err(lambda: os.mknod(
    os.path.join(home, "sda"), stat.S_IFBLK | 0o600, os.makedev(8, 0)))
out["mknod_char"] = err(lambda: os.mknod(
    os.path.join(home, "mem"), stat.S_IFCHR | 0o600, os.makedev(1, 1)))
target = os.path.join(home, "mnt")
os.mkdir(target)
out["mount_tmpfs"] = rc(libc.mount(b"none", target.encode(), b"tmpfs", 0, None))
out["mount_proc"] = rc(libc.mount(b"proc", target.encode(), b"proc", 0, None))
out["unshare_user"] = rc(libc.unshare(0x10000000))
out["unshare_mount"] = rc(libc.unshare(0x00020000))
done = subprocess.run(["unshare", "-Ur", "true"], capture_output=True)
out["unshare_cmd"] = "ALLOWED" if done.returncode == 0 else f"refused: {done.returncode}"
sibling = os.fork()
if sibling == 0:
    time.sleep(30)
    os._exit(0)
out["ptrace_attach"] = rc(libc.ptrace(16, sibling, None, None))
os.kill(sibling, signal.SIGKILL)
os.waitpid(sibling, 0)
buf = ctypes.create_string_buffer(4096)
out["syslog_read"] = "ALLOWED" if libc.klogctl(3, buf, 4096) >= 0 else "refused"
done = subprocess.run(["dmesg"], capture_output=True)
out["dmesg"] = "ALLOWED" if done.returncode == 0 and done.stdout else "refused"
out["kmsg"] = err(lambda: open("/dev/kmsg", "rb").read(1))
def write(path):
    with open(path, "w") as fh:
        fh.write("1")
out["proc_sys_hostname"] = err(lambda: write("/proc/sys/kernel/hostname"))
out["proc_sys_drop_caches"] = err(lambda: write("/proc/sys/vm/drop_caches"))
out["proc_sysrq"] = err(lambda: write("/proc/sysrq-trigger"))
def read(path):
    with open(path, "rb") as fh:
        data = fh.read()
    if data:
        raise SystemExit(f"READ {path}: {len(data)} bytes")
    return data
for name, path in SECRETS.items():
    try:
        read(path)
        out["read_" + name] = "refused: empty"
    except OSError as exc:
        out["read_" + name] = f"refused: {exc.errno}"
    except SystemExit as exc:
        out["read_" + name] = "ALLOWED " + str(exc)
def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as exc:
        return f"refused: {exc.errno}"
out["ls_root"] = listing("/root")
out["ls_data_dir"] = listing(DATA_DIR)
out["ls_datasets"] = listing(os.path.join(DATA_DIR, "datasets"))
out["ls_jobs"] = listing(os.path.join(DATA_DIR, "jobs"))
out["tmp_writable"] = err(lambda: write("/tmp/ok"))
print("ATTACK-RESULT " + json.dumps(out), flush=True)
raise RuntimeError("probes done")
"""

FORK_BOMB = r"""
import subprocess, sys, time
bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
subprocess.Popen([sys.executable, "-c", bomb])
time.sleep(600)
"""

MEMORY_HOG = r"""
hog = []
while True:
    hog.append(bytearray(64 << 20))
"""


def spec() -> dict[str, Any]:
    """A small valid pipeline whose model is the uploaded ``attack.py``."""
    return {
        "version": 1,
        "name": "attack",
        "data": {
            "tree": "Events",
            "datasets": [
                {"name": "sig", "files": ["dataset:sandbox-signal.root"], "label": 1},
                {"name": "bkg", "files": ["dataset:sandbox-background.root"], "label": 0},
            ],
        },
        "preprocess": {"features": {"scalars": ["MET_pt", "nJet"]}},
        "model": {"kind": "python", "module": "attack.py", "framework": "torch"},
        "train": {"epochs": 1, "device": "cpu"},
    }


@pytest.fixture(scope="module")
def datasets(secserver: SecServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice's two small datasets, and one of bob's; returns bob's dataset directory."""
    data = tmp_path_factory.mktemp("sandbox-samples")
    subprocess.run(
        [*MLAAS4HEP_ARGV, "sample-data", "--events", "400", str(data)], check=True, timeout=300
    )
    for user in ("alice", "bob"):
        with secserver.client(user) as client:
            for kind in ("signal", "background"):
                body = (data / f"{kind}.root").read_bytes()
                r = client.post(
                    "/api/v1/datasets", params={"name": f"sandbox-{kind}.root"}, content=body
                )
                assert r.status_code == 201, r.text
    bob = user_dir(secserver, "bob")
    assert user_dir(secserver, "alice").is_dir()
    assert bob.is_dir()
    return bob


def user_dir(server: SecServer, user: str) -> Path:
    """*user*'s dataset directory (owner key: local issuer + subject)."""
    return owner_dir(server.data_dir, f"{LOCAL_ISSUER}#{user}")


def submit(client: httpx.Client, module: str) -> str:
    files = [
        ("spec", ("pipeline.yaml", yaml.safe_dump(spec()), "application/yaml")),
        ("files", ("attack.py", module.encode(), "text/x-python")),
    ]
    r = client.post("/api/v1/jobs", files=files)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def result_of(client: httpx.Client, job_id: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    job = wait_job(client, job_id)
    log = client.get(f"/api/v1/jobs/{job_id}/logs").text
    lines = [ln for ln in log.splitlines() if ln.startswith(MARK)]
    found = json.loads(lines[-1][len(MARK) :]) if lines else {}
    return job, found, log


def test_a_job_has_no_privilege_and_sees_no_secret(secserver: SecServer, datasets: Path) -> None:
    data_dir = secserver.data_dir
    bob_file = next(p for p in datasets.rglob("*") if p.is_file())
    secrets = {
        "shadow": "/etc/shadow",
        "gshadow": "/etc/gshadow",
        "root_profile": "/root/.profile",
        "root_bashrc": "/root/.bashrc",
        "database": str(data_dir / "mlaas4hep.db"),
        "bob_dataset": str(bob_file),
        **{f"key_{p.name}": str(p) for p in (data_dir / "auth").glob("*")},
    }
    header = f"SECRETS = {secrets!r}\nDATA_DIR = {str(data_dir)!r}\n"
    with secserver.client("alice") as client:
        job_id = submit(client, header + textwrap.dedent(PROBES))
        job, found, log = result_of(client, job_id)
    assert found, (job["reason"], log[-3000:])
    zero = "0000000000000000"
    assert (found["CapEff"], found["CapPrm"], found["CapBnd"]) == (zero, zero, zero), found
    assert (found["CapInh"], found["CapAmb"]) == (zero, zero), found
    assert found["NoNewPrivs"] == "1"
    assert found["Seccomp"] == "2"
    assert found["Uid"].split()[0] != "0"
    refused = [k for k, v in found.items() if isinstance(v, str) and v.startswith("refused")]
    allowed = [k for k, v in found.items() if isinstance(v, str) and v.startswith("ALLOWED")]
    assert allowed == ["tmp_writable"], found
    for probe in (
        "mknod_block", "mknod_char", "mount_tmpfs", "mount_proc", "unshare_user",
        "unshare_mount", "unshare_cmd", "ptrace_attach", "syslog_read", "dmesg", "kmsg",
        "proc_sys_hostname", "proc_sys_drop_caches", "proc_sysrq",
    ):  # fmt: skip
        assert probe in refused, (probe, found)
    assert all(f"read_{name}" in refused for name in secrets), found
    # Of /root only the path to the Python installation exists; of the data dir only
    # alice's datasets and this job.
    assert set(found["ls_root"]) <= {".pyenv"}, found["ls_root"]
    assert set(found["ls_data_dir"]) == {"datasets", "jobs"}, found["ls_data_dir"]
    assert found["ls_datasets"] == [user_dir(secserver, "alice").name], found
    assert found["ls_jobs"] == [job_id], found
    assert secserver.healthy()
    assert_no_leak(secserver, json.dumps(job), log)


def test_fork_bomb_and_memory_hog_are_stopped_by_the_limits(
    secserver: SecServer, datasets: Path
) -> None:
    with secserver.client("alice") as client:
        bomb = submit(client, FORK_BOMB)
        hog = submit(client, MEMORY_HOG)
        bomb_job, _, bomb_log = result_of(client, bomb)
        hog_job, _, hog_log = result_of(client, hog)
        assert bomb_job["state"] == "failed", bomb_job
        assert "process limit 1024 exceeded" in bomb_job["reason"], (bomb_job, bomb_log[-2000:])
        assert hog_job["state"] == "failed", hog_job
        assert "memory limit 4 GiB exceeded" in hog_job["reason"], (hog_job, hog_log[-2000:])
        assert client.get("/readyz").status_code == 200
    assert secserver.healthy()
    assert not list(Path("/sys/fs/cgroup/pids/mlaas4hep").glob(f"job-{bomb}-*"))
    assert_no_leak(secserver, json.dumps(bomb_job), json.dumps(hog_job), bomb_log, hog_log)
