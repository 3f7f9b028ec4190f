"""Evaluation, scoring only: answers scored by metrics, before/after tables, forgetting
probes, prompting baselines, preference margins and reward functions."""
