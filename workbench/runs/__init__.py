"""Runs: the run directory, the Run and its events, the history, the report, the export."""
