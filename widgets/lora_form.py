"""LoraForm: every training-method setting and the key hyperparameters, with live consequences.

Each change shows the trainable parameters and the predicted peak memory (computed from the
model's config by `workbench.memory`, so the user's model is never touched). Invalid
combinations are explained inline by the library's own validation; the last valid settings
stay in the `method` and `hyperparameters` traits (`valid` says whether the controls hold
them). "Copy as code" shows the equivalent library call.
"""

from __future__ import annotations

import typing
import warnings

import ipywidgets as widgets
import traitlets

import workbench
from workbench.interfaces.code import script, settings_code
from workbench.model import memory
from workbench.model.methods import Method, check_method, linear_layer_names
from workbench.runs import fitting
from workbench.runs.hyperparameters import Hyperparameters
from workbench.widgets._common import (
    Panel,
    ShowsCode,
    escape,
    heading,
    html_table,
    setting_control,
)

LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ALL_LINEAR = "all-linear"


def choices(settings: type, name: str) -> list[str]:
    """The values a `Literal[...]` field of a settings dataclass allows, in its order."""
    return list(typing.get_args(typing.get_type_hints(settings)[name]))


# The hyperparameters the form shows, and the widget that edits each.
HYPERPARAMETER_WIDGETS = {
    "learning_rate": widgets.FloatText,
    "lr_scheduler": lambda **kw: widgets.Dropdown(
        options=choices(Hyperparameters, "lr_scheduler"), **kw
    ),
    "warmup": widgets.FloatText,
    "epochs": widgets.FloatText,
    "max_steps": widgets.IntText,
    "batch_size": widgets.IntText,
    "gradient_accumulation": widgets.IntText,
    "max_length": widgets.IntText,
    "completion_only": lambda **kw: widgets.Checkbox(indent=False, **kw),
    "weight_decay": widgets.FloatText,
    "eval_every": widgets.IntText,
    "eval_metric_rows": widgets.IntText,
    "early_stopping_patience": widgets.IntText,
    "seed": widgets.IntText,
    "gradient_checkpointing": lambda **kw: widgets.Checkbox(indent=False, **kw),
    "packing": lambda **kw: widgets.Checkbox(indent=False, **kw),
    "compile": lambda **kw: widgets.Checkbox(indent=False, **kw),
    "auto_batch": lambda **kw: widgets.Checkbox(indent=False, **kw),
    # experiment tracking: TensorBoard writes into the run directory, off by default
    "report_to": lambda **kw: widgets.Dropdown(options=choices(Hyperparameters, "report_to"), **kw),
}


class LoraForm(ShowsCode, Panel):
    """A form for `Method` and `Hyperparameters` with live parameter and memory estimates.

    `model` is a loaded model, its config, or None (`set_model` changes it). The `rows` trait,
    the training rows as `workbench.tokenize_examples` returns them, makes the memory estimate
    the one `train()` will make for them (their mean length packed, only their response
    logits); without them every row counts as `max_length` tokens, all logits kept: an upper
    bound. Children a test or a notebook can drive:
    `method_controls` and `hyperparameter_controls` (dicts: field name -> widget; `kind` is
    ToggleButtons), `target_checkboxes` (dict: layer name -> Checkbox), `all_linear`
    (Checkbox), `copy_button`; outputs: `summary` (HTML), `code` (CodeArea), `error`.
    Result traits: `method`, `hyperparameters` (the last valid ones) and `valid`.
    `follow(editor, examples)` links the form to a TemplateEditor: its max_length and
    completion_only, and `examples` (the `training_examples` trait) tokenized as its template
    does, after every edit.
    """

    dom_class = "wb-lora-form"

    method = traitlets.Instance(Method, help="the last valid training method")
    hyperparameters = traitlets.Instance(Hyperparameters, help="the last valid hyperparameters")
    valid = traitlets.Bool(True, help="False while a control holds an invalid setting")
    rows = traitlets.Any(None, allow_none=True, help="tokenized training rows, or None")
    training_examples = traitlets.Instance(
        workbench.Examples, allow_none=True, help="rows that `follow` tokenizes into `rows`"
    )

    def __init__(
        self,
        model=None,
        *,
        method: Method | None = None,
        hyperparameters: Hyperparameters | None = None,
        batch_size: int = 8,
        seq_length: int = 256,
        rows=None,
    ) -> None:
        super().__init__()
        self.model = model
        self._use(rows)
        self.model_config = getattr(model, "config", model)
        self.rows = rows  # set before its observer: the first estimate uses them
        if hyperparameters is None:
            hyperparameters = Hyperparameters(batch_size=batch_size, max_length=seq_length)
        elif (batch_size, seq_length) != (8, 256) and (batch_size, seq_length) != (
            hyperparameters.batch_size,
            hyperparameters.max_length,
        ):
            warnings.warn(
                "LoraForm: `batch_size`/`seq_length` are ignored because `hyperparameters` "
                f"sets batch_size={hyperparameters.batch_size} and "
                f"max_length={hyperparameters.max_length}.",
                stacklevel=2,
            )
        self.method, self.hyperparameters = method or Method(), hyperparameters
        self.parameter_count, self.memory, self.fit = None, None, None
        self._build_method_controls(self.method)
        self._build_hyperparameter_controls(hyperparameters)
        self.summary = widgets.HTML()
        self._build_code("6em")
        self._layout()
        self._on_change()
        self.observe(self._on_rows, names="rows")

    # --- building -----------------------------------------------------------------------

    def _build_method_controls(self, method: Method) -> None:
        def control(name: str, make, **options):
            return setting_control(Method, name, make, value=getattr(method, name), **options)

        self.method_controls = {
            "kind": control("kind", widgets.ToggleButtons, options=choices(Method, "kind")),
            "r": control("r", widgets.IntText),
            "alpha": control("alpha", widgets.FloatText),
            "dropout": control("dropout", widgets.FloatText),
            "bias": control("bias", widgets.Dropdown, options=choices(Method, "bias")),
            "use_rslora": control("use_rslora", widgets.Checkbox, indent=False),
            "use_dora": control("use_dora", widgets.Checkbox, indent=False),
            "freeze_layers": control("freeze_layers", widgets.IntText),
        }
        chosen = method.target_modules
        self.all_linear = widgets.Checkbox(
            value=chosen == ALL_LINEAR,
            description=ALL_LINEAR,
            tooltip=Method.field_text("target_modules")[1],
        )
        self.targets_box = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self._build_target_checkboxes(chosen)
        for control in [*self.method_controls.values(), self.all_linear]:
            control.observe(self._on_change, names="value")

    def _build_target_checkboxes(self, chosen: str | list[str]) -> None:
        """One checkbox per linear layer name of the model (or its config)."""
        if self.model is not None and hasattr(self.model, "named_modules"):
            names = linear_layer_names(self.model)
        else:
            names = self._config_linear_names()
        self.target_checkboxes = {
            name: widgets.Checkbox(
                value=chosen == ALL_LINEAR or name in chosen,
                description=name,
                indent=False,
                layout=widgets.Layout(width="110px"),
            )
            for name in names
        }
        for box in self.target_checkboxes.values():
            box.observe(self._on_change, names="value")
        self.targets_box.children = [self.all_linear, *self.target_checkboxes.values()]

    def set_model(self, model) -> None:
        """Estimate for another model (or config): its layers become the target choices."""
        self.model, self.model_config = model, getattr(model, "config", model)
        self._build_target_checkboxes(self.method.target_modules)
        self._on_change()

    def _config_linear_names(self) -> list[str]:
        """The config's linear layer names; Llama's without a model; none for unknown types
        (then only 'all-linear' is offered, which PEFT resolves on the model itself)."""
        if self.model_config is None:
            return LLAMA_LINEAR
        try:
            return list(memory.linear_shapes(self.model_config))
        except memory.UnsupportedModelError:
            return []

    def _build_hyperparameter_controls(self, hyperparameters: Hyperparameters) -> None:
        self.hyperparameter_controls = {}
        for name, make in HYPERPARAMETER_WIDGETS.items():
            value = getattr(hyperparameters, name)
            control = setting_control(Hyperparameters, name, make, value=value)
            control.observe(self._on_change, names="value")
            self.hyperparameter_controls[name] = control

    def _layout(self) -> None:
        m, h = self.method_controls, list(self.hyperparameter_controls.values())
        lora_row = [m["r"], m["alpha"], m["dropout"], m["bias"]]
        self.children = [
            heading("Method"),
            m["kind"],
            widgets.GridBox(
                lora_row, layout=widgets.Layout(grid_template_columns="repeat(2, 50%)")
            ),
            widgets.HBox([m["use_rslora"], m["use_dora"], m["freeze_layers"]]),
            heading("Target modules"),
            self.targets_box,
            heading("Hyperparameters"),
            widgets.GridBox(h, layout=widgets.Layout(grid_template_columns="repeat(3, 33%)")),
            self.error,
            self.summary,
            self.copy_button,
            self.code,
        ]

    # --- live updates -------------------------------------------------------------------

    def _read_target_modules(self) -> str | list[str]:
        """'all-linear' or the ticked layer names (the boxes grey out under 'all-linear')."""
        for box in self.target_checkboxes.values():
            box.disabled = self.all_linear.value
        if self.all_linear.value:
            return ALL_LINEAR
        return [name for name, box in self.target_checkboxes.items() if box.value]

    def _on_change(self, change=None) -> None:
        """Validate the settings; keep the last valid ones; update the estimates."""
        problems: list[str] = []
        values = {name: c.value for name, c in self.method_controls.items()}
        targets = self._read_target_modules()
        method = _validated(problems, lambda: Method(**values, target_modules=targets))
        changes = {name: c.value for name, c in self.hyperparameter_controls.items()}
        hyperparameters = _validated(problems, lambda: self.hyperparameters.replace(**changes))
        method, hyperparameters = method or self.method, hyperparameters or self.hyperparameters
        try:  # the model can still reject them (freeze_layers beyond its layers, unknown targets)
            self._show_estimate(method, hyperparameters)
        except workbench.WorkbenchError as error:
            problems.append(str(error))
        else:
            with self.hold_trait_notifications():  # observers see both settings together
                self.method, self.hyperparameters = method, hyperparameters
        if problems:
            kept = "The last valid settings are kept until this is fixed."
            self.error.show("\n".join([*problems, kept]))
        else:
            self.error.clear()
        self.valid = not problems
        self._refresh_code()

    def _show_estimate(self, method: Method, hp: Hyperparameters) -> None:
        """Trainable parameters and memory for these settings; raises WorkbenchError."""
        if self.model is not None and hasattr(self.model, "parameters"):
            check_method(self.model, method)  # e.g. qlora on a full-precision model
        if self.model_config is None:
            self.summary.value = (
                "<i>Pass a model (or its config) to see trainable parameters and memory.</i>"
            )
            return
        try:
            self.fit = self._fit(method, hp)
        except memory.UnsupportedModelError as error:  # no estimate, but the settings stand
            self.summary.value = f"<i>No estimate: {escape(error)}</i>"
            self.parameter_count, self.memory, self.fit = None, None, None
            return
        estimate = self.fit.estimate
        self.parameter_count, self.memory = estimate.parameters, estimate
        rows = [
            [name, memory.format_bytes(value)] for name, value in estimate.terms().items() if value
        ]
        lengths = fitting.capped_lengths(self.row_lengths, hp.max_length)
        if lengths:
            basis = (
                f"batches of {hp.batch_size} of your {len(lengths)} rows, "
                f"{sum(lengths) / len(lengths):.0f} tokens on average"
            )
        else:
            basis = f"batch {hp.batch_size} x {hp.max_length} tokens, an upper bound"
        self.summary.value = (
            f"<b>Trainable</b>: {escape(estimate.parameters)}<br>"
            f"<b>Predicted peak memory</b> (an estimate for {basis}): "
            f"<b>{memory.format_bytes(estimate.total)}</b>"
            + html_table(["term", "size"], rows)
            + self._fit_line()
        )

    def use_rows(self, rows) -> None:
        """Predict memory for these tokenized training rows from now on (None: upper bound);
        the same as setting the `rows` trait."""
        self.rows = rows

    def follow(self, editor, examples: workbench.Examples | None = None) -> LoraForm:
        """Take max_length and completion_only from a TemplateEditor (greyed out here), and
        predict memory for `examples` as its template tokenizes them, now and after each edit.
        `examples` may also arrive later through the `training_examples` trait."""
        for name in ("max_length", "completion_only"):
            control = self.hyperparameter_controls[name]
            control.disabled, control.tooltip = True, "set in the template editor"
            traitlets.dlink((editor, name), (control, "value"))
        self._editor, self._rows_from = editor, None
        settings = ["template", "max_length", "completion_only", "valid", "tokenizer"]
        editor.observe(self._on_training_setting, names=settings)
        self.observe(self._on_training_setting, names="training_examples")
        if examples is not None:
            self.training_examples = examples  # its observer tokenizes them
        else:
            self._tokenize_training_examples()
        return self

    def _on_training_setting(self, change) -> None:
        self._tokenize_training_examples()

    def _tokenize_training_examples(self) -> None:
        """`rows`: the training examples as the followed editor tokenizes them (None: none)."""
        editor, examples = self._editor, self.training_examples
        if examples is None or editor.tokenizer is None:
            self._rows_from, self.rows = None, None  # no rows: an upper bound
            return
        if not editor.valid:
            return  # the last rows stand until the template renders again
        source = (examples, editor.template, editor.max_length, editor.completion_only)
        last = self._rows_from
        if last is not None and source[0] is last[0] and source[1:] == last[1:]:
            return  # e.g. template and max_length arrived as two notifications
        try:
            rows = workbench.tokenize_examples(
                examples,
                editor.template,
                editor.tokenizer,
                max_length=editor.max_length,
                completion_only=editor.completion_only,
            )
        except workbench.WorkbenchError as error:  # e.g. a row the template cannot render
            self._rows_from, self.rows = None, None
            self.error.show(f"Cannot tokenize the training rows, so memory is a bound: {error}")
            return
        self._rows_from, self.rows = source, rows

    def _on_rows(self, change) -> None:
        self._use(change["new"])
        self._on_change()

    def _use(self, rows) -> None:
        self.row_lengths, self.response_fraction = (
            fitting.row_statistics(rows) if rows is not None else (None, 1.0)
        )

    def _fit(self, method: Method, hp: Hyperparameters) -> fitting.Fit:
        """The estimate `train()` will print, and whether it fits on the model's device now."""
        loaded = self.model is not None and hasattr(self.model, "parameters")
        target = fitting.Target.of(self.model if loaded else self.model_config)
        return fitting.predict_fit(target, method, hp, self.row_lengths, self.response_fraction)

    def _fit_line(self) -> str:
        fit = self.fit
        usable = memory.format_bytes(fit.available)
        if fit.fits:
            return f"<div class='wb-fits'>✓ fits in the {usable} usable on {fit.device}</div>"
        return (
            f"<div class='wb-does-not-fit' style='color:#b00'>✗ does not fit in the {usable} "
            f"usable on {fit.device}. {escape(fit.advice)}</div>"
        )

    # --- results ------------------------------------------------------------------------

    def as_code(self) -> str:
        """Python that reproduces `.method` and `.hyperparameters` with the library alone."""
        return script(settings_code(self.method, self.hyperparameters))

    def static_html(self) -> str:
        rows = [*self.method.to_dict().items(), *self.hyperparameters.to_dict().items()]
        return (
            "<b>LoraForm</b>"
            + self.error.value
            + self.summary.value
            + html_table(["setting", "value"], rows)
        )

    def static_text(self) -> str:
        lines = ["LoraForm", self.as_code()]
        if self.memory is not None:
            lines += [f"Trainable: {self.parameter_count}", f"Memory: {self.memory}"]
        if self.error.message:
            lines.append(f"Error: {self.error.message}")
        return "\n".join(lines)


def _validated(problems: list[str], build):
    """`build()`, or None with its WorkbenchError's message appended to `problems`."""
    try:
        return build()
    except workbench.WorkbenchError as error:
        problems.append(str(error))
        return None
