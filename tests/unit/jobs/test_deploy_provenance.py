"""A job's ``deploy:`` records the version's provenance (source job, owner, time) with
the version (serve/registry.py ``version.json``)."""

from __future__ import annotations

from pathlib import Path

from test_deploy_rights import ALICE, _job, _result

from mlaas4hep.config import Settings
from mlaas4hep.jobs.deploy import model_repository, publish


def test_a_job_publish_records_the_source_job(tmp_path: Path) -> None:
    settings = Settings.model_validate({"data_dir": str(tmp_path / "data")})
    job = _job(ALICE, "m")
    assert publish(settings, job, _result(settings)) == ("m", 1)
    record = model_repository(settings).record("m", 1)
    assert record is not None
    assert (record.source, record.source_job, record.owner) == ("job", job.id, ALICE.key)
    assert record.created > 0
