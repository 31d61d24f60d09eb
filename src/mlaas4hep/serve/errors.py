"""Serving errors; most live in :mod:`mlaas4hep.errors` with the rest and are re-exported.

Mlaas4hepError
├── InvalidInput (ValueError)   a malformed inference request (400)
│   └── UnsupportedEncoding     a Content-Encoding the service cannot decode (415)
└── Unavailable
    └── Overloaded              a model's queue is full; retry later (503 + Retry-After)

``UnsupportedEncoding`` is answered 415 by the inference routes (``serve/http.py``); any
other table that knows only ``InvalidInput`` still answers it with a 400.
"""

from __future__ import annotations

from mlaas4hep.errors import InvalidInput, Overloaded

__all__ = ["InvalidInput", "Overloaded", "UnsupportedEncoding"]


class UnsupportedEncoding(InvalidInput):
    """The request body's ``Content-Encoding`` is not one the service decodes (415)."""
