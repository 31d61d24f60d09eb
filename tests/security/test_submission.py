"""Issue 15, items 6, 7 and 8 (parts): what a submission may read, publish and ask for.

Every attack is replayed against the real service (``secserver``: real issuer tokens, the
real job command in the real sandbox): each spelling of a remote input needs its
``storage.read`` scope and gets the network; a file list is opened at submission from the
job's own files and every line checked; ``dataset:NAME`` is the caller's own; a file's
content never reaches a refusal or a failure reason; a bad expression is a 422 with a
caret at submission; the UI form checks deploy rights like the API.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from security_server import SecServer, assert_no_leak, wait_job

from mlaas4hep.api.ui.session import CSRF_COOKIE
from mlaas4hep.config import Settings
from mlaas4hep.data.samples import write_sample
from mlaas4hep.jobs.store import JobStore

JOBS = "/api/v1/jobs"
PASSWD_LINE = Path("/etc/passwd").read_text().splitlines()[0]
PASSWD_PARTS = [p for p in PASSWD_LINE.split(":") if len(p) > 3] + [PASSWD_LINE[:12]]
RESTRICTED = ("compute.create", "compute.read", "compute.cancel", "compute.modify")


def spec(*files: str, **extra: object) -> dict[str, object]:
    """A real pipeline spec reading *files* (both classes, so labels are valid)."""
    return {
        "name": "submission-attack",
        "data": {
            "tree": "Events",
            "datasets": [
                {"name": "sig", "files": list(files), "label": 1},
                {"name": "bkg", "files": list(files), "label": 0},
            ],
        },
        "preprocess": {"features": {"scalars": ["MET_pt"]}},
        "train": {"epochs": 1},
        **extra,
    }


def restricted(server: SecServer, user: str, *storage: str) -> httpx.Client:
    """*user* with the compute scopes and only the given storage scopes."""
    headers = server.headers(user, scopes=(*RESTRICTED, *storage))
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def needs_network(server: SecServer, job_id: str) -> bool:
    """The sandbox's network decision, as the executor reads it from the job store."""
    store = JobStore(Settings.model_validate({"data_dir": str(server.data_dir)}).db_url)
    try:
        return store.get(job_id, None).needs_network
    finally:
        store.close()


def cancel(client: httpx.Client, job_id: str) -> None:
    client.post(f"{JOBS}/{job_id}/cancel")


@pytest.mark.parametrize(
    "url",
    ["xroot://127.0.0.1:9//store/bob/x.root", "ROOT://127.0.0.1:9//store/bob/x.root",
     "HTTPS://127.0.0.1:9/store/bob/x.root", " root://127.0.0.1:9//store/bob/x.root"],
)  # fmt: skip
def test_every_remote_spelling_needs_the_scope_and_gets_the_network(
    secserver: SecServer, url: str
) -> None:
    with restricted(secserver, "alice", "storage.read:/store/alice") as alice:
        refused = alice.post(JOBS, json=spec(url))
    assert refused.status_code == 403, refused.text
    assert "storage.read:/store/bob/x.root" in refused.json()["detail"]
    with restricted(secserver, "alice", "storage.read:/store/bob") as alice:
        accepted = alice.post(JOBS, json=spec(url))
        assert accepted.status_code == 201, accepted.text
        job_id = accepted.json()["id"]
        cancel(alice, job_id)
    assert needs_network(secserver, job_id)
    assert_no_leak(secserver, refused.text, accepted.text)
    assert secserver.healthy()


def test_a_proxy_setting_alone_opens_no_network(secserver: SecServer) -> None:
    # the red team's way to the host network with only compute scopes: local inputs plus
    # a user-chosen xrootd_proxy / redirector
    with restricted(secserver, "alice", "storage.read:/data/alice") as alice:
        doc = spec("/data/alice/a.root")
        doc["data"]["xrootd_proxy"] = "root://127.0.0.1:1"  # type: ignore[index]
        doc["data"]["redirector"] = "root://127.0.0.1:1/"  # type: ignore[index]
        r = alice.post(JOBS, json=doc)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        cancel(alice, job_id)
    assert not needs_network(secserver, job_id)
    assert secserver.healthy()


def test_a_file_list_is_opened_at_submission_and_each_line_checked(secserver: SecServer) -> None:
    listing = b"/data/alice/a.root\n# bob's, hidden in alice's own list:\n/data/bob/secret.root\n"
    files = {"spec": ("p.json", httpx.Request("POST", "/", json=spec("@files.txt")).content)}
    with restricted(secserver, "alice", "storage.read:/data/alice") as alice:
        r = alice.post(JOBS, files=[*files.items(), ("files", ("files.txt", listing))])
        assert r.status_code == 403, r.text
        assert "storage.read:/data/bob/secret.root" in r.json()["detail"]
        # a list that is not among the job's own files is never opened on the server
        r = alice.post(JOBS, json=spec("@/data/bob/list.txt"))
        assert r.status_code == 422, r.text
        assert "not among the files sent with the job" in r.json()["detail"]
    assert_no_leak(secserver, r.text)
    assert secserver.healthy()


def test_a_list_naming_etc_passwd_never_shows_its_content(secserver: SecServer) -> None:
    with secserver.client("alice") as alice:
        r = alice.post(JOBS, json=spec("@/etc/passwd"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    for part in PASSWD_PARTS:
        assert part not in r.text
    assert_no_leak(secserver, r.text)
    assert secserver.healthy()


def test_a_job_reading_etc_passwd_fails_without_its_content(secserver: SecServer) -> None:
    with secserver.client("alice") as alice:
        r = alice.post(JOBS, json=spec("/etc/passwd"))
        assert r.status_code == 201, r.text  # storage.read:/ allows the path; it is no ROOT
        job = wait_job(alice, r.json()["id"], timeout=120)
        log = alice.get(f"{JOBS}/{job['id']}/logs").text
    assert job["state"] == "failed"
    for part in PASSWD_PARTS:
        assert part not in (job["reason"] or "")
        assert part not in log
    assert_no_leak(secserver, job["reason"] or "", log)
    assert secserver.healthy()


def test_dataset_names_are_per_owner_no_squatting(secserver: SecServer, tmp_path: Path) -> None:
    data = write_sample(tmp_path / "s.root", "signal", 200, seed=3).read_bytes()
    with secserver.client("bob") as bob, secserver.client("alice") as alice:
        # bob takes the name first (the squat), then alice uploads hers
        squat = bob.post("/api/v1/datasets", params={"name": "shared.root"}, content=data)
        assert squat.status_code == 201, squat.text
        mine = alice.post("/api/v1/datasets", params={"name": "shared.root"}, content=data)
        assert mine.status_code == 201, mine.text
        r = alice.post(JOBS, json=spec("dataset:shared.root"))
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        cancel(alice, job_id)
    store = JobStore(Settings.model_validate({"data_dir": str(secserver.data_dir)}).db_url)
    try:
        stored = store.get(job_id, None).spec
    finally:
        store.close()
    assert mine.json()["id"] in stored
    assert squat.json()["id"] not in stored
    assert_no_leak(secserver, r.text)
    assert secserver.healthy()


def test_a_bad_expression_is_a_422_with_a_caret_at_submission(secserver: SecServer) -> None:
    bad = spec("/data/x.root")
    bad["preprocess"] = {"features": {"scalars": ["MET_pt"]}, "cuts": ["MET_pt >> 20"]}
    with secserver.client("alice") as alice:
        r = alice.post(JOBS, json=bad)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    detail = r.json()["detail"]
    assert "preprocess.cuts[0]" in detail
    assert "^" in detail
    assert_no_leak(secserver, r.text)
    assert secserver.healthy()


def test_a_branch_missing_from_an_uploaded_dataset_is_named_at_submission(
    secserver: SecServer, tmp_path: Path
) -> None:
    data = write_sample(tmp_path / "b.root", "background", 200, seed=4).read_bytes()
    with secserver.client("alice") as alice:
        up = alice.post("/api/v1/datasets", params={"name": "typo.root"}, content=data)
        assert up.status_code == 201, up.text
        typo = spec("dataset:typo.root")
        typo["preprocess"] = {"features": {"scalars": ["MET_ptt"]}}
        r = alice.post(JOBS, json=typo)
    assert r.status_code == 422, r.text
    assert "'MET_ptt'" in r.json()["detail"]
    assert "closest: 'MET_pt'" in r.json()["detail"]
    assert secserver.healthy()


def test_the_ui_form_refuses_deploy_to_a_model_alice_may_not_modify(
    secserver: SecServer,
) -> None:
    from mlaas4hep.auth.local_issuer import LOCAL_ISSUER
    from mlaas4hep.serve.ownership import ModelOwners

    # bob owns the model (as if he had published it first)
    ModelOwners(secserver.data_dir / "models").claim("bobs-model", f"{LOCAL_ISSUER}#bob", "bob")
    doc = {**spec("/data/x.root", deploy={"name": "bobs-model"}), "name": "ui-deploy-attack"}
    text = httpx.Request("POST", "/", json=doc).content.decode()
    with secserver.client("alice") as alice:
        alice.cookies.set(CSRF_COOKIE, "t0k3n")
        form = alice.post("/ui/submit", data={"csrf_token": "t0k3n", "spec": text})
        api = alice.post(JOBS, json=doc)
        jobs = alice.get(JOBS).json()["items"]
    assert form.status_code == 403, form.text[:500]
    assert "belongs to another user" in form.text  # the refusal, shown as a form error
    assert api.status_code == 403, api.text  # the same policy on both doors
    assert not [j for j in jobs if j["name"] == "ui-deploy-attack"]
    assert_no_leak(secserver, form.text, api.text)
    assert secserver.healthy()
