"""The Train tab's controls for tasks in sequence (train task A, then go on with task B).

After a run, Train continues that run's model; these controls say so ("continues <run> (task
...)") and choose what holds the earlier tasks while the next one trains: a remedy from
`workbench.training.remedies.REMEDIES` (whatever is registered there shows up), its strength
and the replay share. `track importance` makes a run measure synaptic-intelligence importance,
which an SI stage after it needs. The stage itself is planned by the library (`plan_stage`),
exactly as `train_sequence` plans its stages.
"""

from __future__ import annotations

import dataclasses
import html
from typing import Any

import ipywidgets as widgets

from workbench.training.remedies import REMEDIES, StagePlan, plan_stage

COST_NOTE = (
    "Measures how much each trained weight mattered, so that synaptic intelligence can hold "
    "it while a later task trains. LoRA: 3 extra copies of the adapter in the run's "
    "importance/ folder (small). Full fine-tuning: 3 extra copies of the model's weights, in "
    "memory while training and on disk in importance/."
)


BASELINE = "none"  # the dropdown's value for no remedy (a None value would show blank)


def remedy_options() -> list[tuple[str, str]]:
    """(label, value) of every registered remedy; the baseline (no remedy) is "none"."""
    return [(name or BASELINE, name or BASELINE) for name in REMEDIES]


class SequenceControls(widgets.VBox):
    """`continues_html` (what the next Train starts from), `remedy` (Dropdown of
    `remedy_options()`), `strength` (Text; blank: the remedy's default), `replay_share`
    (BoundedFloatText), `track_importance` (Checkbox, on by default for LoRA, off for full
    fine-tuning, following the Method tab through `follow(form)`). The remedy row shows only
    while there is an earlier run to continue (`show_previous`)."""

    def __init__(self) -> None:
        super().__init__()
        self.continues_html = widgets.HTML()
        self.remedy = widgets.Dropdown(
            options=remedy_options(), value=BASELINE, description="Remedy"
        )
        self.strength = widgets.Text(
            value="",
            description="strength",
            placeholder="remedy default",
            tooltip="The penalty's strength; blank: the remedy's default (EWC 100, SI 1).",
        )
        self.replay_share = widgets.BoundedFloatText(
            value=0.2,
            min=0.0,
            max=0.9,
            step=0.05,
            description="replay share",
            tooltip="The share of the training rows drawn from the earlier tasks (replay).",
        )
        self.track_importance = widgets.Checkbox(
            value=True,
            description="track importance (for synaptic intelligence later)",
            indent=False,
            layout=widgets.Layout(width="auto"),  # the whole label, not cut
            tooltip=COST_NOTE,
        )
        self.cost_html = widgets.HTML()
        self._uses_lora: bool | None = None
        self.remedy_row = widgets.HBox([self.remedy, self.strength, self.replay_share])
        self.remedy.observe(lambda _: self._show_settings(), names="value")
        self.track_importance.observe(lambda _: self._show_cost(), names="value")
        self.children = [
            self.continues_html,
            self.remedy_row,
            widgets.HBox([self.track_importance, self.cost_html]),
        ]
        self.show_previous(None, None)

    @property
    def chosen_remedy(self) -> str | None:
        """The remedy's registered name; None for none (the baseline)."""
        value = self.remedy.value
        return None if value in (None, BASELINE) else value

    def follow(self, form) -> SequenceControls:
        """Default `track_importance` to the Method tab's kind: on for LoRA, off otherwise
        (a change of kind sets it again; other changes of the method leave the user's tick)."""
        form.observe(lambda change: self._method_changed(change["new"]), names="method")
        self._method_changed(form.method)
        return self

    def _method_changed(self, method) -> None:
        if method is None or method.uses_lora == self._uses_lora:
            return
        self._uses_lora = method.uses_lora
        self.track_importance.value = method.uses_lora
        self._show_cost()

    def show_previous(self, run, rows) -> None:
        """Say what the next Train starts from: `run` (its training rows `rows`) or, with None,
        the loaded model; the remedy row shows only when there is an earlier task to keep."""
        if run is None:
            self.continues_html.value = "Train starts from the loaded model."
        else:
            tasks = ", ".join(sorted(rows.tasks)) if rows is not None and rows.tasks else ""
            task = f" (task {html.escape(tasks)})" if tasks else ""
            self.continues_html.value = (
                f"Train continues <code>{html.escape(run.run_dir.name)}</code>{task}: its "
                "weights go on training on the rows loaded now. Against forgetting the earlier "
                "task(s):"
            )
        chosen = self.remedy.value
        self.remedy.options = remedy_options()  # remedies registered since are offered too
        self.remedy.value = chosen if chosen in REMEDIES else BASELINE
        self.remedy_row.layout.display = "none" if run is None else None
        self._show_settings()

    def _show_settings(self) -> None:
        """Replay takes a share, a penalty a strength; the baseline neither."""
        name = self.chosen_remedy
        self.replay_share.layout.display = None if name == "replay" else "none"
        self.strength.layout.display = "none" if name in (None, "replay") else None

    def _show_cost(self) -> None:
        full = self._uses_lora is False and self.track_importance.value
        self.cost_html.value = (
            "<i>full fine-tuning: stores 3 extra copies of the weights</i>" if full else ""
        )

    def strength_value(self) -> float | None:
        """The typed strength, or None (blank: the remedy's default)."""
        text = self.strength.value.strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value >= 0:  # also catches nan
            raise ValueError(
                f"Train tab: `strength`={text!r} is not a number of 0 or more: type one (e.g. "
                "100 for EWC, 1 for SI) or leave it blank for the remedy's default."
            )
        return value

    def plan(self, state: Any) -> StagePlan:
        """The next run's plan through the library's `plan_stage`: after an earlier run, the
        chosen remedy's; the first run trains its rows as they are. It tracks importance when
        the box is ticked or the remedy needs it (SI)."""
        first = state.previous_run is None
        try:
            plan = plan_stage(
                state.model,
                state.tokenizer,
                state.template,
                [*state.stage_rows, state.train],
                state.stage_runs,
                remedy=None if first else self.chosen_remedy,
                strength=self.strength_value(),
                replay_share=self.replay_share.value,
                seed=state.hyperparameters.seed,
            )
        except FileNotFoundError as error:  # SI after a run that measured no importance
            raise ValueError(
                f"{error} In the Train tab: tick `track importance` before training a task that "
                "synaptic intelligence should hold later, or choose another remedy."
            ) from error
        tracked = plan.track_importance or self.track_importance.value
        return dataclasses.replace(plan, track_importance=tracked)
