"""Notebook panels (ipywidgets) that observe and drive the workbench library.

Import them as `workbench.widgets` (the folder is mapped there when the project is installed).
`import widgets` still works from the repository's root for one release, with a warning.
"""

import warnings

if __name__ == "widgets":
    warnings.warn(
        "`import widgets` is deprecated and will stop working in the next release: use "
        "`from workbench.widgets import ...` (the same classes).",
        FutureWarning,
        stacklevel=2,
    )

from workbench.widgets.change_view import ChangeView
from workbench.widgets.classifier_panel import ClassifierPanel
from workbench.widgets.compare_view import CompareView
from workbench.widgets.dataset_preview import DatasetPreview
from workbench.widgets.lora_form import LoraForm
from workbench.widgets.preference_panel import PreferencePanel
from workbench.widgets.pretrain_panel import PretrainPanel
from workbench.widgets.rl_panel import RLPanel
from workbench.widgets.run_browser import RunBrowser
from workbench.widgets.template_editor import TemplateEditor
from workbench.widgets.training_monitor import TrainingMonitor
from workbench.widgets.workbench_app import Workbench, WorkbenchApp

__all__ = [
    "ChangeView",
    "ClassifierPanel",
    "CompareView",
    "DatasetPreview",
    "LoraForm",
    "PreferencePanel",
    "PretrainPanel",
    "RLPanel",
    "RunBrowser",
    "TemplateEditor",
    "TrainingMonitor",
    "Workbench",
    "WorkbenchApp",
]
