"""Training: load a base model, choose a method, size the batch, run the Trainer (SFT, DPO)."""
