"""The service's Python client: ``mlaas4hep.Client`` and the HTTP stack under it.

``http`` (where the service is, the token, error answers as exceptions), ``inference``
(V2 binary tensors), ``models`` (published bundles fetched by ``NAME[:VERSION]``),
``service`` (the :class:`Client` the CLI and notebooks use).
"""

from __future__ import annotations

from mlaas4hep.client.http import ServiceError
from mlaas4hep.client.service import Client

__all__ = ["Client", "ServiceError"]
