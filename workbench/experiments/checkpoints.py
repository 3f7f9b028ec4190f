"""The checkpoints in between: the same fixed prompts answered at every saved checkpoint of a
run, after the fact and without training again, to see when an answer changed and when it
first matched its reference.

A LoRA checkpoint (`adapter_config.json`) goes on the base model config.yaml names, loaded
once; a full fine-tuning checkpoint (`config.json` and weights) is loaded as the model itself.
Step 0 is the base model. The run directory is read through `RunDirectory` only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.evaluation.compare import distinct_parts, question_of, score_answers
from workbench.model.generation import Decoding, generate
from workbench.model.loading import load_model
from workbench.runs.directory import HELD_OUT, RunDirectory, checkpoint_step
from workbench.runs.saved import load_adapter
from workbench.tokens.templates import Template, get_template

NOT_GENERATIVE = {"classify": "a classification head", "reward": "a reward model"}


@dataclass
class CheckpointAnswers:
    """The answers of every checkpoint of a run to the same prompts (step 0: the base model),
    and with references, each step's metrics and which answers matched (exact match)."""

    run_dir: Path
    prompts: list[str]  # as rendered with the run's template
    questions: list[str]  # the prompts without the template, for labels
    references: list[str] | None
    answers: dict[int, list[str]] = field(default_factory=dict)  # step -> one per prompt
    scores: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> metric -> value
    matched: dict[int, list[bool]] = field(default_factory=dict)  # step -> one per prompt

    @property
    def steps(self) -> list[int]:
        return sorted(self.answers)

    def table(self):
        """A DataFrame: one row a step, one column a prompt (its question), the answers."""
        import pandas as pd

        columns = _unique_labels(self.questions)
        return pd.DataFrame(
            [self.answers[s] for s in self.steps],
            index=pd.Index(self.steps, name="step"),
            columns=columns,
        )

    def first_matches(self) -> dict[str, int | None]:
        """Question -> the first step whose answer matched the reference (None: never)."""
        if self.references is None:
            raise WorkbenchError(
                "No `references` were given, so no answer can match one: pass references=[...] "
                "(one a prompt), or rows that carry their answers."
            )
        labels = _unique_labels(self.questions)
        return {
            label: next((s for s in self.steps if self.matched[s][i]), None)
            for i, label in enumerate(labels)
        }

    def metric(self, name: str = "exact_match"):
        """A pandas Series: the metric `name` at each step."""
        import pandas as pd

        if not self.scores or name not in self.scores[self.steps[0]]:
            known = sorted(self.scores[self.steps[0]]) if self.scores else []
            raise WorkbenchError(
                f"`name`={name!r} was not measured (measured: {known or 'nothing'}); pass it in "
                "`metrics=` of checkpoint_answers, with references."
            )
        return pd.Series({s: self.scores[s][name] for s in self.steps}, name=name)


def checkpoint_answers(
    run_dir: str | Path,
    prompts: list[str] | list[dict[str, Any]] | None = None,
    references: list[str] | None = None,
    *,
    rows: int = 8,
    template: Template | str | None = None,
    metrics: tuple[str, ...] = ("exact_match",),
    max_new_tokens: int = 24,
    include_base: bool = True,
    device: str = "auto",
) -> CheckpointAnswers:
    """Answer the same prompts at every complete checkpoint of the run in `run_dir`.

    `prompts` are questions a person types (rendered as the prompt tried) or rows (rendered
    with the run's template, their answers the references); by default the first `rows` of the
    run's held-out rows, else of its validation rows. Answers are greedy.
    """
    directory = RunDirectory(run_dir)
    directory.check_is_run()
    config = directory.read_config()
    _check_supported(directory, config)  # before the template: a head's run records none
    template = _run_template(config, template, directory)
    decoding = Decoding(max_new_tokens=max_new_tokens)
    result: CheckpointAnswers | None = None
    for step, model, tokenizer in checkpoint_models(
        run_dir, include_base=include_base, device=device
    ):
        if result is None:
            result = _fixed_prompts(directory, template, tokenizer, prompts, references, rows)
        result.answers[step] = generate(model, tokenizer, result.prompts, decoding)
        if result.references is not None:
            _score(result, step, metrics)
    return result


def _check_supported(directory: RunDirectory, config: dict[str, Any]) -> None:
    stage = config.get("stage", "sft")
    if stage in NOT_GENERATIVE:
        raise WorkbenchError(
            f"{directory.path}: `stage`={stage!r} trains {NOT_GENERATIVE[stage]}, which "
            "scores text rather than writing answers; checkpoint answers need a run that "
            "generates (sft, dpo, kto, orpo, grpo, ppo, distill, pretrain)."
        )


def _run_template(config: dict[str, Any], template, directory: RunDirectory) -> Template:
    if template is not None:
        return get_template(template)
    if not config.get("template"):
        raise WorkbenchError(
            f"{directory.path}/config.yaml records no `template` (stage "
            f"{config.get('stage')!r}): pass template='plain' or a Template to render prompts."
        )
    return Template(**config["template"])


def checkpoint_models(
    run_dir: str | Path, *, include_base: bool = True, device: str = "auto"
) -> Iterator[tuple[int, Any, Any]]:
    """(step, model, tokenizer) for the base model (step 0, with `include_base`) and each
    complete checkpoint of the run, oldest first. LoRA checkpoints reuse ONE model: each
    step's adapter replaces the one before, so use a model before asking for the next."""
    directory = RunDirectory(run_dir)
    directory.check_is_run()
    config = directory.read_config()
    _check_supported(directory, config)
    checkpoints = directory.complete_checkpoints()
    if not checkpoints:
        raise WorkbenchError(
            f"{directory.path} keeps no complete checkpoint. Checkpoints are saved every "
            "`eval_every` steps and the newest `keep_checkpoints` are kept: train with "
            "keep_checkpoints high enough to keep the steps you want to see."
        )
    base, tokenizer = load_model(
        config["model"], quantization=config.get("quantization"), device=device
    )
    if include_base:
        yield 0, base, tokenizer
    model = None
    for folder in checkpoints:
        step = checkpoint_step(folder)
        if (folder / "adapter_config.json").is_file():
            model = _next_adapter(base, model, folder, step)
            yield step, model, tokenizer
        elif (folder / "config.json").is_file():
            if model is not None:
                raise WorkbenchError(
                    f"{folder}: model weights after adapter checkpoints; a run saves one "
                    "kind of checkpoint, so this directory holds two runs' files."
                )
            full, _ = load_model(str(folder), device=device)
            yield step, full, tokenizer
            del full
        else:
            raise WorkbenchError(
                f"{folder} holds neither an adapter (adapter_config.json) nor model weights "
                "(config.json): only LoRA/QLoRA and full fine-tuning checkpoints can be loaded."
            )


def _next_adapter(base, model, folder: Path, step: int):
    """The PEFT model with `folder`'s adapter active: the first one wraps `base`; later ones
    are loaded beside it and the previous one is deleted (one base model in memory)."""
    if model is None:
        return load_adapter(base, folder)
    previous = model.active_adapter
    name = f"step-{step}"
    model.load_adapter(str(folder), adapter_name=name)
    model.set_adapter(name)
    model.delete_adapter(previous)
    return model


def _fixed_prompts(
    directory: RunDirectory, template: Template, tokenizer, prompts, references, rows: int
) -> CheckpointAnswers:
    """The prompts, questions and references every checkpoint answers."""
    if prompts is None:
        examples = directory.load_rows(HELD_OUT) or directory.load_rows("validation")
        if examples is None:
            raise WorkbenchError(
                f"{directory.path} records no held-out or validation rows: pass prompts=[...]."
            )
        prompts = examples.rows[:rows]
    if not prompts:
        raise WorkbenchError("`prompts` is empty: give at least one question or row.")
    if all(isinstance(p, dict) for p in prompts):
        pairs = [template.render(r, tokenizer, f"prompts[{i}]") for i, r in enumerate(prompts)]
        rendered, own = [p for p, _ in pairs], [r for _, r in pairs]
        questions = [question_of(r) for r in prompts]
    elif all(isinstance(p, str) for p in prompts):
        rendered = [template.prompt_for_text(p, tokenizer) for p in prompts]
        own, questions = None, list(prompts)
    else:
        raise WorkbenchError("`prompts` mixes texts and rows: give questions or rows, not both.")
    if references is not None and len(references) != len(prompts):
        raise WorkbenchError(
            f"`references` has {len(references)} answers for {len(prompts)} prompts: give one "
            "reference a prompt."
        )
    chosen = list(references) if references is not None else own
    return CheckpointAnswers(Path(directory.path), rendered, questions, chosen)


def _score(result: CheckpointAnswers, step: int, metrics: tuple[str, ...]) -> None:
    names = tuple(dict.fromkeys(("exact_match", *metrics)))
    totals, per_row = score_answers(result.answers[step], result.references, names)
    result.scores[step] = totals
    result.matched[step] = [row["exact_match"] >= 1.0 for row in per_row]


def _unique_labels(questions: list[str], width: int = 60) -> list[str]:
    """Short column labels, one a question: what differs between them (`distinct_parts`), its
    start and its end when long, numbered where two would still read the same."""
    labels = []
    for i, question in enumerate(distinct_parts(questions)):
        label = " ".join(question.split())
        if len(label) > width:
            head = width // 3
            label = label[:head] + "…" + label[-(width - head - 1) :]
        labels.append(label if label not in labels else f"{label} ({i})")
    return labels
