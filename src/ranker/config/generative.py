"""The typed, strict configuration of a generative ranking run (HSTU over item/action tokens).

A YAML file with ``kind: generative`` at the top is a :class:`GenerativeRunConfig`; ``ranker
train`` dispatches on that key. Sections: ``data`` (a ranking recipe with per-event negatives,
today ``rk-ml100k``), ``model`` (the HSTU stack and the static user tokens) and ``train``.
Unknown keys are errors that name their path, as in the ranker's config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ranker.config.schema import BaseTrainConfig, Strict

StaticFeature = Literal["user_id", "gender", "occupation", "zip1", "age"]
STATIC_FEATURES: list[StaticFeature] = ["user_id", "gender", "occupation", "zip1", "age"]


class GenerativeData(Strict):
    """A ranking recipe whose rows are events with their sampled negatives (RK-ML100K)."""

    dataset: Literal["rk-ml100k"] = "rk-ml100k"
    max_events: int = Field(
        128, ge=2, description="events per model input; longer users are cut into windows "
        "whose targets keep at least max_events/2 earlier events as context")
    static_features: list[StaticFeature] = Field(
        default_factory=lambda: list(STATIC_FEATURES),
        description="leading user tokens, one per feature (age as a decade); [] for none")


class GenerativeModel(Strict):
    """HSTU (Zhai et al., 2024) over ``[static] i0 a0 i1 a1 …`` plus candidate tokens."""

    kind: Literal["hstu"] = "hstu"
    dim: int = Field(64, ge=1)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(2, ge=1)
    linear_dim: int = Field(32, ge=1, description="d_v per head")
    attention_dim: int = Field(32, ge=1, description="d_qk per head")
    dropout: float = Field(0.2, ge=0, lt=1, description="input and U⊙LN(AV) dropout")
    num_buckets: int = Field(128, ge=1)
    position_bias: bool = True
    time_bias: bool = True
    attention: Literal["reference", "fused"] = "fused"
    tower_hidden: list[int] = Field(default_factory=list, description="per-task MLP before the logit")


class GenerativeTrainConfig(BaseTrainConfig):
    """Every event (and its negatives) of each user window, batches budgeted in attention
    cells; selection on the validation mean AUC of the tasks, as the feature ranker."""

    epochs: int = Field(30, ge=1)
    batch_cells: int = Field(
        2_000_000, ge=1, description="attention cells B·N² per batch (sequences of similar length)")
    max_batch_size: int = Field(64, ge=1, description="sequences per batch at most")
    clip_grad_norm: float | None = Field(1.0, gt=0, description="max global gradient norm")


class GenerativeRunConfig(Strict):
    """The whole YAML file of a generative ranking run."""

    kind: Literal["generative"]
    name: str = "generative"
    data: GenerativeData = GenerativeData()
    model: GenerativeModel = GenerativeModel()
    train: GenerativeTrainConfig = GenerativeTrainConfig()
