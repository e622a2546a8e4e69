"""Models assembled from layers: the feature-based :class:`Ranker`, the sequential retrievers
:class:`SASRec` and :class:`HSTU`, and their builders."""

from ranker.models.ranker import Ranker
from ranker.models.registry import build_model
from ranker.models.sequential import HSTU, SASRec, SequentialRetriever, build_retrieval_model

__all__ = ["HSTU", "Ranker", "SASRec", "SequentialRetriever", "build_model", "build_retrieval_model"]
