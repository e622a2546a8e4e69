"""The feature ranker's orchestration: config → data → preprocessing → model → engine → run directory."""
