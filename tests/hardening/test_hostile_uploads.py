"""Hostile uploads against a real service: refused with a 4xx and a clear message, and
nothing written outside the data directory (checked on the file system).

Three entry points take files from users: dataset uploads (``POST /api/v1/datasets``), job
submissions with files (multipart ``POST /api/v1/jobs``) and model uploads (TFaaS
``POST /upload``: a tarball or a multipart form). The service runs with small limits so that
"too large" is cheap to reach, and with its own ``TMPDIR``, which must be empty afterwards.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from hardening_servers import JOB_SCOPES, MODEL_SCOPES, Service, files_under

from mlaas4hep.data.samples import write_sample
from mlaas4hep.serve.samples import write_sample_model

MiB = 1 << 20
DATASET_LIMIT = 1 * MiB
UPLOAD_LIMIT = 2 * MiB
MEMBER_LIMIT = 1 * MiB
MEMBERS_LIMIT = 64
# Absolute targets an archive tries to write; they must not exist afterwards.
ESCAPE = f"mlaas4hep-escape-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    base = tmp_path_factory.mktemp("hostile")
    config = {
        "executor": {"workers": 0},
        "uploads": {"dataset_bytes": DATASET_LIMIT, "job_files_bytes": 256 * 1024},
        "inference": {
            "max_upload_bytes": UPLOAD_LIMIT,
            "max_archive_member_bytes": MEMBER_LIMIT,
            "max_archive_members": MEMBERS_LIMIT,
            "poll_interval_s": 0,
        },
    }
    srv = Service(base / "srv", config).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def outside(service: Service) -> Iterator[Path]:
    """The directory around the service's own: must hold nothing new when the tests end."""
    root = service.base.parent
    before = files_under(root) - _service_files(root, service)
    yield root
    after = files_under(root) - _service_files(root, service)
    assert after == before, f"written outside the data dir: {sorted(after - before)}"
    assert not any(Path("/tmp").glob(f"{ESCAPE}*"))
    assert not [p for p in files_under(service.base) if "escape" in p or "evil" in p]
    # ONNX Runtime keeps a 51-byte session id file (.ses) in TMPDIR; nothing else may stay.
    left = sorted(files_under(service.tmp_dir) - {".ses"})
    assert not left, left


def _service_files(root: Path, service: Service) -> set[str]:
    mine = service.base.relative_to(root).as_posix()
    return {p for p in files_under(root) if p == mine or p.startswith(mine + "/")}


@pytest.fixture
def api(service: Service, outside: Path) -> Iterator[httpx.Client]:
    headers = service.headers("mallory", JOB_SCOPES)
    with httpx.Client(base_url=service.url + "/api/v1", headers=headers, timeout=60) as client:
        yield client


@pytest.fixture
def models(service: Service, outside: Path) -> Iterator[httpx.Client]:
    headers = service.headers("mallory", MODEL_SCOPES)
    with httpx.Client(base_url=service.url, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def root_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("hostile-root") / "ok.root"
    return write_sample(path, "signal", 200, seed=2).read_bytes()


@pytest.fixture(scope="module")
def onnx_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    directory = write_sample_model(tmp_path_factory.mktemp("hostile-model") / "m", (4, 8, 1))
    return (directory / "model.onnx").read_bytes()


def refused(r: httpx.Response, *statuses: int) -> str:
    """Assert a 4xx among *statuses* with a readable message; return the message."""
    assert r.status_code in statuses, (r.status_code, r.text[:500])
    body = r.json()
    text = str(body.get("detail") or body.get("error") or "")
    assert len(text) > 15, body
    assert "Traceback" not in r.text
    return text


def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body without Content-Length (chunked transfer encoding)."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


# ---- datasets ----------------------------------------------------------------------------

BAD_NAMES = [
    "../escape.root",
    "../../../../tmp/" + ESCAPE,
    "/tmp/" + ESCAPE,
    "a/../../b.root",
    "sub/dir.root",
    "..",
    ".hidden.root",
    "back\\slash.root",
    "nul\x00.root",
    "new\nline.root",
    "x" * 129,
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=range(len(BAD_NAMES)))
def test_dataset_names_that_leave_the_directory_are_refused(
    api: httpx.Client, root_bytes: bytes, name: str
) -> None:
    text = refused(api.post("/datasets", params={"name": name}, content=root_bytes), 422)
    assert "name" in text


def test_dataset_over_the_limit_is_refused_declared_or_streamed(
    api: httpx.Client, service: Service, figures
) -> None:
    big = b"root" + b"\0" * (DATASET_LIMIT + 1)
    declared = refused(api.post("/datasets", params={"name": "big.root"}, content=big), 413)
    streamed = refused(
        api.post("/datasets", params={"name": "big2.root"}, content=chunks(big)), 413
    )
    assert "limit" in declared
    assert "limit" in streamed
    _no_partial_datasets(service)
    figures.record("hostile_uploads", dataset_limit_bytes=DATASET_LIMIT)


def test_dataset_that_is_not_root_is_refused(api: httpx.Client, service: Service) -> None:
    for body in (b"", b"#!/bin/sh\nrm -rf /\n", b"\x7fELF" + b"\0" * 100):
        text = refused(api.post("/datasets", params={"name": "fake.root"}, content=body), 422)
        assert "ROOT" in text
    _no_partial_datasets(service)
    assert api.get("/datasets").json()["items"] == []


def _no_partial_datasets(service: Service) -> None:
    """Refused uploads leave at most the (empty) per-owner directory behind."""
    root = service.data_dir / "datasets"
    left = sorted(files_under(root))
    assert all((root / p).is_dir() and "/" not in p for p in left), left


def test_job_files_with_hostile_names_are_refused(api: httpx.Client) -> None:
    spec = b"name: x\ndata: {datasets: [{name: a, files: [a.root]}]}\n"
    for name in ("../evil.py", "/tmp/" + ESCAPE, "pipeline.yaml", ".bashrc", "a/b.py"):
        files = [("spec", ("p.yaml", spec, "application/yaml")), ("files", (name, b"x=1"))]
        r = api.post("/jobs", files=files)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        assert "Traceback" not in r.text
    too_big = [("spec", ("p.yaml", spec)), ("files", ("m.py", b"#" * (300 * 1024)))]
    refused(api.post("/jobs", files=too_big), 413)


# ---- model archives ----------------------------------------------------------------------


def tarball(members: list[tarfile.TarInfo | tuple[str, bytes]], compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w") as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def special(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def zeros_member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def bomb(members: int, member_size: int) -> bytes:
    """A gzip'ed tar of *members* files of zeros, built streaming (a few kB compressed)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as gz:
        for i in range(members):
            info = tarfile.TarInfo(f"m/z{i}.bin")
            info.size = member_size
            gz.write(info.tobuf(format=tarfile.GNU_FORMAT))
            block = b"\0" * MiB
            left = member_size
            while left:
                gz.write(block[: min(left, MiB)])
                left -= min(left, MiB)
            pad = (-member_size) % tarfile.BLOCKSIZE
            gz.write(b"\0" * pad)
        gz.write(b"\0" * tarfile.BLOCKSIZE * 2)
    return buf.getvalue()


def hostile_archives(onnx: bytes) -> dict[str, bytes]:
    ok = ("evil/model.onnx", onnx)
    return {
        "dotdot": tarball([ok, (f"evil/../../{ESCAPE}", b"x")]),
        "absolute": tarball([ok, (f"/tmp/{ESCAPE}", b"x")]),
        "symlink": tarball([special("evil/model.onnx", tarfile.SYMTYPE, "/etc/passwd")]),
        "symlink-dir": tarball([special("evil", tarfile.SYMTYPE, "/tmp"), ok]),
        "hardlink": tarball([ok, special("evil/metadata.json", tarfile.LNKTYPE, "/etc/passwd")]),
        "char-device": tarball([ok, special("evil/null", tarfile.CHRTYPE)]),
        "block-device": tarball([ok, special("evil/sda", tarfile.BLKTYPE)]),
        "fifo": tarball([ok, special("evil/pipe", tarfile.FIFOTYPE)]),
        "duplicate": tarball([ok, ok]),
        "backslash": tarball([ok, ("evil\\..\\..\\x", b"x")]),
        "member-bomb": bomb(1, MEMBER_LIMIT + 1),
        "total-bomb": bomb(MEMBERS_LIMIT - 1, MEMBER_LIMIT // 2 + 4096),
        "many-members": tarball([(f"m/{i}", b"") for i in range(MEMBERS_LIMIT + 1)]),
        "not-a-tar": gzip.compress(b"definitely not a tar archive" * 100),
        "garbage": bytes(range(256)) * 64,
        "no-model": tarball([("evil/readme.txt", b"hello")]),
        "broken-onnx": tarball([("evil/model.onnx", b"\x08\x07not onnx at all")]),
    }


def test_hostile_model_archives_are_refused(
    models: httpx.Client, service: Service, onnx_bytes: bytes, figures
) -> None:
    archives = hostile_archives(onnx_bytes)
    headers = {"Content-Type": "application/octet-stream"}
    sizes, statuses = {}, {}
    for label, body in archives.items():
        sizes[label] = len(body)
        r = models.post("/upload", content=body, headers=headers)
        statuses[label] = f"{r.status_code} {refused(r, 400, 413, 422)[:110]}"
    assert not files_under(service.data_dir / "models"), files_under(service.data_dir / "models")
    assert models.get("/models").json() in (None, [])
    figures.record(
        "hostile_uploads",
        archives_refused=len(archives),
        archive_statuses=statuses,
        bomb_expansion_bytes={
            "member-bomb": MEMBER_LIMIT + 1,
            "total-bomb": (MEMBERS_LIMIT - 1) * (MEMBER_LIMIT // 2 + 4096),
        },
        bomb_compressed_bytes={k: sizes[k] for k in ("member-bomb", "total-bomb")},
    )


def test_model_upload_over_the_limit_is_refused(models: httpx.Client, service: Service) -> None:
    big = np.random.default_rng(0).bytes(UPLOAD_LIMIT + MiB)
    headers = {"Content-Type": "application/octet-stream"}
    refused(models.post("/upload", content=big, headers=headers), 413)
    refused(models.post("/upload", content=chunks(big), headers=headers), 413)
    form = {"model": ("model.onnx", big)}
    refused(models.post("/upload", data={"name": "big"}, files=form), 413)
    # A multipart body without Content-Length must be capped while it is read, too.
    request = models.build_request("POST", "/upload", data={"name": "big"}, files=form)
    body = request.read()
    streamed = {"Content-Type": request.headers["Content-Type"]}
    refused(models.post("/upload", content=chunks(body), headers=streamed), 413)
    assert not files_under(service.data_dir / "models")


@pytest.mark.parametrize("name", ["../../evil", "/tmp/" + ESCAPE, "..", ".x", "a/b", "x" * 200])
def test_model_names_that_leave_the_repository_are_refused(
    models: httpx.Client, onnx_bytes: bytes, name: str
) -> None:
    r = models.post("/upload", data={"name": name}, files={"model": ("model.onnx", onnx_bytes)})
    assert "name" in refused(r, 400, 422)
    r = models.post(
        "/upload",
        params={"name": name},
        content=tarball([("m/model.onnx", onnx_bytes)]),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert "name" in refused(r, 400, 422)


def test_a_good_upload_still_works_afterwards(models: httpx.Client, onnx_bytes: bytes) -> None:
    r = models.post(
        "/upload",
        content=tarball([("fine/model.onnx", onnx_bytes)]),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "fine"
    answer = models.post("/json", json={"model": "fine", "values": [1.0, 2.0, 3.0, 4.0]})
    assert answer.status_code == 200, answer.text
    r = models.request("DELETE", "/delete", params={"model": "fine"})
    assert r.status_code == 200, r.text
