"""Several retrieval runs over one catalogue, served as one retriever.

Member k scores item j for a query with ``s_k(j) = ⟨u_k, e_k(j)⟩`` (its user vector and item
table). The ensemble ranks by the weighted sum ``s(j) = Σ_k w_k · s_k(j)``, which is itself one
inner product of concatenated vectors::

    u = [w_1·u_1, …, w_K·u_K]        e(j) = [e_1(j), …, e_K(j)]        s(j) = ⟨u, e(j)⟩

so everything that ranks a retriever's ``U Eᵀ`` (evaluation, candidates, exact or faiss top-k)
ranks the ensemble unchanged. With a softmax-trained member the sum is also the ranking of a
product of the members' distributions: ``log p_k(j) = s_k(j)/τ_k − log Z_k`` and ``log Z_k``
does not depend on j, so the weights play the role of ``1/τ_k`` ratios. Weights are picked on
validation (``benchmarks/stage1_ensemble.py``).

Shape: items, times, query_times (B, L); ``encode`` (B, L, Σ D_k); ``item_vectors``
(I + 1, Σ D_k).

Example:
    >>> from ranker.config.retrieval import SASRecModel
    >>> from ranker.models.sequential import SASRec
    >>> a = SASRec(SASRecModel(dim=4, num_layers=1), num_items=9, max_len=5).eval()
    >>> b = SASRec(SASRecModel(dim=6, num_layers=1), num_items=9, max_len=5).eval()
    >>> both = RetrieverEnsemble([a, b], [1.0, 0.5])
    >>> items = torch.tensor([[0, 0, 3, 4, 5]])
    >>> s = both.user_vectors(items) @ both.item_vectors().T
    >>> ref = a.user_vectors(items) @ a.item_vectors().T + 0.5 * b.user_vectors(items) @ b.item_vectors().T
    >>> bool(torch.allclose(s, ref, atol=1e-6)), tuple(s.shape)
    (True, (1, 10))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import torch
from torch import nn

from ranker.config.retrieval import RetrievalRunConfig
from ranker.errors import ConfigError
from ranker.models.sequential import Retriever, SequentialRetriever
from ranker.retrieval.data import ServingData


class RetrieverEnsemble(nn.Module):
    """Members over the same catalogue and input length; score = Σ_k w_k ⟨u_k, e_k⟩."""

    def __init__(self, members: Sequence[SequentialRetriever], weights: Sequence[float]) -> None:
        super().__init__()
        if len(members) < 2 or len(weights) != len(members):
            raise ValueError(f"an ensemble needs ≥ 2 members and one weight each, got {len(members)=}, {len(weights)=}")
        if any(w <= 0 for w in weights):
            raise ValueError(f"ensemble weights must be > 0, got {list(weights)}")
        shapes = {(m.num_items, m.max_len) for m in members}
        if len(shapes) > 1:
            raise ValueError(f"members differ in (num_items, max_len): {sorted(shapes)}")
        self.members = nn.ModuleList(members)  # registered: .eval(), .to(), parameters()
        self.weighted = [(float(w), m) for w, m in zip(weights, members, strict=True)]
        self.num_items, self.max_len = members[0].num_items, members[0].max_len
        self.dim = sum(m.dim for m in members)

    def encode(
        self, items: torch.Tensor, times: torch.Tensor | None = None, query_times: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L) → (B, L, Σ D_k): every member's states, member k's scaled by w_k."""
        return torch.cat([w * m.encode(items, times, query_times) for w, m in self.weighted], -1)

    def user_vectors(
        self, items: torch.Tensor, times: torch.Tensor | None = None, query_times: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L) → (B, Σ D_k): the state at the last position."""
        return self.encode(items, times, query_times)[:, -1]

    def item_vectors(self) -> torch.Tensor:
        """(I + 1, Σ D_k): the members' item tables side by side (unweighted)."""
        return torch.cat([m.item_vectors() for _, m in self.weighted], -1)


def load_stage1(
    run_dirs: Sequence[Path], weights: Sequence[float] | None = None
) -> tuple[RetrievalRunConfig, Retriever, ServingData]:
    """One retrieval run (:func:`ranker.retrieval.run.load_run`), or several as a
    :class:`RetrieverEnsemble` (`weights`: one per run, default 1 each)."""
    from ranker.retrieval.run import load_run

    if len(run_dirs) == 1 and weights in (None, [1.0], (1.0,)):
        return load_run(Path(run_dirs[0]))
    return load_ensemble(run_dirs, [1.0] * len(run_dirs) if weights is None else weights)


def load_ensemble(
    run_dirs: Sequence[Path], weights: Sequence[float]
) -> tuple[RetrievalRunConfig, RetrieverEnsemble, ServingData]:
    """Finished retrieval runs as one :class:`RetrieverEnsemble`, with the first run's config
    and serving files. The runs must have been trained on the same events: the same catalogue
    (raw ids in the same order), the same users and histories, the same input length; a
    ConfigError names the run that differs."""
    from ranker.retrieval.run import load_run

    if len(run_dirs) < 2 or len(run_dirs) != len(weights):
        raise ConfigError(
            f"--weights: {len(weights)} weight(s) for {len(run_dirs)} run(s); an ensemble needs ≥ 2 runs, one weight each"
        )
    if any(w <= 0 for w in weights):
        raise ConfigError(f"--weights: every weight must be > 0, got {list(weights)}")
    loaded = [load_run(Path(r)) for r in run_dirs]
    cfg, _, serving = loaded[0]
    for run, (_, _, other) in zip(run_dirs[1:], loaded[1:], strict=True):
        check_same_data(serving, other, run_dirs[0], run)
    return cfg, RetrieverEnsemble([m for _, m, _ in loaded], weights).eval(), serving


def check_same_data(a: ServingData, b: ServingData, first: Path, run: Path) -> None:
    """A ConfigError naming `run` unless its serving files hold the events of `first`'s."""
    same = (
        a.max_len == b.max_len
        and a.items.type == b.items.type
        and a.items.equals(b.items)
        and _users_items(a).equals(_users_items(b))
    )
    if not same:
        raise ConfigError(
            f"{run}: not trained on the events of {first} (catalogue, users, histories or max_len "
            "differ); ensemble members must share their data"
        )


def _users_items(s: ServingData) -> pa.Table:
    return s.histories.select(["user", "items"])
