"""The bases of the panels whose Train button starts runs: `RunPanel` (one run at a time, Train
off while it trains, the controls every such panel has), `ContinuesTuning` (DPO and RL, which
continue an instruction-tuned model and compare its answers before and after) and `TakesModel`
(a model given, or named and loaded at Train)."""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from workbench.runs.hyperparameters import Hyperparameters
from workbench.tokens.templates import Template, get_template
from workbench.widgets._common import Panel, setting_control
from workbench.widgets._errors import set_enabled
from workbench.widgets.compare_view import CompareView
from workbench.widgets.training_monitor import TrainingMonitor


class RunPanel(Panel):
    """A panel whose button starts training runs, one at a time (`run`: the newest, None
    before): `wait()` waits for the button's work and then for the run it started. A panel
    with a `train_button` that calls `start()` wires it to `train_in_background`: the button
    is off, its tooltip saying why, while the run trains, and on again when it ends. Such a
    panel builds the controls they all have with `_build_step_controls` (read back by
    `_step_settings()`) and `_build_train_controls`."""

    run = None  # set by the panel (an attribute, or a property over its experiment)
    training_reason = "A run is training: stop it in the monitor below, or wait for it to end."

    def _build_train_controls(self, description: str) -> None:
        """`train_button` (pressed: `train_in_background`), the `status` line beside it (first
        `_waiting_text()`) and the `monitor` that follows the run."""
        self.train_button = widgets.Button(
            description=description, icon="play", button_style="success"
        )
        self.status = widgets.HTML(self._waiting_text())
        self.monitor = TrainingMonitor()
        self.train_button.on_click(lambda _: self.train_in_background())

    def _waiting_text(self) -> str:
        """The status line before the first run: what Train will do, or what it needs."""
        raise NotImplementedError

    def _build_step_controls(
        self,
        steps: int,
        learning_rate: float,
        batch_size: int,
        batch: str,
        *,
        most_steps: int = 100_000,
        most_batch: int = 4096,
    ) -> None:
        """The `max_steps`, `learning_rate` and `batch_size` controls (`batch` says what one
        step takes: "pairs/step", ...)."""
        self.max_steps = widgets.BoundedIntText(
            value=steps, min=1, max=most_steps, description="Steps", tooltip="optimizer steps"
        )
        self.learning_rate = setting_control(
            Hyperparameters, "learning_rate", widgets.FloatText, value=learning_rate
        )
        self.batch_size = widgets.BoundedIntText(
            value=batch_size,
            min=1,
            max=most_batch,
            description=batch,
            tooltip=Hyperparameters.field_text("batch_size")[1],
        )
        self.batch_size.style.description_width = "initial"  # "answers/step" whole

    def _step_settings(self) -> dict[str, Any]:
        """What the step controls say, as settings; the run evaluates four times."""
        steps = self.max_steps.value
        return dict(
            max_steps=steps,
            learning_rate=self.learning_rate.value,
            batch_size=self.batch_size.value,
            eval_every=max(1, steps // 4),
        )

    def _monitor_html(self) -> str:
        """The monitor's static view once it has followed a run ('' before)."""
        return self.monitor.static_html() if self.monitor.run is not None else ""

    def train_in_background(self) -> bool:
        """What the Train button does: `start()` on a thread (its error beside the button)."""
        if self.busy:  # refused, with its sentence
            return self.in_background(self.start)
        set_enabled(self.train_button, "Busy with the last press: the status beside says what.")
        return self.in_background(self.start, then=self.show_train_button)

    def show_train_button(self) -> None:
        """Train on exactly when neither the last press's work nor its run is going on."""
        running = self.run is not None and not self.run.done
        # the press's `then` calls this on the worker's own thread: that work is done
        pressing = self.busy and threading.current_thread() is not self._worker
        reason = self.training_reason if running or pressing else None
        set_enabled(self.train_button, reason, self.train_button.description)

    def follow_end(self, run) -> None:
        """Turn Train on again when `run` ends, however it ends."""
        for event in ("finished", "stopped", "failed"):
            run.add_callback(event, lambda _e: self.show_train_button())

    def wait(self, timeout: float | None = None) -> RunPanel:
        """Block until the button's work, the run and what follows it are done."""
        super().wait(timeout)
        if self.run is not None:
            self.run.wait(timeout)
        return self

    def run_summary(self) -> str:
        """`<run id> (<status>)`, or `not started`: the static text's line."""
        return f"{self.run.run_dir.name} ({self.run.status})" if self.run else "not started"


class ContinuesTuning(RunPanel):
    """A run panel that continues an instruction-tuned model (DPO, RL): `set_model(model,
    tokenizer, template, parent)` is called once one is trained; `continues` names what."""

    continues = "training"
    experiment: Any = None  # the library's experiment (its run, before/after measurements)
    compare_rows = 8  # held-out prompts answered by SFT and by SFT+`continues`

    def __init__(self, model, tokenizer, template: Template | str, parent) -> None:
        super().__init__()
        self.model, self.tokenizer, self.parent = model, tokenizer, parent
        self.template = get_template(template)
        self.compare_panel: CompareView | None = None

    @property
    def run(self):
        """The run, once started (None before)."""
        return self.experiment.run if self.experiment is not None else None

    def _check_ready(self) -> None:
        """Raise, saying what to do, when there is no model yet or a run is still going."""
        if self.model is None:
            raise ValueError("No instruction-tuned model yet: train one in the Train tab first.")
        if self.run is not None and not self.run.done:
            raise ValueError(f"{self.continues} is still training: stop it in the monitor first.")

    def _follow(self, experiment) -> None:
        """Show the experiment's run in the monitor, call `_on_end(experiment)` when it ends
        (finished or stopped), and start it."""
        self.experiment, run = experiment, experiment.run
        self.monitor.attach(run)
        for event in ("finished", "stopped"):
            run.add_callback(event, lambda _e: self.guard(self._on_end, experiment))
        self.follow_end(run)
        run.start()
        self.status.value = f"{self.continues} <code>{html.escape(run.run_dir.name)}</code> ..."

    def _experiment_arguments(self) -> dict[str, Any]:
        """What the library's experiment takes from the panel, whatever the method: the
        held-out rows, the model it continues and its parent run, and the rows answered for
        the comparison (`compare_rows`, answered with `decoding`). The panel starts it."""
        return dict(
            held_out=self.held_out.value,
            model=self.model,
            tokenizer=self.tokenizer,
            template=self.template,
            parent=self.parent,
            answer_rows=self.compare_rows,
            decoding=self.decoding,
            start=False,
        )

    def _before_after(self, measures: Callable[[Any], tuple[Any, Any]]) -> list[float | None]:
        """The means of the experiment's held-out measure before and after the run, from
        `measures(experiment)`: (before, after); None where not measured (yet)."""
        if self.experiment is None:
            return [None, None]
        before, after = measures(self.experiment)
        return [before.mean, after.mean if after else None]

    def _show_comparison(self, experiment, after=None) -> None:
        """The SFT answers taken before the run beside the continued model's in `compare_box`:
        `after` (an Evaluation) where the experiment took them, else answered now."""
        view = CompareView(
            experiment.run.model,
            self.tokenizer,
            experiment.answer_rows,
            self.template,
            before=experiment.answers_before,
            after=after,
            titles=("SFT", f"SFT+{self.continues}"),
            decoding=self.decoding,
        )
        if after is None:
            view.run_comparison()
        self.compare_panel = view
        self.compare_box.children = [view]

    def _compare_html(self) -> str:
        """The comparison's static view once there is one ('' before)."""
        return self.compare_panel.static_html() if self.compare_panel is not None else ""

    def set_model(self, model, tokenizer, template: Template | str, parent=None) -> None:
        """The instruction-tuned model (e.g. a finished run's `run.model`) to continue."""
        self.model, self.tokenizer, self.parent = model, tokenizer, parent
        self.template = get_template(template)
        self.status.value = self._waiting_text()

    def _waiting_text(self) -> str:
        if self.model is None:
            return (
                "<i>Train an instruction-tuned model first (Train tab); "
                f"{self.continues} continues it.</i>"
            )
        return f"Ready: {self.continues} continues the instruction-tuned adapter."


class TakesModel(RunPanel):
    """A run panel given a model, or the name of one it loads at Train (the model bar's):
    `ready` and `named` (with `{}` for the name) say which, in its status line."""

    ready = "Ready: training continues the given model."
    named = "Ready: <code>{}</code> is loaded at Train."

    def __init__(self, model, tokenizer, model_name: str | None) -> None:
        super().__init__()
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        self.run = None

    def set_model(self, model=None, tokenizer=None, *, model_name: str | None = None) -> None:
        """The model the next run starts from, or the name of one to load at Train."""
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        self.status.value = self._waiting_text()

    def _model(self):
        """(model, tokenizer): the given ones, or `model_name` loaded once."""
        if self.model is None and self.model_name:
            from workbench.model.loading import load_model

            self.status.value = f"<i>Loading {html.escape(self.model_name)} ...</i>"
            self.model, self.tokenizer = load_model(self.model_name)
        if self.model is None:
            raise ValueError(
                "No model: load one in the model bar (Workbench), or pass model and tokenizer "
                f"to {type(self).__name__}."
            )
        return self.model, self.tokenizer

    def _follow(self, run, *measured) -> None:
        """Show `run` in the monitor, call `_on_end(run, *measured)` when it ends (finished or
        stopped), and start it."""
        self.run = run
        self.monitor.attach(run)
        for event in ("finished", "stopped"):
            run.add_callback(event, lambda _e: self.guard(self._on_end, run, *measured))
        self.follow_end(run)
        run.start()
        self.status.value = f"Training <code>{html.escape(run.run_dir.name)}</code> ..."

    def _waiting_text(self) -> str:
        if self.model is not None:
            return self.ready
        if self.model_name:
            return self.named.format(html.escape(self.model_name))
        return "<i>No model: load one in the model bar (or pass model and tokenizer).</i>"
