"""Runs, the engine every kind shares: the Run (a Trainer on a thread, its events, stop and
resume), the Trainer bridge, the settings (`Hyperparameters`) and memory fitting, the run
directory and its files, the registry of kinds, the history and report.html."""
