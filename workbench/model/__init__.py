"""The model: load it (embedded default, local folder, hub id), its training method (LoRA,
QLoRA, full, freeze -> peft), the memory estimate, losses, compiling and generation."""
