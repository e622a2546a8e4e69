"""Pure, typed layers: no training, data or device logic lives here."""

from ranker.nn.blocks import DenseNet, DenseNetBlock, ResNet, ResNetBlock
from ranker.nn.crossnet import CrossNetV2
from ranker.nn.embeddings import FeatureEmbeddings
from ranker.nn.history import MeanPoolHistory
from ranker.nn.interaction import CrossStructure
from ranker.nn.mlp import MLP

__all__ = [
    "MLP",
    "CrossNetV2",
    "CrossStructure",
    "DenseNet",
    "DenseNetBlock",
    "FeatureEmbeddings",
    "MeanPoolHistory",
    "ResNet",
    "ResNetBlock",
]
