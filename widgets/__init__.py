"""Notebook panels (ipywidgets) that observe and drive the workbench library."""

from widgets.compare_view import CompareView
from widgets.dataset_preview import DatasetPreview
from widgets.lora_form import LoraForm
from widgets.preference_panel import PreferencePanel
from widgets.run_browser import RunBrowser
from widgets.template_editor import TemplateEditor
from widgets.training_monitor import TrainingMonitor
from widgets.workbench_app import Workbench

__all__ = [
    "CompareView",
    "DatasetPreview",
    "LoraForm",
    "PreferencePanel",
    "RunBrowser",
    "TemplateEditor",
    "TrainingMonitor",
    "Workbench",
]
