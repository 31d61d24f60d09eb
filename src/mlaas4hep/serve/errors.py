"""Serving-specific errors (candidates for ``mlaas4hep.errors``).

Mlaas4hepError
├── InvalidInput (ValueError)   a malformed inference request (400)
└── Overloaded                  a model's queue is full; retry later (503 + Retry-After)
"""

from __future__ import annotations

from mlaas4hep.errors import Mlaas4hepError


class InvalidInput(Mlaas4hepError, ValueError):
    """An inference request is malformed: bad JSON, unknown tensor, wrong shape or dtype."""


class Overloaded(Mlaas4hepError):
    """A model's request queue is full; the client should retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
