"""Typed configuration: the schema and a strict YAML loader."""

from ranker.config.load import (
    apply_override,
    config_kind,
    dump_config,
    load_config,
    load_retrieval_config,
    validate,
)
from ranker.config.retrieval import RetrievalRunConfig
from ranker.config.schema import DataConfig, ModelConfig, RunConfig, TrainConfig

__all__ = [
    "DataConfig",
    "ModelConfig",
    "RetrievalRunConfig",
    "RunConfig",
    "TrainConfig",
    "apply_override",
    "config_kind",
    "dump_config",
    "load_config",
    "load_retrieval_config",
    "validate",
]
