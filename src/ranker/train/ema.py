"""Exponential moving average of the weights (Polyak–Ruppert averaging with exponential decay).

After every optimizer step ``t`` (counted from 1) the shadow copy moves towards the weights::

    d_t = min(decay, (1 + t) / (10 + t))        warm-up: early shadows are not dominated by
    θ̄_t = d_t · θ̄_{t−1} + (1 − d_t) · θ_t        the random initialisation (TensorFlow's rule)

Validation, model selection and the saved best weights then use ``θ̄`` instead of ``θ``: the
average of the last ~1 / (1 − decay) steps sits nearer the centre of the basin the optimizer
wanders in, which often scores better than the last iterate on small, noisy data (Polyak &
Juditsky, SIAM J. Control Optim. 1992; Izmailov et al., UAI 2018, for the averaged-weights view).
Only parameters are averaged; buffers are copied from the live model. Batch-norm statistics
are running averages already, and constant buffers may hold ±inf (bin edges), which an
average would turn into NaN.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn


class WeightAverage:
    """The shadow weights of `model`, keyed like its ``state_dict``.

    Holds references to the model's tensors: build it after the model is on its device, and
    update weights in place (optimizers and ``load_state_dict`` do).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.steps = 0
        live = model.state_dict()  # detached views of the model's own tensors
        self.shadow = {k: v.clone() for k, v in live.items()}
        # Paired once: the optimizer and batch norm update these tensors in place, so the
        # per-step update needs no state_dict() walk.
        params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
        self._averaged = ([self.shadow[k] for k in live if k in params], [v for k, v in live.items() if k in params])
        self._copied = (
            [self.shadow[k] for k in live if k not in params],
            [v for k, v in live.items() if k not in params],
        )

    def rate(self) -> float:
        """The decay d_t of the next update."""
        t = self.steps + 1
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average, from the model the average was made for."""
        d = self.rate()
        if self._averaged[0]:
            torch._foreach_lerp_(*self._averaged, 1.0 - d)
        if self._copied[0]:
            torch._foreach_copy_(*self._copied)
        self.steps += 1

    def state(self) -> dict[str, torch.Tensor]:
        """The shadow weights plus the step count (for a checkpoint)."""
        return {**self.shadow, "__ema_steps__": torch.tensor(self.steps)}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        self.steps = int(state.pop("__ema_steps__"))
        missing = set(self.shadow) - set(state)
        if missing:
            raise ValueError(f"EMA checkpoint lacks {sorted(missing)[:3]}")
        for key, value in self.shadow.items():
            value.copy_(state[key])

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Run the block with the shadow weights in `model`, then put the raw weights back."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow, strict=True)
        try:
            yield
        finally:
            model.load_state_dict(raw, strict=True)


def averaged_weights(ema: WeightAverage | None, model: nn.Module) -> AbstractContextManager[None]:
    """``ema.applied(model)``, or nothing when there is no average (validation either way)."""
    return ema.applied(model) if ema is not None else nullcontext()
