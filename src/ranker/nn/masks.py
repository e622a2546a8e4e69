"""Attention masks for left-padded sequences (True = the query may attend the key)."""

from __future__ import annotations

import torch


def causal_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, N, N) bool: query i sees key j iff j ≤ i and j is a real token; i always sees i.

    The diagonal keeps padded rows from being empty (a softmax over nothing is NaN); padded
    keys are never seen by real queries, so padding cannot change a real position's output.

    Shape: valid (B, N) bool (False = padding). Returns (B, N, N) bool.

    Example:
        >>> causal_mask(torch.tensor([[False, True, True]])).int().tolist()
        [[[1, 0, 0], [0, 1, 0], [0, 1, 1]]]
    """
    n = valid.shape[1]
    tril = torch.ones(n, n, dtype=torch.bool, device=valid.device).tril()
    eye = torch.eye(n, dtype=torch.bool, device=valid.device)
    return (tril & valid.unsqueeze(1)) | eye
