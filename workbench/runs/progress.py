"""A terminal progress bar for a Run: tqdm with ETA, tokens/s and loss, fed by its events.

The demo and `python -m workbench train` show the same bar; the notebook's TrainingMonitor
follows the same `step` events with live plots instead.
"""

from __future__ import annotations


def progress_bar(run):
    """Subscribe a tqdm bar to `run`'s events (step: advance with loss and tokens/s;
    evaluation: print the validation loss; the end of the run: close it). Returns the bar."""
    from tqdm.auto import tqdm

    bar = tqdm(total=None, unit="step", desc="training", dynamic_ncols=True)

    def on_step(event: dict) -> None:
        if bar.total is None:
            bar.total = event["max_steps"]
        speed = event.get("tokens_per_second")
        bar.set_postfix(loss=f"{event['loss']:.3f}", tok_s=f"{speed:.0f}" if speed else "-")
        bar.update(event["step"] - bar.n)

    def on_eval(event: dict) -> None:
        if event.get("eval_loss") is not None:
            bar.write(f"  step {event['step']:>3}: validation loss {event['eval_loss']:.3f}")

    run.add_callback("step", on_step)
    run.add_callback("evaluation", on_eval)
    for end in ("stopped", "finished", "failed"):
        run.add_callback(end, lambda e: bar.close())
    return bar
