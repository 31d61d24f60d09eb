"""``mlaas4hep submit`` with local files, against a real ``mlaas4hep serve`` (the real job
command in the bwrap sandbox): local inputs are uploaded as the user's datasets
(content-addressed, deduplicated, resumable) and the job reads them as ``dataset:NAME``.

Each attack on the upload protocol is a test: a dropped connection resumes, a tampered
resume is refused, another user's uploads are invisible, oversize and non-ROOT bodies get
typed errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
from security_server import SecServer

from mlaas4hep.config import MLAAS4HEP_ARGV

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).parents[2] / "examples" / "tth-vs-qcd.yaml"
LIMIT = 400_000  # uploads.dataset_bytes of the test service
API = "/api/v1/datasets"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecServer]:
    base = tmp_path_factory.mktemp("uploads")
    env = {"MLAAS4HEP_UPLOADS__DATASET_BYTES": str(LIMIT)}
    server = SecServer(base / "srv", workers=1, extra_env=env)
    server.data_dir.mkdir(parents=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("samples") / "data"
    argv = [*MLAAS4HEP_ARGV, "sample-data", str(out), "--events", "400"]
    subprocess.run(argv, check=True, timeout=300, capture_output=True)
    return out


def cli(srv: SecServer, user: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS4HEP_")}
    env |= {"MLAAS4HEP_URL": srv.url, "MLAAS4HEP_TOKEN": srv.headers(user)["Authorization"][7:]}
    env["MLAAS4HEP_CLIENT_CONFIG"] = str(cwd / "no-client-config.yaml")
    return subprocess.run(
        [*MLAAS4HEP_ARGV, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=400
    )


def puts(srv: SecServer) -> int:
    """Upload requests the service has answered (its access log)."""
    return srv.log_text().count(f'"PUT {API}/uploads/')


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def interrupt(srv: SecServer, user: str, data: bytes, name: str, cut: int) -> None:
    """Start an upload of *data*, send *cut* bytes, then drop the connection."""
    query = f"name={name}&size={len(data)}&offset=0"
    head = (
        f"PUT {API}/uploads/{sha(data)}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"{'Authorization: ' + srv.headers(user)['Authorization']}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(head.encode() + data[:cut])
        time.sleep(0.3)
    with srv.client(user) as c:  # the service keeps what arrived
        deadline = time.monotonic() + 20
        while True:
            r = c.get(f"{API}/uploads/{sha(data)}")
            if r.status_code == 200 and r.json()["received"] == cut:
                return
            assert time.monotonic() < deadline, r.text
            time.sleep(0.1)


def _spec(work: Path) -> Path:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["data"]["datasets"][0]["files"] = ["data/signal.root"]  # relative to the cwd
    spec["data"]["datasets"][1]["files"] = ["data/back*.root"]  # a glob
    spec["train"].update(epochs=1, device="cpu")
    spec.pop("deploy", None)
    path = work / "specs" / "pipeline.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec))
    return path


def test_submit_uploads_local_files_and_the_job_succeeds(
    srv: SecServer, samples: Path, tmp_path: Path
) -> None:
    pytest.importorskip("torch", reason="the mlp trainer needs torch (make installs it)")
    (tmp_path / "data").symlink_to(samples)
    spec = _spec(tmp_path)
    before = puts(srv)
    done = cli(srv, "carol", "submit", str(spec.relative_to(tmp_path)), "--wait", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "uploaded as dataset:signal.root" in done.stderr
    assert "uploaded as dataset:background.root" in done.stderr
    assert "succeeded" in done.stdout
    assert puts(srv) == before + 2
    # Again: the same content is not sent twice (no upload request at all).
    again = cli(srv, "carol", "submit", str(spec), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already uploaded") == 2
    assert puts(srv) == before + 2
    listed = json.loads(cli(srv, "carol", "datasets", "list", "--json", cwd=tmp_path).stdout)
    assert sorted(d["name"] for d in listed["items"]) == ["background.root", "signal.root"]
    # A different file of the same name gets the name plus a hash prefix.
    other = tmp_path / "other" / "signal.root"
    other.parent.mkdir()
    other.write_bytes((samples / "background.root").read_bytes() + b"\0")
    up = cli(srv, "carol", "datasets", "upload", str(other), "--json", cwd=tmp_path)
    assert json.loads(up.stdout)["dataset"]["name"] == f"signal-{sha(other.read_bytes())[:8]}.root"


def test_an_interrupted_upload_resumes_and_sends_only_the_rest(
    srv: SecServer, samples: Path, tmp_path: Path
) -> None:
    data = (samples / "signal.root").read_bytes()
    cut = len(data) // 2
    interrupt(srv, "dave", data, "signal.root", cut)
    up = cli(
        srv, "dave", "datasets", "upload", str(samples / "signal.root"), "--json", cwd=tmp_path
    )
    assert up.returncode == 0, up.stderr
    result = json.loads(up.stdout)
    assert result["resumed_from"] == cut
    assert result["sent"] == len(data) - cut
    assert result["dataset"]["sha256"] == sha(data)
    with srv.client("dave") as c:
        assert c.get(f"{API}/uploads/{sha(data)}").status_code == 404  # no partial left


def test_a_tampered_resume_is_refused_and_discarded(
    srv: SecServer, samples: Path, tmp_path: Path
) -> None:
    data = (samples / "background.root").read_bytes()
    cut = len(data) // 2
    interrupt(srv, "erin", data, "background.root", cut)
    forged = data[:cut] + bytes(len(data) - cut)  # other bytes where the rest should be
    with srv.client("erin") as c:
        r = c.put(
            f"{API}/uploads/{sha(data)}",
            params={"name": "background.root", "size": len(data), "offset": cut},
            content=forged[cut:],
        )
        assert r.status_code == 422, r.text
        assert r.json()["type"].endswith("invalid-spec")
        assert "upload the file again" in r.json()["detail"]
        assert c.get(f"{API}/uploads/{sha(data)}").status_code == 404
        assert c.get(API).json()["items"] == []
        # a resume at an offset the service does not hold is refused with the right one
        interrupt(srv, "erin", data, "background.root", 1000)
        r = c.put(
            f"{API}/uploads/{sha(data)}",
            params={"name": "background.root", "size": len(data), "offset": 5},
            content=data[5:],
        )
        assert r.status_code == 409, r.text
        assert "resume at offset 1000" in r.json()["detail"]


def test_users_never_see_each_others_uploads(srv: SecServer, samples: Path, tmp_path: Path) -> None:
    path = samples / "signal.root"
    data = path.read_bytes()
    bob = cli(
        srv, "bob", "datasets", "upload", str(path), "--name", "bobs.root", "--json", cwd=tmp_path
    )
    assert bob.returncode == 0, bob.stderr
    bobs = json.loads(bob.stdout)["dataset"]
    partial = (samples / "background.root").read_bytes()
    interrupt(srv, "bob", partial, "bg.root", 2000)
    with srv.client("alice") as c:
        assert c.get(API, params={"sha256": sha(data)}).json()["items"] == []
        assert c.get(f"{API}/{bobs['id']}").status_code == 404
        assert c.delete(f"{API}/{bobs['id']}").status_code == 404
        assert c.get(f"{API}/uploads/{sha(partial)}").status_code == 404
        assert c.delete(f"{API}/uploads/{sha(partial)}").status_code == 404
        # continuing bob's partial upload: alice holds nothing of it
        r = c.put(
            f"{API}/uploads/{sha(partial)}",
            params={"name": "bg.root", "size": len(partial), "offset": 2000},
            content=partial[2000:],
        )
        assert r.status_code == 409, r.text
        assert "resume at offset 0" in r.json()["detail"]
        spec = yaml.safe_load(EXAMPLE.read_text())
        spec["data"]["datasets"][0]["files"] = ["dataset:bobs.root"]
        spec["data"]["datasets"][1]["files"] = [f"dataset:{bobs['id']}"]
        r = c.post("/api/v1/jobs", json=spec)
        assert r.status_code == 422, r.text
        assert "no dataset of that name" in r.json()["detail"]
    # alice's own copy of the same content is a full upload (no dedup across users)
    mine = cli(srv, "alice", "datasets", "upload", str(path), "--json", cwd=tmp_path)
    assert json.loads(mine.stdout)["sent"] == len(data)
    rm = cli(srv, "alice", "datasets", "rm", "bobs.root", cwd=tmp_path)
    assert rm.returncode == 2
    assert "no dataset 'bobs.root'" in rm.stderr
    with srv.client("bob") as c:
        assert [d["name"] for d in c.get(API).json()["items"]] == ["bobs.root"]
        assert c.get(f"{API}/uploads/{sha(partial)}").json()["received"] == 2000
        assert c.delete(f"{API}/uploads/{sha(partial)}").status_code == 204  # his own partial
        assert c.get(f"{API}/uploads/{sha(partial)}").status_code == 404


def test_too_big_and_non_root_uploads_get_typed_errors(srv: SecServer, tmp_path: Path) -> None:
    big = tmp_path / "big.root"
    big.write_bytes(b"root" + os.urandom(LIMIT))
    up = cli(srv, "frank", "datasets", "upload", str(big), cwd=tmp_path)
    assert up.returncode == 2
    assert "dataset limit" in up.stderr
    assert "Traceback" not in up.stderr
    text = tmp_path / "notes.root"
    text.write_bytes(b"just some text, no ROOT file\n" * 10)
    up = cli(srv, "frank", "datasets", "upload", str(text), cwd=tmp_path)
    assert up.returncode == 2
    assert "not a ROOT file" in up.stderr
    assert "Traceback" not in up.stderr
    with srv.client("frank") as c:
        data = big.read_bytes()
        r = c.put(
            f"{API}/uploads/{sha(data)}", params={"name": "b.root", "size": len(data)}, content=data
        )
        assert r.status_code == 413, r.text
        small = data[:1000]
        # declares 1000 bytes, sends more: refused before anything is kept
        r = c.put(
            f"{API}/uploads/{sha(small)}",
            params={"name": "b.root", "size": 1000},
            content=data[:5000],
        )
        assert r.status_code == 413, r.text
        junk = text.read_bytes()
        r = c.put(
            f"{API}/uploads/{sha(junk)}", params={"name": "n.root", "size": len(junk)}, content=junk
        )
        assert r.status_code == 422, r.text
        assert r.json()["type"].endswith("invalid-spec")
        r = c.get(f"{API}/uploads/{'../' * 10}etc")
        assert r.status_code in (404, 422)
        r = c.get(f"{API}/uploads/{'A' * 64}")
        assert r.status_code == 422
        assert c.get(API).json()["items"] == []
        for refused in (data, small, junk):  # nothing kept of a refused upload
            assert list((srv.data_dir / "uploads").rglob(f"{sha(refused)}.*")) == []


def test_a_local_path_is_refused_at_submission_with_the_remedy(srv: SecServer) -> None:
    spec = yaml.safe_load(EXAMPLE.read_text())  # data/signal.root: a path on the caller's machine
    with srv.client("gina") as c:
        r = c.post("/api/v1/jobs", json=spec)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "'data/signal.root' is a path on your machine" in detail
    assert "mlaas4hep datasets upload FILE" in detail
    assert "`mlaas4hep submit SPEC` uploads" in detail
