"""Candidate generation: the leave-one-out protocol, generative training of sequential
retrievers (SASRec, HSTU), full-catalogue evaluation, exact and approximate (faiss) search."""

from ranker.retrieval.evaluation import evaluate_model
from ranker.retrieval.protocol import LeaveOneOut, Sequences, evaluate, leave_one_out_views, popularity_scorer
from ranker.retrieval.search import exact_topk

__all__ = [
    "LeaveOneOut",
    "Sequences",
    "evaluate",
    "evaluate_model",
    "exact_topk",
    "leave_one_out_views",
    "popularity_scorer",
]
