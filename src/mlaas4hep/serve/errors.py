"""Serving errors; most live in :mod:`mlaas4hep.errors` with the rest and are re-exported.

Mlaas4hepError
├── InvalidInput (ValueError)   a malformed inference request (400)
│   └── UnsupportedEncoding     a Content-Encoding the service cannot decode (415)
└── Unavailable
    └── Overloaded              a model's queue is full; retry later (503 + Retry-After)

``UnsupportedEncoding`` is answered 415 through the one status table
(:mod:`mlaas4hep.http_status`), by the inference routes and the job API alike.
"""

from __future__ import annotations

from mlaas4hep.errors import InvalidInput, Overloaded, UnsupportedEncoding

__all__ = ["InvalidInput", "Overloaded", "UnsupportedEncoding"]
