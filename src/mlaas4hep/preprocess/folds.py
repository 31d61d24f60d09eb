"""The fold of each event of a k-folded pipeline (``train.folds``): one definition.

Training (``train/folds.py``), applying (``apply/model.py``) and the clients that feed the
served model's ``fold`` input all take an event's fold from here: ``assign_fold`` of the
spec's ``data.identifiers`` with the split's seed (``preprocess.split.seed``). The hash
itself is ``mlaas4hep.eventhash``'s, which the inference service also calls when a request
carries the identifiers instead of ``fold`` (serve/folds.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mlaas4hep.errors import SpecError
from mlaas4hep.eventhash import assign_fold
from mlaas4hep.spec import PipelineSpec


def event_folds(spec: PipelineSpec, columns: Mapping[str, Any]) -> np.ndarray[Any, Any]:
    """The fold (int64 per event, ``0..k-1``) of the events in *columns*.

    *columns*: branch -> per-event array, holding every ``data.identifiers`` branch.
    Raises SpecError when the spec is not k-folded or an identifier is missing.
    """
    k = spec.train.folds
    if k is None:
        msg = f"pipeline {spec.name!r} is not k-folded (train.folds is null): it has no folds"
        raise SpecError(msg)
    missing = [name for name in spec.data.identifiers if name not in columns]
    if missing:
        msg = (
            f"the fold of an event is a hash of its identifiers {list(spec.data.identifiers)}, "
            f"but {missing} are missing; read them too, or score with the mean of the {k} "
            "models (folds='average', `mlaas4hep apply --folds average`: for real data)"
        )
        raise SpecError(msg)
    ids = [np.asarray(columns[name]) for name in spec.data.identifiers]
    return assign_fold(ids, folds=k, seed=spec.preprocess.split.seed)
