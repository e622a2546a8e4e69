"""Pure, typed layers: no training, data or device logic lives here."""

from ranker.nn.embeddings import FeatureEmbeddings
from ranker.nn.history import MeanPoolHistory
from ranker.nn.mlp import MLP

__all__ = ["MLP", "FeatureEmbeddings", "MeanPoolHistory"]
