"""What a model needs to know about the encoded features: names, table sizes, widths (no values)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Layout:
    """What a model needs to know about the encoded features (sizes, not values)."""

    categorical: dict[str, str]  # feature -> vocabulary owner
    multi: dict[str, str]
    vocab_sizes: dict[str, int]  # vocabulary owner -> rows
    numerical: list[str]
    dense: dict[str, int]
    history: dict[str, dict[str, Any]]  # name -> item_vocab, n_actions, max_len, has_time
    tasks: list[str]
    ids: str = "vocab"  # "vocab" or "hash" (see the module docstring)
    numeric_edges: dict[str, list[float]] = field(default_factory=dict)  # PLE bin edges
