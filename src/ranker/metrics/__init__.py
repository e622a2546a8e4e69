"""Evaluation metrics: pointwise ranking (AUC, GAUC, log loss, accuracy) and retrieval (HR, NDCG, MRR).

GAUC protocol: AUC per user averaged with weights = the user's number of rows, over users with
both labels (Zhou et al. 2018, Deep Interest Network). Retrieval ranks count ties against the
target and never exclude the target itself. All metrics are exact and vectorised; inputs may be
numpy arrays, Python lists or torch tensors.
"""

from ranker.metrics.ranking import accuracy, auc, gauc, gndcg, logloss
from ranker.metrics.retrieval import metrics_from_ranks, retrieval_metrics, retrieval_ranks

__all__ = ["accuracy", "auc", "gauc", "gndcg", "logloss", "metrics_from_ranks", "retrieval_metrics", "retrieval_ranks"]
