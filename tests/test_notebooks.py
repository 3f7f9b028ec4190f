"""Every notebook runs top to bottom (nbclient), with training shortened through the environment.

The quickstart runs on the embedded model, as a user runs it. The lessons after it take a tiny
local model (24 layers, hidden size 64) through `WORKBENCH_NOTEBOOK_MODEL`: their code paths are
the same, and the suite stays inside CI's time (their real-model figures are in the README).
"""

from __future__ import annotations

import json

import nbformat
import pytest
from conftest import ROOT, build_tiny_model

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SHORT = {
    "WORKBENCH_NOTEBOOK_STEPS": "2",
    "WORKBENCH_NOTEBOOK_HELD_OUT": "8",
    "WORKBENCH_NOTEBOOK_WAIT": "1",  # headless: wait for training instead of a Stop button
}
# The lessons that read WORKBENCH_NOTEBOOK_MODEL; the quickstart stays on the embedded model.
ON_LESSON_MODEL = {
    "03_methods",
    "04_forgetting",
    "05_prompting_vs_finetuning",
    "06_runs_export_dpo",
}
# Text each notebook's outputs must contain: proof that its story reached the end.
EXPECTED = {
    "01_quickstart": ["finished", "accuracy"],
    "02_prompt_templates": ["carry loss", "TemplateError", "truncation_side='left'"],
    "03_methods": ["held-out accuracy", "QLoRA r=16", "freeze 20"],
    "04_forgetting": ["retained / base", "full + EWC", "full + mixing", "Learned and retained"],
    "05_prompting_vs_finetuning": ["4-shot retrieved", "tokens per query", "LoRA fine-tuned"],
    "06_runs_export_dpo": ["settings that differ", "max |logit difference|", "SFT+DPO"],
}


def test_notebooks_are_stored_without_outputs():
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        notebook = json.loads(path.read_text())
        code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), path


def test_lessons_take_their_model_from_the_environment():
    reads = {p.stem for p in NOTEBOOKS if "WORKBENCH_NOTEBOOK_MODEL" in p.read_text()}
    assert reads == ON_LESSON_MODEL


@pytest.fixture(scope="module")
def lesson_model_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny model deep enough for the lessons' `freeze_layers=20`, saved as a local folder."""
    folder = tmp_path_factory.mktemp("lesson-model")
    build_tiny_model(tiny_tokenizer, layers=24, hidden=64).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch, request):
    from nbclient import NotebookClient

    for key, value in SHORT.items():
        monkeypatch.setenv(key, value)
    if path.stem in ON_LESSON_MODEL:
        model_dir = request.getfixturevalue("lesson_model_dir")
        monkeypatch.setenv("WORKBENCH_NOTEBOOK_MODEL", str(model_dir))
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, errors
    text = "\n".join(
        str(o.get("text", "")) + json.dumps(o.get("data", {}))
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    assert "Traceback" not in text
    for expected in EXPECTED[path.stem]:
        assert expected in text, f"{path.name}: no output mentions {expected!r}"
