"""Typed configuration: the schema and a strict YAML loader."""

from ranker.config.load import apply_override, dump_config, load_config, validate
from ranker.config.schema import DataConfig, ModelConfig, RunConfig, TrainConfig

__all__ = [
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "apply_override",
    "dump_config",
    "load_config",
    "validate",
]
