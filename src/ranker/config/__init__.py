"""Typed configuration: the schema and a strict YAML loader."""

from ranker.config.generative import GenerativeRunConfig
from ranker.config.load import (
    anchored,
    apply_override,
    config_kind,
    dump_config,
    load_config,
    load_generative_config,
    load_retrieval_config,
    validate,
)
from ranker.config.retrieval import RetrievalRunConfig
from ranker.config.schema import DataConfig, ModelConfig, RunConfig, TrainConfig

__all__ = [
    "DataConfig",
    "GenerativeRunConfig",
    "ModelConfig",
    "RetrievalRunConfig",
    "RunConfig",
    "TrainConfig",
    "apply_override",
    "config_kind",
    "dump_config",
    "load_config",
    "anchored",
    "load_generative_config",
    "load_retrieval_config",
    "validate",
]
