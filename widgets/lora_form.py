"""LoraForm: every training-method setting and the key hyperparameters, with live consequences.

Each change shows the trainable parameters and the predicted peak memory (computed from the
model's config by `workbench.memory`, so the user's model is never touched). Invalid
combinations are explained inline by the library's own validation; the last valid settings
stay in `.method` and `.hyperparameters`. "Copy as code" shows the equivalent library call.
"""

from __future__ import annotations

import warnings

import ipywidgets as widgets

import workbench
from widgets._common import ErrorArea, StaticFallback, escape, heading, html_table
from workbench import fitting, memory
from workbench.adapters import Method, check_method, linear_layer_names
from workbench.hyperparameters import Hyperparameters

LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ALL_LINEAR = "all-linear"
SCHEDULERS = ["cosine", "linear", "constant", "constant_with_warmup"]
# The hyperparameters the form shows, and the widget that edits each.
HYPERPARAMETER_WIDGETS = {
    "learning_rate": widgets.FloatText,
    "lr_scheduler": lambda **kw: widgets.Dropdown(options=SCHEDULERS, **kw),
    "warmup": widgets.FloatText,
    "epochs": widgets.FloatText,
    "max_steps": widgets.IntText,
    "batch_size": widgets.IntText,
    "gradient_accumulation": widgets.IntText,
    "max_length": widgets.IntText,
    "weight_decay": widgets.FloatText,
    "eval_every": widgets.IntText,
    "eval_metric_rows": widgets.IntText,
    "early_stopping_patience": widgets.IntText,
    "seed": widgets.IntText,
    "gradient_checkpointing": lambda **kw: widgets.Checkbox(indent=False, **kw),
    "packing": lambda **kw: widgets.Checkbox(indent=False, **kw),
    "compile": lambda **kw: widgets.Checkbox(indent=False, **kw),
    "auto_batch": lambda **kw: widgets.Checkbox(indent=False, **kw),
}


class LoraForm(StaticFallback, widgets.VBox):
    """A form for `Method` and `Hyperparameters` with live parameter and memory estimates.

    `model` is a loaded model, its config, or None. `rows`, the training rows as
    `workbench.tokenize_examples` returns them, makes the memory estimate the one `train()` will
    make for them (their mean length packed, only their response logits); without them every
    row counts as `max_length` tokens, all logits kept: an upper bound.
    Children a test or a notebook can drive:
    `method_controls` and `hyperparameter_controls` (dicts: field name -> widget; `kind` is
    ToggleButtons), `target_checkboxes` (dict: layer name -> Checkbox), `all_linear`
    (Checkbox), `copy_button`; outputs: `summary` (HTML), `code` (Textarea), `error`.
    """

    dom_class = "wb-lora-form"

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
        self._method = method or Method()
        self._hyperparameters = hyperparameters
        self.parameter_count, self.memory, self.fit = None, None, None
        self._build_method_controls(self._method)
        self._build_hyperparameter_controls(hyperparameters)
        self.error = ErrorArea()
        self.summary = widgets.HTML()
        self.copy_button = widgets.Button(description="copy as code", icon="code")
        self.code = widgets.Textarea(layout=widgets.Layout(width="100%", height="6em"))
        self.code.layout.display = "none"
        self.copy_button.on_click(self.show_code)
        self._layout()
        self._on_change()

    # --- building -----------------------------------------------------------------------

    def _build_method_controls(self, method: Method) -> None:
        self.method_controls = {
            "kind": widgets.ToggleButtons(
                options=["lora", "qlora", "full", "freeze"], value=method.kind, description="kind"
            ),
            "r": widgets.IntText(value=method.r, description="r"),
            "alpha": widgets.FloatText(value=method.alpha, description="alpha"),
            "dropout": widgets.FloatText(value=method.dropout, description="dropout"),
            "bias": widgets.Dropdown(
                options=["none", "all", "lora_only"], value=method.bias, description="bias"
            ),
            "use_rslora": widgets.Checkbox(value=method.use_rslora, description="use_rslora"),
            "use_dora": widgets.Checkbox(value=method.use_dora, description="use_dora"),
            "freeze_layers": widgets.IntText(
                value=method.freeze_layers, description="freeze_layers"
            ),
        }
        if self.model is not None and hasattr(self.model, "named_modules"):
            names = linear_layer_names(self.model)
        else:
            names = self._config_linear_names()
        chosen = method.target_modules
        self.all_linear = widgets.Checkbox(value=chosen == ALL_LINEAR, description=ALL_LINEAR)
        self.target_checkboxes = {
            name: widgets.Checkbox(
                value=chosen == ALL_LINEAR or name in chosen,
                description=name,
                indent=False,
                layout=widgets.Layout(width="110px"),
            )
            for name in names
        }
        for control in [*self.method_controls.values(), *self.target_checkboxes.values()]:
            control.observe(self._on_change, names="value")
        self.all_linear.observe(self._on_change, names="value")

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
            control = make(value=getattr(hyperparameters, name), description=name)
            control.style.description_width = "initial"
            control.observe(self._on_change, names="value")
            self.hyperparameter_controls[name] = control

    def _layout(self) -> None:
        m, h = self.method_controls, list(self.hyperparameter_controls.values())
        lora_row = [m["r"], m["alpha"], m["dropout"], m["bias"]]
        targets = widgets.HBox(
            [self.all_linear, *self.target_checkboxes.values()],
            layout=widgets.Layout(flex_flow="row wrap"),
        )
        self.children = [
            heading("Method"),
            m["kind"],
            widgets.GridBox(
                lora_row, layout=widgets.Layout(grid_template_columns="repeat(2, 50%)")
            ),
            widgets.HBox([m["use_rslora"], m["use_dora"], m["freeze_layers"]]),
            heading("Target modules"),
            targets,
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
        hyperparameters = _validated(problems, lambda: self._hyperparameters.replace(**changes))
        method, hyperparameters = method or self._method, hyperparameters or self._hyperparameters
        try:  # the model can still reject them (freeze_layers beyond its layers, unknown targets)
            self._show_estimate(method, hyperparameters)
            self._method, self._hyperparameters = method, hyperparameters
        except workbench.WorkbenchError as error:
            problems.append(str(error))
        if problems:
            kept = "The last valid settings are kept until this is fixed."
            self.error.show("\n".join([*problems, kept]))
        else:
            self.error.clear()
        if self.code.layout.display != "none":
            self.show_code()

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
        lengths = self._lengths(hp)
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
        """Predict memory for these tokenized training rows from now on (None: upper bound)."""
        self._use(rows)
        self._on_change()

    def _use(self, rows) -> None:
        self.row_lengths, self.response_fraction = (
            fitting.row_statistics(rows) if rows is not None else (None, 1.0)
        )

    def _lengths(self, hp: Hyperparameters) -> list[int] | None:
        """The rows' token lengths as `max_length` cuts them; None without rows."""
        if not self.row_lengths:
            return None
        return [min(n, hp.max_length) for n in self.row_lengths]

    def _fit(self, method: Method, hp: Hyperparameters):
        """The estimate and whether it fits on the model's device now: for the given rows as
        `train()` computes it, else with every row at max_length and every logit kept."""
        device = str(getattr(self.model, "device", "cpu"))
        target = fitting.Target(self.model_config, self._dtype_bytes(), device)
        lengths = self._lengths(hp)
        if lengths:
            return fitting.fit_for(target, method, hp, lengths, self.response_fraction)
        return fitting.fit_for(target, method, hp, [hp.max_length], 1.0)

    def _fit_line(self) -> str:
        fit = self.fit
        usable = memory.format_bytes(fit.available)
        if fit.fits:
            return f"<div class='wb-fits'>✓ fits in the {usable} usable on {fit.device}</div>"
        return (
            f"<div class='wb-does-not-fit' style='color:#b00'>✗ does not fit in the {usable} "
            f"usable on {fit.device}. {escape(fit.advice)}</div>"
        )

    def _dtype_bytes(self) -> int:
        dtype = getattr(self.model, "dtype", None)
        return getattr(dtype, "itemsize", 4) if dtype is not None else 4

    # --- results ------------------------------------------------------------------------

    def show_code(self, _button=None) -> None:
        """Show the library calls that rebuild the current settings."""
        self.code.value = self.as_code()
        self.code.layout.display = None

    def as_code(self) -> str:
        """Python that reproduces `.method` and `.hyperparameters` with the library alone."""
        return "\n".join(
            [
                "from workbench import Hyperparameters, Method",
                "",
                self._method.to_code("method"),
                self._hyperparameters.to_code("hyperparameters"),
            ]
        )

    @property
    def method(self) -> Method:
        """The last valid training method."""
        return self._method

    @property
    def hyperparameters(self) -> Hyperparameters:
        """The last valid hyperparameters."""
        return self._hyperparameters

    def static_html(self) -> str:
        rows = [*self._method.to_dict().items(), *self._hyperparameters.to_dict().items()]
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
