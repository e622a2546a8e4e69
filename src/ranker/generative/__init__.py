"""Generative ranking (issue 8): user event logs, token windows, the trainer and the run."""
