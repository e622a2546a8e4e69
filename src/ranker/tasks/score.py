"""The serving score: one number per candidate from the task outputs.

    sum:     s = Σ_t w_t · p_t
    product: s = Π_t p_t^{w_t}    (computed as exp Σ_t w_t log p_t)

p_t is a binary task's probability — the joint p(t ∧ parent ∧ …) = Π over the chain of the
heads' (conditional) probabilities for a chained task, since a feed ranks by what happens per
impression — or a regression task's value (``sum`` only).

Shape:
    outputs (B, T) (``TaskSpec.outputs`` of the raw model outputs) → scores (B,)

>>> import torch
>>> from ranker.config.schema import TaskConfig
>>> spec = TaskSpec.from_tasks([TaskConfig(name="watch"), TaskConfig(name="like", conditional_on="watch")])
>>> serving_score(torch.full((1, 2), 0.5), spec, {"watch": 1.0, "like": 2.0})  # 0.5 + 2 · 0.25
tensor([1.])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ranker.errors import ConfigError
from ranker.tasks.chain import chain_of
from ranker.tasks.spec import TaskSpec


def score_weights(spec: TaskSpec, weights: Mapping[str, float]) -> torch.Tensor:
    """Weights aligned with the tasks (T,); an empty mapping weighs every task 1."""
    unknown = sorted(set(weights) - set(spec.names))
    if unknown:
        raise ConfigError(f"serving.weights: {unknown} are not tasks; tasks: {list(spec.names)}")
    if not weights:
        return torch.ones(len(spec.names))
    return torch.tensor([float(weights.get(n, 0.0)) for n in spec.names])


def joint_outputs(outputs: torch.Tensor, spec: TaskSpec) -> torch.Tensor:
    """Each chained task's output times its ancestors' (joint probabilities), shape (B, T)."""
    if not spec.chained:
        return outputs
    cols = [outputs[:, chain_of(t, spec.parents)].prod(1) for t in range(outputs.shape[1])]
    return torch.stack(cols, 1)


def serving_score(
    outputs: torch.Tensor, spec: TaskSpec, weights: Mapping[str, float], combine: str = "sum"
) -> torch.Tensor:
    """Combine per-task outputs (B, T) into (B,) ranking scores."""
    w = score_weights(spec, weights).to(outputs.device)
    values = joint_outputs(outputs.float(), spec)
    if combine == "product":
        if any(w[t] != 0 and not spec.binary[t] for t in range(len(spec.names))):
            raise ConfigError("serving.combine: product needs probabilities; a weighted task is a regression")
        return (values.clamp_min(1e-12).log() * w).sum(1).exp()
    if combine != "sum":
        raise ConfigError(f"serving.combine: {combine!r} is not one of sum, product")
    return (values * w).sum(1)


def probability_score_problem(spec: TaskSpec, weights: Mapping[str, float], combine: str = "sum") -> str | None:
    """Why the serving score is not a probability in [0, 1] (None when it is): fusing it with
    the stage-1 score as ``logit(s) + w · s1`` needs one. It is when every weighted task is
    binary, no weight is negative, and (``sum``) the weights add up to at most 1."""
    w = score_weights(spec, weights).tolist()
    regression = [n for n, b, x in zip(spec.names, spec.binary, w, strict=True) if x != 0 and not b]
    if regression:
        return f"the weighted tasks {regression} are regressions"
    if any(x < 0 for x in w):
        return f"serving.weights has a negative weight ({dict(zip(spec.names, w, strict=True))})"
    if combine == "sum" and sum(w) > 1 + 1e-9:
        return f"serving.weights add up to {sum(w):g} > 1 with combine: sum"
    return None
