"""Interfaces over the library: recipes (YAML), copy as code, and exports (adapter, merged
model, training script, GGUF)."""
