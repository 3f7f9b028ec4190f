"""Data: load files and frames, detect and validate formats, split, mix tasks, describe."""
