"""Serving errors; they live in :mod:`mlaas4hep.errors` with the rest and are re-exported.

Mlaas4hepError
├── InvalidInput (ValueError)   a malformed inference request (400)
└── Unavailable
    └── Overloaded              a model's queue is full; retry later (503 + Retry-After)
"""

from __future__ import annotations

from mlaas4hep.errors import InvalidInput, Overloaded

__all__ = ["InvalidInput", "Overloaded"]
