"""mlaas4hep: Machine Learning as a Service for High-Energy Physics."""

from __future__ import annotations

__version__ = "0.1.0"
