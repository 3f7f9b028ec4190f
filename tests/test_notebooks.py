"""Every notebook runs top to bottom (nbclient), with training shortened through the environment."""

from __future__ import annotations

import json

import nbformat
import pytest
from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SHORT = {
    "WORKBENCH_NOTEBOOK_STEPS": "2",
    "WORKBENCH_NOTEBOOK_HELD_OUT": "8",
    "WORKBENCH_NOTEBOOK_WAIT": "1",  # headless: wait for training instead of a Stop button
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    for key, value in SHORT.items():
        monkeypatch.setenv(key, value)
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
