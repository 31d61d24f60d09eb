"""Publishing a succeeded job's model (``deploy: {name: ...}``) into the model repository.

The executor publishes *before* it records the job as succeeded: a crash in between makes
the job run again and publish a second version, never a succeeded job whose model is
missing. The inference service picks the new version up on its next repository poll.

Rights are checked twice (``docs/inference.md``, "Ownership"): at submission
(:func:`check_deploy_rights`: the ``storage.create`` scope, and for an existing model the
``storage.modify`` scope and modify rights on its owner record) and again at publish time,
when the name may have been claimed by someone else meanwhile: a job publishes only into
a name that is unclaimed (its submitter becomes the owner) or owned by its submitter. The
job's output directory is read as hostile (``serve/intake.py``: no links, allow-listed
regular files, size caps; ``serve/onnx_check.py``: no external data).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from mlaas4hep.auth.policy import model_scope, require_scope
from mlaas4hep.auth.principal import Principal
from mlaas4hep.config import Settings
from mlaas4hep.errors import PermissionDenied, SpecError
from mlaas4hep.jobs.records import JobRecord
from mlaas4hep.jobs.service import deployed_model

if TYPE_CHECKING:
    from mlaas4hep.serve.repository import ModelRepository


def check_deploy_rights(settings: Settings, caller: Principal, name: str) -> None:
    """Refuse (PermissionDenied, a 403) unless *caller* may publish a version of *name*.

    Called by the submission policy for a spec with ``deploy: {name: NAME}``: the model
    does not exist yet (``storage.create:/models/NAME``), or it does and *caller* may
    modify it (``storage.modify:/models/NAME`` and its owner record: the owner, a group
    shared ``modify``, the admin group). The publish step checks again.
    """
    from mlaas4hep.serve.ownership import ModelOwners, denied_message
    from mlaas4hep.serve.repository import check_model_name

    require_scope(caller, model_scope("create", name))
    record = ModelOwners(model_repository(settings).root).record(check_model_name(name))
    if record is None:
        return
    require_scope(caller, model_scope("modify", name))
    if not record.allows(caller, "modify"):
        raise PermissionDenied(denied_message(name, "modify", record))


def publish(settings: Settings, job: JobRecord, result_dir: Path) -> tuple[str, int] | None:
    """Publish *result_dir* as the next version of the job's model; ``(name, version)``.

    *result_dir* lies in the job's directory; nothing below ``<data_dir>/jobs`` may be a
    link. Raises PermissionDenied when the name belongs to someone else now, SpecError
    (UnsafeModelFiles) for a directory or model that cannot be published, Conflict or
    OSError otherwise; the caller fails the job with that.
    """
    name = deployed_model(json.loads(job.spec))
    if name is None:
        return None
    from mlaas4hep.serve.ownership import ModelOwners, denied_message
    from mlaas4hep.serve.registry import VersionRecord
    from mlaas4hep.serve.repository import check_model_name

    repository = model_repository(settings)
    owners = ModelOwners(repository.root)
    check_model_name(name)
    base = settings.data_dir / "jobs"
    try:
        rel = PurePath(result_dir.relative_to(base))
    except ValueError as exc:
        msg = f"the job's result directory is not under {str(base)!r}"
        raise SpecError(msg) from exc
    staged = repository.stage(base, rel)
    try:
        record = owners.record(name)
        if record is None:
            record = owners.claim(name, job.owner)
        # Only the submitter's key travels with the job (not its groups or admin role):
        # a job publishes into models its submitter owns, or claims a free name.
        if record.legacy or record.broken or record.owner != job.owner:
            raise PermissionDenied(denied_message(name, "modify", record))
        # The job's owner only travels as its key: the record's name is the model's owner's.
        source = VersionRecord("job", job.owner, record.owner_name, job.id)
        return name, repository.commit(name, staged, None, record.owner, source)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def model_repository(settings: Settings) -> ModelRepository:
    """The model repository of *settings* (inference settings over the data directory)."""
    from mlaas4hep.serve.repository import ModelRepository, VersionPolicy
    from mlaas4hep.serve.settings import InferenceSettings

    serving = InferenceSettings.from_mapping(settings.inference, settings.data_dir)
    return ModelRepository(
        serving.repository, VersionPolicy(latest=serving.default_latest_versions), serving.batching
    )
