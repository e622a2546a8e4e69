"""Pure, typed layers: no training, data or device logic lives here."""

from ranker.nn.blocks import DenseNet, DenseNetBlock, ResNet, ResNetBlock
from ranker.nn.crossnet import CrossNetV2
from ranker.nn.din import DINAttention
from ranker.nn.dropout import FastDropout
from ranker.nn.embeddings import FeatureEmbeddings, HashedEmbeddings, UnifiedEmbeddings
from ranker.nn.hashing import HashEmbedding
from ranker.nn.history import MeanPoolHistory
from ranker.nn.interaction import CrossStructure
from ranker.nn.mlp import MLP
from ranker.nn.numerical import LinearEmbeddings, PeriodicEmbeddings, PiecewiseLinearEmbeddings, PiecewiseLinearEncoding
from ranker.nn.transact import TransActEncoder
from ranker.nn.unified import UnifiedEmbedding

__all__ = [
    "MLP",
    "DINAttention",
    "FastDropout",
    "HashEmbedding",
    "HashedEmbeddings",
    "LinearEmbeddings",
    "PeriodicEmbeddings",
    "PiecewiseLinearEmbeddings",
    "PiecewiseLinearEncoding",
    "TransActEncoder",
    "UnifiedEmbedding",
    "UnifiedEmbeddings",
    "CrossNetV2",
    "CrossStructure",
    "DenseNet",
    "DenseNetBlock",
    "FeatureEmbeddings",
    "MeanPoolHistory",
    "ResNet",
    "ResNetBlock",
]
