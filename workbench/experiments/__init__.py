"""Experiments over runs: leave one task out, choosing a model, and the preference and
reinforcement-learning experiments (measured before, trained, measured after)."""
