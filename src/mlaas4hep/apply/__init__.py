"""Applying a trained model bundle to events: analysis code, ``mlaas4hep apply``, ``predict``.

``Model`` (``model.py``) re-runs a bundle's preprocessing and its ONNX model on events in
memory; ``score_file`` (``score.py``) streams one ROOT input through one or more models,
entry-aligned, for the friend-tree writer. Layer: above ``preprocess``, below ``jobs``;
it never imports ``train`` or ``serve``.
"""

from mlaas4hep.apply.model import Model, Scored
from mlaas4hep.apply.score import ScoredChunk, score_file

__all__ = ["Model", "Scored", "ScoredChunk", "score_file"]
