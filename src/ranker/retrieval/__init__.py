"""Candidate generation: the leave-one-out protocol and retrieval baselines (models come next)."""

from ranker.retrieval.protocol import (
    LeaveOneOut,
    Sequences,
    evaluate,
    from_prepared,
    leave_one_out,
    popularity_scorer,
)

__all__ = ["LeaveOneOut", "Sequences", "evaluate", "from_prepared", "leave_one_out", "popularity_scorer"]
