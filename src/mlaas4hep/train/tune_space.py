"""A ``tune.space`` as Optuna distributions, and trial parameters back as spec values.

Optuna's categorical parameters hold only ``None``/bool/int/float/str, while a spec option
may be a list (``model.hidden: [32, 16]``): such choices are handed to Optuna as their
canonical JSON text (``"[32, 16]"``, also what the trials table shows) and decoded here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mlaas4hep.spec import CategoricalParamSpec, FloatParamSpec, IntParamSpec, TuneSpec

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

_SCALARS = (type(None), bool, int, float, str)


def distributions(tune: TuneSpec) -> dict[str, BaseDistribution]:
    """One Optuna distribution per path of ``tune.space``, in the spec's order."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, BaseDistribution] = {}
    for path, param in tune.space.items():
        if isinstance(param, IntParamSpec):
            step = 1 if param.log else param.step
            out[path] = IntDistribution(param.low, param.high, log=param.log, step=step)
        elif isinstance(param, FloatParamSpec):
            out[path] = FloatDistribution(param.low, param.high, log=param.log)
        else:
            out[path] = CategoricalDistribution([encode(c) for c in param.choices])
    return out


def encode(choice: Any) -> Any:
    """A categorical choice as Optuna stores it: itself if a scalar, else its JSON text."""
    if isinstance(choice, _SCALARS):
        return choice
    return json.dumps(choice, sort_keys=True)


def spec_values(tune: TuneSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's parameters of a trial as the values to set in the spec (``with_params``)."""
    out: dict[str, Any] = {}
    for path, value in params.items():
        param = tune.space[path]
        if isinstance(param, CategoricalParamSpec):
            out[path] = next(c for c in param.choices if encode(c) == value)
        else:
            out[path] = value
    return out
