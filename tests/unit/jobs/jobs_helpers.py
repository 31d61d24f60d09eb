"""Helpers shared by the job tests (unit and integration): the fake job and its settings."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mlaas4hep.config import Settings

FAKE_JOB = Path(__file__).with_name("fake_job.py")


def fake_settings(tmp_path: Path, **executor: Any) -> Settings:
    """Settings running the fake job, with fast timings for tests."""
    ex = {
        "workers": 1,
        "job_command": [sys.executable, str(FAKE_JOB)],
        "lease_s": 2.0,
        "heartbeat_s": 0.2,
        "poll_s": 0.05,
        "cancel_grace_s": 1.0,
        "sandbox_ro_paths": [str(FAKE_JOB.parent)],
        **executor,
    }
    return Settings.model_validate(
        {"data_dir": str(tmp_path / "data"), "executor": ex, "limits": {"wall_clock_s": 30}}
    )


def permissive(doc: dict[str, Any]) -> dict[str, Any]:
    """A spec validator for the fake job: any mapping with a name."""
    return {"name": "fake", **doc}


def pipeline_doc(name: str = "fake", **fake: Any) -> dict[str, Any]:
    """A valid pipeline spec whose description tells the fake job what to do."""
    import json

    return {
        "name": name,
        "description": "fake: " + json.dumps(fake),
        "data": {
            "tree": "Events",
            "datasets": [
                {"name": "sig", "files": ["/nonexistent/sig.root"], "label": 1},
                {"name": "bkg", "files": ["/nonexistent/bkg.root"], "label": 0},
            ],
        },
        "preprocess": {"features": {"scalars": ["MET_pt"]}},
    }


def submit_as(
    service: Any, owner: str, doc: dict[str, Any], files: Any = (), key: str | None = None
) -> Any:
    """Submit *doc* through the one submission policy as a local user named *owner*.

    The caller holds compute.create and storage.read:/; the job is filed under *owner*
    (the tests' plain owner keys) instead of the principal's ``issuer#subject``.
    """
    from mlaas4hep.auth.principal import Principal
    from mlaas4hep.jobs.policy import as_owner, authorize

    scopes = frozenset({"compute.create", "storage.read:/", "storage.create:/models"})
    caller = Principal("https://tests.invalid", owner, scopes=scopes)
    return service.submit(as_owner(authorize(service, caller, doc, files), owner), key)
