"""Issue 19's runs and model registry attacked by a hostile user of the shared service.

A job's output is the job's: ``metrics.json`` and ``plots/curves.json`` are written by user
code (``model.kind: python``) and reach the runs table, the compare view and the job page.
Run names and tags are typed by users and shown to admins. Attacks that need no route or
owner check run at the unit level (a real job store and service, a succeeded job whose
output the test writes as a hostile job would); the registry's routes and UI forms are
attacked over the shared real service (``secserver``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import pytest
from security_server import SecServer, assert_no_leak

from mlaas4hep.api.ui.routes_runs import json_for_script
from mlaas4hep.api.ui.session import CSRF_COOKIE
from mlaas4hep.errors import NotFound, SpecError
from mlaas4hep.jobs import progress as prog
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.layout import job_paths
from mlaas4hep.jobs.policy import as_owner, authorize
from mlaas4hep.jobs.records import JobRecord, RunLabels
from mlaas4hep.jobs.run_compare import MAX_CURVES, MAX_POINTS, compare, curves_of
from mlaas4hep.jobs.runs import MAX_METRICS, RunQuery, check_labels, list_runs, run_of
from mlaas4hep.jobs.service import JobService
from mlaas4hep.jobs.states import Exited
from mlaas4hep.jobs.store import JobStore
from mlaas4hep.serve.model_registry import MAX_POLICY_VERSIONS, check_policy
from mlaas4hep.serve.registry import MAX_ALIASES, AliasTable, parse_version
from mlaas4hep.serve.repository import VersionPolicy
from mlaas4hep.serve.samples import write_sample_model

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "jobs"))
from jobs_helpers import fake_settings, permissive, submit_as

# ---- runs: a job's output is hostile ---------------------------------------------------


@pytest.fixture
def service(tmp_path: Path) -> JobService:
    settings = fake_settings(tmp_path)
    store = JobStore(settings.db_url)
    return JobService(store, DatasetStore(store, settings), settings, permissive)


def _succeeded(service: JobService, owner: str, files: dict[str, str | bytes]) -> JobRecord:
    """A succeeded job of *owner* whose output holds *files* (as a hostile job left them)."""
    job, _ = submit_as(service, owner, {"name": "x"})
    claimed = service.store.claim("w", lease_s=3600)
    assert claimed is not None
    assert claimed.id == job.id
    out = job_paths(service.settings.data_dir, job.id).committed(1)
    (out / "plots").mkdir(parents=True)
    for name, content in files.items():
        path = out / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    service.store.finish(job.id, "w", 1, Exited(True), out.name)
    return service.get(job.id, owner)


_METRICS = json.dumps({"test": {"auc": 0.9, "loss": 0.3}})


@pytest.mark.parametrize(
    "text",
    [
        "\u202egnp.exe",  # right-to-left override: the name reads reversed
        "a\u2028b",  # line separator
        "a\x85b",  # C1 control (next line)
        "\ufeffrun",  # zero-width no-break space
        "a\u200bb",  # zero-width space
    ],
)
def test_run_names_and_tags_refuse_unicode_controls(text: str) -> None:
    with pytest.raises(SpecError, match=r"control characters \(U\+"):
        check_labels(text, [])
    with pytest.raises(SpecError, match="control characters"):
        check_labels("ok", [f"k={text}"])


def test_a_tag_key_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(SpecError, match="tag key"):
        check_labels("ok", {"sample\n": "ttbar"})


def test_a_hostile_metrics_json_brings_a_bounded_set_of_metrics(service: JobService) -> None:
    test = {f"m{i}": 0.5 for i in range(100_000)}
    test = {"auc": 0.9, "a\u202eb": 1.0, "x" * 65: 2.0, "nan": "NaN", **test}
    job = _succeeded(service, "alice", {"metrics.json": json.dumps({"test": test})})
    run = run_of(service, job)
    assert len(run.metrics) == MAX_METRICS
    assert run.metrics["auc"] == 0.9
    assert all(k.isprintable() and len(k) <= 64 for k in run.metrics)


def test_hostile_curves_are_cleaned_before_any_page(service: JobService) -> None:
    hostile = {
        "roc": [
            {"class": "</script><img src=x onerror=alert(1)>", "split": "test\u2028x",
             "auc": "<b>", "eff_s": [0.0, 0.5, 1.0], "eff_b": [1.0, None, 0.01]},
            {"class": "giant", "split": "test", "eff_s": [0.5] * (MAX_POINTS + 1),
             "eff_b": [0.5] * (MAX_POINTS + 1)},
            {"class": "ragged", "split": "test", "eff_s": [0.1, 0.2], "eff_b": [0.1]},
            {"class": "typed", "split": "test", "eff_s": "abc", "eff_b": {"a": 1}},
            *[{"class": f"c{i}", "eff_s": [0.5], "eff_b": [0.5]} for i in range(100)],
        ],
        "scores": [{"class": "s", "edges": [0, 1], "density": [1, 2, 3]}, 7, "x"],
        "history": [
            {"epoch": 1.0, "val_loss": 0.5, "<img>": 1.0, "x\u202e": 2.0, "s": "</script>"},
            {"epoch": "</script>", "val_loss": 1.0},
            {"epoch": 2, **{f"k{i}": 1.0 for i in range(1000)}},
        ],
    }  # fmt: skip
    files = {"metrics.json": _METRICS, "plots/curves.json": json.dumps(hostile)}
    job = _succeeded(service, "alice", files)
    curves = curves_of(service, run_of(service, job))
    assert len(curves["roc"]) == MAX_CURVES - 3  # the first MAX_CURVES, 3 malformed
    first = curves["roc"][0]
    assert first["split"] == "testx"  # control characters dropped
    assert first["auc"] is None
    assert first["eff_b"] == [1.0, None, 0.01]
    assert [c["class"] for c in curves["roc"][1:3]] == ["c0", "c1"]  # bad ones dropped
    assert curves["scores"] == []
    assert [h["epoch"] for h in curves["history"]] == [1, 2]
    assert curves["history"][0] == {"epoch": 1, "val_loss": 0.5, "<img>": 1.0}
    assert len(curves["history"][1]) <= 33
    # Embedded in the page's <script type="application/json">: nothing closes the element
    embedded = str(json_for_script({"names": ["</script><!--"], "curves": [curves]}))
    assert "<" not in embedded
    assert ">" not in embedded
    assert "&" not in embedded
    assert json.loads(embedded)["names"] == ["</script><!--"]
    assert len(embedded) < 200_000


def test_invalid_or_non_finite_curves_read_as_none(service: JobService) -> None:
    for text in ('{"roc": [NaN]}', '{"roc": [1e999]}', "[" * 5000, r'{"roc": "\ud800"}'):
        files = {"metrics.json": _METRICS, "plots/curves.json": text}
        job = _succeeded(service, "alice", files)
        curves = curves_of(service, run_of(service, job))
        assert curves == {"roc": [], "scores": [], "history": []}, text
        json_for_script(curves)  # never a 500 on the page (allow_nan=False)


def test_curves_linked_to_another_users_files_are_not_read(service: JobService) -> None:
    secret = {"roc": [{"class": "bob-secret", "split": "test", "eff_s": [1], "eff_b": [1]}]}
    bob = _succeeded(
        service, "bob", {"metrics.json": _METRICS, "plots/curves.json": json.dumps(secret)}
    )
    bobs = job_paths(service.settings.data_dir, bob.id).committed(1)
    alice = _succeeded(service, "alice", {"metrics.json": _METRICS})
    mine = job_paths(service.settings.data_dir, alice.id).committed(1)
    (mine / "plots").rmdir()
    os.symlink(bobs / "plots", mine / "plots")  # a linked directory
    assert curves_of(service, run_of(service, alice))["roc"] == []
    (mine / "plots").unlink()
    (mine / "plots").mkdir()
    os.symlink(bobs / "plots" / "curves.json", mine / "plots" / "curves.json")  # a linked file
    assert curves_of(service, run_of(service, alice))["roc"] == []


def test_hostile_queries_and_parents_stay_within_the_callers_runs(service: JobService) -> None:
    mine = _succeeded(service, "alice", {"metrics.json": _METRICS})
    bobs = _succeeded(service, "bob", {"metrics.json": _METRICS})
    for sort in ("metric:__class__", "param:' OR 1=1 --", "metric:auc", "param:model.kind"):
        runs = list_runs(service, "alice", RunQuery(search="%' OR '1'='1", sort=sort))
        assert runs == []
        assert [r.job.id for r in list_runs(service, "alice", RunQuery(sort=sort))] == [mine.id]
    with pytest.raises(SpecError, match="unknown sort"):
        list_runs(service, "alice", RunQuery(sort="created; DROP TABLE jobs"))
    assert list_runs(service, "alice", RunQuery(parent=bobs.id)) == []
    with pytest.raises(NotFound):  # comparing with bob's run: as if it did not exist
        compare(service, "alice", [mine.id, bobs.id])
    scopes = frozenset({"compute.create", "storage.read:/"})
    from mlaas4hep.auth.principal import Principal

    caller = Principal("https://tests.invalid", "alice", scopes=scopes)
    submission = as_owner(authorize(service, caller, {"name": "x"}, ()), "alice")
    with pytest.raises(NotFound):  # a parent among bob's jobs
        service.submit(submission, labels=RunLabels("r", {}, bobs.id))


def test_a_job_cannot_grow_its_progress_history_with_new_names() -> None:
    p = None
    for epoch in range(1, prog.MAX_HISTORY + 1):
        names = {f"e{epoch}m{i}": 1.0 for i in range(32)}
        p = prog.merge(p, {"phase": "validate", "epoch": epoch, "metrics": names})
    assert p is not None
    names = {k for h in p["history"] for k in h} - {"epoch"}
    assert len(names) <= 64  # the names progress keeps, not 32 new ones per epoch
    assert len(json.dumps(p)) < 300_000


# ---- model registry: units -------------------------------------------------------------


def test_a_model_has_a_bounded_number_of_aliases() -> None:
    table = AliasTable()
    for i in range(MAX_ALIASES):
        table = table.promote(f"a{i}", i + 1)
    table = table.promote("a0", 99)  # moving an existing alias is fine
    with pytest.raises(SpecError, match=f"{MAX_ALIASES} aliases"):
        table.promote("one-more", 1)


@pytest.mark.parametrize("text", ["\u00b2", "\u0661", "9" * 5000, "-1", "0", "1e3", "", "3.0"])
def test_versions_are_ascii_positive_numbers(text: str) -> None:
    with pytest.raises(SpecError, match="version"):
        parse_version(text)
    assert parse_version(" 12 ") == 12


@pytest.mark.parametrize(
    ("policy", "needle"),
    [
        ("all", "at most"),
        (f"latest:{MAX_POLICY_VERSIONS + 1}", "at most"),
        ("versions:" + ",".join(str(v) for v in range(1, 40)), "at most"),
        ("versions:999", "unload them all"),
    ],
)
def test_policies_that_load_too_much_or_nothing_are_refused(policy: str, needle: str) -> None:
    on_disk = list(range(1, 31))
    with pytest.raises(SpecError, match=needle):
        check_policy("m", VersionPolicy.parse(policy), on_disk)
    check_policy("m", VersionPolicy.parse("latest:2"), on_disk)
    check_policy("m", VersionPolicy.parse("all"), on_disk[:3])


# ---- model registry: the real service ----------------------------------------------------

CSRF = "registry-csrf-token"
MODEL = "alice-reg"


@pytest.fixture(scope="module")
def alices_versions(secserver: SecServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Alice's model with versions 1 and 2 (uploaded twice)."""
    with secserver.client("alice") as alice:
        for seed in (3, 4):
            src = write_sample_model(tmp_path_factory.mktemp("reg") / "m", (4, 8, 1), seed=seed)
            files = {
                "model": ("model.onnx", (src / "model.onnx").read_bytes()),
                "metadata": ("metadata.json", (src / "metadata.json").read_bytes()),
            }
            r = alice.post("/upload", data={"name": MODEL}, files=files)
            assert r.status_code == 201, r.text
    return MODEL


def _ui(server: SecServer, user: str) -> httpx.Client:
    client = server.client(user)
    client.cookies.set(CSRF_COOKIE, CSRF)
    client.follow_redirects = False
    return client


def test_registry_routes_answer_hostile_values_with_4xx(
    secserver: SecServer, alices_versions: str
) -> None:
    base = f"/v2/repository/models/{alices_versions}"
    seen: list[str] = []
    with secserver.client("alice") as alice:
        for version in ("\u00b2", "9" * 4000, 10**40, True, None, [1]):
            r = alice.put(f"{base}/aliases/production", json={"version": version})
            seen.append(r.text)
            assert r.status_code == 400, (version, r.status_code, r.text)
            assert "positive version number" in r.json()["error"]
        for alias in ("latest", "x" * 65, "..%2F..%2Fowner.json", "PROD"):
            r = alice.put(f"{base}/aliases/{alias}", json={"version": 1})
            seen.append(r.text)
            assert r.status_code in (404, 422), (alias, r.status_code, r.text)
        r = alice.put(f"{base}/aliases/production", json={"version": 7})
        assert r.status_code == 404
        assert "no version 7" in r.json()["error"]
        r = alice.post(f"{base}/aliases/production/rollback")  # no such alias yet
        assert r.status_code == 404, r.text
        assert alice.put(f"{base}/aliases/production", json={"version": 1}).status_code == 200
        r = alice.post(f"{base}/aliases/production/rollback")  # no earlier version
        assert r.status_code == 422, r.text
        assert "no earlier version" in r.json()["error"]
        for policy in ("versions:999", f"latest:{MAX_POLICY_VERSIONS + 1}"):
            r = alice.put(f"{base}/policy", json={"policy": policy})
            seen.append(r.text)
            assert r.status_code == 422, (policy, r.text)
        view = alice.get(f"{base}/registry").json()
        assert view["aliases"] == {"production": 1}
        assert view["policy"] == "latest"
        r = alice.post(f"/v2/models/{alices_versions}@production/infer", json=_infer())
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "1"
        for ref in ("@", "@staging", "@..%2F..%2Fbob", "@production@x", "@" + "p" * 300):
            r = alice.post(f"/v2/models/{alices_versions}{ref}/infer", json=_infer())
            seen.append(r.text)
            assert 400 <= r.status_code < 500, (ref, r.status_code, r.text)
            r = alice.post("/json", json={"model": alices_versions + ref, "values": [1] * 4})
            seen.append(r.text)
            assert 400 <= r.status_code < 500, (ref, r.status_code, r.text)
    with secserver.client("bob") as bob:  # an alias is no way around the owner check
        r = bob.post(f"/v2/models/{alices_versions}@production/infer", json=_infer())
        assert r.status_code == 403, r.text
        r = bob.put(f"{base}/aliases/production", json={"version": 2})
        assert r.status_code == 403, r.text
    assert_no_leak(secserver, *seen)
    assert secserver.healthy()


def _infer() -> dict[str, object]:
    return {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32",
                        "data": [0.5, -1.0, 2.0, 0.25]}]}  # fmt: skip


def test_registry_forms_need_the_csrf_token_and_refuse_odd_versions(
    secserver: SecServer, alices_versions: str
) -> None:
    page = f"/ui/models/{alices_versions}"
    forms = {
        "promote": {"alias": "staging", "version": "2", "confirm": "yes"},
        "rollback": {"alias": "production", "confirm": "yes"},
        "policy": {"policy": "all"},
    }
    with _ui(secserver, "alice") as alice:
        for action, data in forms.items():
            r = alice.post(f"{page}/{action}", data=data)  # a cross-site post: no token
            assert r.status_code == 403, (action, r.status_code, r.text)
            r = alice.post(f"{page}/{action}", data={**data, "csrf_token": "forged"})
            assert r.status_code == 403, (action, r.status_code, r.text)
        for version in ("\u00b2", "9" * 5000):
            data = {"alias": "staging", "version": version, "csrf_token": CSRF}
            r = alice.post(f"{page}/promote", data=data)
            assert r.status_code == 422, (version, r.status_code, r.text[:300])
            assert "choose the version to promote" in r.text
        events = {
            "too big": "[" + "1," * 200_000 + "1]",
            "too deep": "[" * 500 + "]" * 500,
            "NaN": "[NaN, 1, 2, 3]",
            "infinite": "[1e999, 1, 2, 3]",
            "wrong length": "[1, 2, 3]",
            "not numbers": '["1", true, null, {}]',
            "unknown feature": '{"</b><script>x</script>": 1}',
        }
        for what, event in events.items():
            data = {"event": event, "value": ["0"] * 4, "csrf_token": CSRF}
            r = alice.post(f"{page}/predict", data=data)
            assert r.status_code == 422, (what, r.status_code, r.text[:300])
            assert "<script>x</script>" not in r.text
        registry = alice.get(f"/v2/repository/models/{alices_versions}/registry").json()
        assert "staging" not in registry["aliases"]
        assert registry["policy"] == "latest"
