"""Two stages: a retrieval run's candidates re-ranked by a feature ranker (PROTOCOLS.md, TS-ML1M).

One job per module:

- :mod:`~ranker.twostage.side_info`: per-dataset readers of user and item side information;
- :mod:`~ranker.twostage.content`: title embeddings from a packaged sentence encoder (extra
  ``ranker[content]``), cached;
- :mod:`~ranker.twostage.rows`: stage-2 queries (training prefixes with hard and sampled
  negatives, held-out candidate lists) and their rows with history and stage-1 features;
- :mod:`~ranker.twostage.dataset`: the train / valid / test parquet files and the ranking config;
- :mod:`~ranker.twostage.evaluate`: final-list ranks, metrics, paired bootstrap, request timing.

Stage-1 candidates themselves are :mod:`ranker.retrieval.candidates` (``ranker candidates``).
"""
