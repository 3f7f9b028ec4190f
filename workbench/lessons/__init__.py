"""Lessons: the end-to-end demo the README and `python -m workbench demo` run."""
