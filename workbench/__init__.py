"""Fine-tuning workbench: data -> template -> tokens -> training -> before/after, in a notebook.

The library never imports widgets or plotting at import time; the panels in `widgets/` are
built on the public functions exported here.
"""

from workbench.data import Examples, load_data
from workbench.errors import (
    AllLabelsMaskedError,
    DataValidationError,
    ModelLoadError,
    Problem,
    TemplateError,
    WorkbenchError,
)
from workbench.models import DEFAULT_MODEL, load_model
from workbench.splits import mix_tasks, split_data
from workbench.stats import dataset_stats
from workbench.templates import TEMPLATES, Template, default_template, get_template
from workbench.tokenize import (
    CompletionCollator,
    token_view,
    token_view_html,
    token_view_text,
    tokenize_examples,
    tokenize_pair,
)

__all__ = [
    "DEFAULT_MODEL",
    "TEMPLATES",
    "AllLabelsMaskedError",
    "CompletionCollator",
    "DataValidationError",
    "Examples",
    "ModelLoadError",
    "Problem",
    "Template",
    "TemplateError",
    "WorkbenchError",
    "dataset_stats",
    "default_template",
    "get_template",
    "load_data",
    "load_model",
    "mix_tasks",
    "split_data",
    "token_view",
    "token_view_html",
    "token_view_text",
    "tokenize_examples",
    "tokenize_pair",
]
