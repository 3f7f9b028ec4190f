"""What a run directory saved, loaded again: its LoRA adapter on a base model, and a finished
run's model, tokenizer and template (to evaluate, export, or go on with DPO or RL)."""

from __future__ import annotations

from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.model.loading import load_model
from workbench.runs.directory import load_run_config, save_atomic_dir
from workbench.tokens.templates import Template, get_template


def save_adapter(model, folder: str | Path, tokenizer=None) -> Path:
    """Save a PEFT model's adapter (and the tokenizer) atomically; returns the folder."""
    if not hasattr(model, "peft_config"):
        raise WorkbenchError(
            "This model has no adapter to save (full fine-tuning changed the weights "
            "themselves): use model.save_pretrained(folder) for the whole model."
        )
    folder = Path(folder)

    def save(target: Path) -> None:
        model.save_pretrained(target)
        if tokenizer is not None:
            tokenizer.save_pretrained(target)

    save_atomic_dir(save, folder)
    return folder


def load_adapter(base_model, folder: str | Path, *, trainable: bool = False):
    """`base_model` with the adapter in `folder` on it (a PeftModel); `trainable` to train on."""
    from peft import PeftModel

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"{folder / 'adapter_config.json'} not found: pass a folder written by save_adapter "
            "(a run's adapter/ folder)."
        )
    return PeftModel.from_pretrained(base_model, str(folder), is_trainable=trainable)


def load_run_model(run_dir: str | Path, *, trainable: bool = False):
    """(model, tokenizer, template) of a finished LoRA run: the base model its config.yaml
    names with the run's `adapter/` on it (`trainable` to go on training it: DPO, RL)."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if not (run_dir / "adapter" / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"{run_dir / 'adapter'} not found: pass a finished LoRA run (its adapter/ folder "
            "holds what it learned)."
        )
    base, tokenizer = load_model(config["model"], quantization=config.get("quantization"))
    model = load_adapter(base, run_dir / "adapter", trainable=trainable)
    model.workbench_source = config["model"]
    return model, tokenizer, Template(**config["template"])


def template_for(template, parent, data_format: str | None) -> Template:
    """The one rule every kind of run follows for its template: the one given; else the
    `parent` run's (what it was trained on, so a DPO or RL run continues in the same format);
    else the built-in that suits the rows' format."""
    if template is not None:
        return get_template(template)
    if parent is not None:
        return Template(**load_run_config(Path(getattr(parent, "run_dir", parent)))["template"])
    return get_template(None, data_format or "alpaca")
