"""Evaluation: generate answers, score them, before/after, forgetting, prompting baselines."""
