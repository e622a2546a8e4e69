"""Models assembled from layers: the feature-based :class:`Ranker` and its builder."""

from ranker.models.ranker import Ranker
from ranker.models.registry import build_model

__all__ = ["Ranker", "build_model"]
