"""The Trainer bridge: a TrainerCallback that turns the Trainer's hooks into a Run's events.

Every kind of run (instruction tuning with the project's Trainer, DPO with TRL's) passes
`event_bridge(run)` among its Trainer's callbacks, so all of them emit the same events, into the
same files, for the same panels.
"""

from __future__ import annotations

import math

from workbench.evaluation.metrics import load_metric
from workbench.model.generation import Decoding, generate
from workbench.runs.directory import TENSORBOARD
from workbench.runs.hyperparameters import direct_trackers
from workbench.runs.run import Run


def event_bridge(run: Run):
    """A TrainerCallback that turns the Trainer's hooks into the Run's events: `started`,
    `step` (and Stop, and NaN), `evaluation` with sample answers, `checkpoint`. Every kind of
    run uses it (defined in a function so that `import workbench` does not import
    transformers)."""
    from transformers import TrainerCallback

    context = run.context
    decoding = Decoding(max_new_tokens=context.sample_max_new_tokens)

    class EventBridge(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            run.emit(
                "started",
                step=state.global_step,
                max_steps=state.max_steps,
                run_dir=str(run.run_dir),
                parameters=str(context.parameters),
                batch_size=args.per_device_train_batch_size,
                predicted_memory=str(context.fit) if context.fit is not None else None,
            )

        def on_step_end(self, args, state, control, **kwargs):
            if run.stop_requested:  # stop after this step, with a checkpoint to resume from
                control.should_training_stop = True
                control.should_save = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and not run.on_step_log(state, logs):
                control.should_training_stop = True
                control.should_save = False  # never checkpoint NaN weights
                control.should_evaluate = False
            return control

        def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
            _emit_evaluation(run, state.global_step, metrics or {}, model, decoding)
            run.restart_step_clock()

        def on_save(self, args, state, control, **kwargs):
            run.mark_checkpoint(state)  # first mark the new one complete, then rotate the old
            keep = context.hyperparameters.keep_checkpoints
            run.directory.rotate_checkpoints(keep, protect=state.best_model_checkpoint)

    return EventBridge()


def bridged(trainer, run: Run):
    """`trainer` as every kind of run uses it (its `callbacks` hold `event_bridge(run)`): the
    Run's events instead of the Trainer's printed log dicts, and the trackers (TensorBoard)
    writing into the run directory. Returns the trainer."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    direct_trackers(trainer, run.directory.file(TENSORBOARD))
    return trainer


def _emit_evaluation(run: Run, step: int, metrics: dict, model, decoding: Decoding) -> None:
    """The `evaluation` event (validation loss, exact match on the scored rows), then the
    `samples` event with the answers shown, also appended to samples.jsonl."""
    context = run.context
    prompts, references = context.sample_prompts, context.references
    loss = metrics.get("eval_loss")
    perplexity = math.exp(loss) if loss is not None and loss < 50 else None
    answers = generate(model, context.tokenizer, prompts, decoding) if model is not None else []
    scored = min(context.scored_rows, len(answers))
    run.emit(
        "evaluation",
        step=step,
        eval_loss=loss,
        perplexity=perplexity,
        exact_match=_exact_match(answers[:scored], references[:scored]),
        scored_rows=scored,
        **extra_evaluation_metrics(metrics),
    )
    shown = context.samples_shown
    if answers and shown:
        rows = [
            {"prompt": p, "reference": r, "answer": a}
            for p, r, a in zip(prompts[:shown], references, answers)
        ]
        record = run.emit("samples", step=step, samples=rows)
        run.directory.append_samples(record)


# What the Trainer itself adds to every evaluation's metrics: timings, not results.
TRAINER_EVAL_KEYS = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def extra_evaluation_metrics(metrics: dict) -> dict:
    """A run type's own `eval_*` results beside the loss (a classifier's `eval_accuracy` and
    `eval_confusion_matrix`, as its `compute_metrics` returns them), under the Trainer's
    names: numbers, and lists (a matrix as a list of rows, the labels it is ordered by)."""
    return {
        key: value
        for key, value in metrics.items()
        if key.startswith("eval_")
        and key != "eval_loss"
        and key not in TRAINER_EVAL_KEYS
        and isinstance(value, (int, float, list))
        and not isinstance(value, bool)
    }


def _exact_match(answers: list[str], references: list[str]) -> float | None:
    """Share of answers equal to their reference (normalised), None without rows."""
    if not answers:
        return None
    result = load_metric("exact_match").compute(predictions=answers, references=references)
    return float(result["exact_match"])
