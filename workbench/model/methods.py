"""The training method: LoRA, DoRA, rsLoRA, QLoRA, full fine-tuning or freezing the first N layers.

`Method` is the one settings object; `Method.to_peft()` is the one place it becomes a PEFT config,
and `apply_method` prepares a loaded model for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from workbench.errors import WorkbenchError
from workbench.settings import Settings

MethodKind = Literal["lora", "qlora", "full", "freeze"]


@dataclass
class Method(Settings):
    """How the model is adapted.

    - `kind`: 'lora' (small low-rank adapters, base frozen), 'qlora' (LoRA on a 4-bit base:
      load the model with quantization='4bit'), 'full' (every weight trains), or 'freeze'
      (full fine-tuning of the top of the network, the first `freeze_layers` layers frozen).
    - `r`, `alpha`, `dropout`, `target_modules`, `bias`, `use_rslora`, `use_dora`: LoRA settings.
    - `freeze_layers`: with 'freeze', how many bottom layers stay frozen; with LoRA, adapters
      go only on the layers above them (backward stops earlier, so steps are faster).
    """

    kind: MethodKind = field(
        default="lora", metadata={"label": "Kind", "help": "lora, qlora, full or freeze"}
    )
    r: int = field(
        default=16,
        metadata={"label": "Rank r", "help": "LoRA rank: higher learns more, costs memory"},
    )
    alpha: float = field(
        default=32, metadata={"label": "Alpha", "help": "LoRA scale numerator (scale = alpha/r)"}
    )
    dropout: float = field(  # peft's default too: 0.05 costs ~20% of a CPU step (measured)
        default=0.0,
        metadata={
            "label": "Dropout",
            "help": "dropout on the LoRA input (attention dropout for full/freeze); 0 is "
            "fastest, 0.05-0.1 regularises long runs on small data",
        },
    )
    target_modules: str | list[str] = field(
        default="all-linear",
        metadata={
            "label": "Layers adapted",
            "help": "'all-linear' or linear layer names such as ['q_proj', 'v_proj']",
        },
    )
    bias: Literal["none", "all", "lora_only"] = field(
        default="none",
        metadata={"label": "Train biases", "help": "which biases train alongside LoRA"},
    )
    use_rslora: bool = field(
        default=False,
        metadata={
            "label": "Rank-stabilised (rsLoRA)",
            "help": "rank-stabilised scale alpha/sqrt(r): keeps high ranks learning",
        },
    )
    use_dora: bool = field(
        default=False,
        metadata={
            "label": "DoRA",
            "help": "DoRA: learn magnitude and direction separately (slower per step)",
        },
    )
    freeze_layers: int = field(
        default=0,
        metadata={
            "label": "Frozen bottom layers",
            "help": "bottom layers left untouched (freeze: frozen; LoRA: no adapters)",
        },
    )

    def __post_init__(self) -> None:
        self.check_values()
        problems = []
        if self.kind not in ("lora", "qlora", "full", "freeze"):
            problems.append(f"`kind`={self.kind!r}: use 'lora', 'qlora', 'full' or 'freeze'.")
        if self.r < 1:
            problems.append(f"`r`={self.r}: the LoRA rank must be at least 1 (try 8-64).")
        if self.alpha <= 0:
            problems.append(f"`alpha`={self.alpha}: must be positive (commonly 2 x r).")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"`dropout`={self.dropout}: must be in [0, 1) (try 0.05-0.1).")
        if self.freeze_layers < 0:
            problems.append(f"`freeze_layers`={self.freeze_layers}: must be 0 or more.")
        if self.kind == "freeze" and self.freeze_layers == 0:
            problems.append(
                "`kind`='freeze' with `freeze_layers`=0 freezes nothing: set "
                "freeze_layers=N, or use kind='full'."
            )
        if self.kind in ("full", "freeze") and (self.use_dora or self.use_rslora):
            problems.append(
                f"`use_dora`/`use_rslora` are LoRA options but `kind`={self.kind!r}:"
                " set kind='lora' (or 'qlora'), or turn them off."
            )
        if self.bias not in ("none", "all", "lora_only"):
            problems.append(f"`bias`={self.bias!r}: use 'none', 'all' or 'lora_only'.")
        if isinstance(self.target_modules, (list, tuple)) and not self.target_modules:
            problems.append("`target_modules` is empty: use 'all-linear' or name some layers.")
        if problems:
            raise WorkbenchError("Invalid method settings:\n  - " + "\n  - ".join(problems))
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)

    @property
    def uses_lora(self) -> bool:
        return self.kind in ("lora", "qlora")

    def describe(self, quantization: str | None = None) -> str:
        """A short name that tells methods apart: `LoRA r=16`, `DoRA r=8 rsLoRA`, `QLoRA r=16
        (4-bit)`, `LoRA r=16 (8-bit base)`, `full`, `freeze 20`."""
        if not self.uses_lora:
            return f"freeze {self.freeze_layers}" if self.kind == "freeze" else "full"
        name = "QLoRA" if self.kind == "qlora" else "LoRA"
        parts = [f"{'DoRA' if self.use_dora else name} r={self.r}"]
        if self.use_rslora:
            parts.append("rsLoRA")
        if self.freeze_layers:
            parts.append(f"+ freeze {self.freeze_layers}")
        if quantization:
            parts.append(f"({quantization})" if self.kind == "qlora" else f"({quantization} base)")
        return " ".join(parts)

    def to_peft(self, model=None):
        """The equivalent `peft.LoraConfig` (only for 'lora' and 'qlora').

        `model` is needed with `freeze_layers`, to count its layers and name its linear layers
        (PEFT restricts layers only for explicit module names).
        """
        from peft import LoraConfig, TaskType

        if not self.uses_lora:
            raise WorkbenchError(f"`kind`={self.kind!r} uses no adapter, so it has no PEFT config.")
        layers, targets = None, self.target_modules
        if self.freeze_layers:
            if model is None:
                raise WorkbenchError("`freeze_layers` with LoRA needs the model: to_peft(model).")
            num_layers = model.config.num_hidden_layers
            if self.freeze_layers >= num_layers:
                raise WorkbenchError(
                    f"`freeze_layers`={self.freeze_layers} leaves none of the "
                    f"model's {num_layers} layers to train."
                )
            layers = list(range(self.freeze_layers, num_layers))
            if targets == "all-linear":
                targets = linear_layer_names(model)
        return LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=targets,
            bias=self.bias,
            use_rslora=self.use_rslora,
            use_dora=self.use_dora,
            layers_to_transform=layers,
        )


def linear_layer_names(model) -> list[str]:
    """Names of the linear layers LoRA can target (`q_proj`, ...), without the output head;
    GPT-2's `Conv1D` layers (`c_attn`, `c_fc`, `c_proj`) count, as they do for peft."""
    import torch

    names = set()
    for full_name, module in model.named_modules():
        is_linear = isinstance(module, torch.nn.Linear) or type(module).__name__ in (
            "Linear4bit",
            "Linear8bitLt",
            "Conv1D",
        )
        if is_linear and "lm_head" not in full_name and "lora_" not in full_name:
            names.add(full_name.rsplit(".", 1)[-1])
    return sorted(names)


def decoder_layers(model):
    """The model's stack of transformer blocks (the ModuleList as long as the layer count)."""
    import torch

    count = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise WorkbenchError(
        f"Could not find the {count} transformer layers of "
        f"{type(model).__name__}; use kind='lora' or 'full' instead."
    )


def is_quantized(model) -> bool:
    return bool(
        getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    )


def check_method(model, method: Method) -> None:
    """Raise WorkbenchError when `method` cannot train `model` as it is loaded."""
    layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if method.freeze_layers and layers is not None and method.freeze_layers >= layers:
        raise WorkbenchError(
            f"`freeze_layers`={method.freeze_layers} leaves none of the model's {layers} "
            "layers to train: use a smaller number."
        )
    if method.kind == "qlora" and not is_quantized(model):
        raise WorkbenchError(
            "`kind`='qlora' needs a 4-bit base: load_model(..., "
            "quantization='4bit'). For a full-precision base use kind='lora'."
        )
    if method.kind == "lora" and is_quantized(model):
        raise WorkbenchError(
            "The model is loaded in 4/8-bit, so only its adapters can train: use kind='qlora'."
        )
    if not method.uses_lora and is_quantized(model):
        raise WorkbenchError(
            f"`kind`={method.kind!r} trains the base weights, which cannot be "
            "quantized: load the model without `quantization`."
        )


def keep_4bit_layers_trainable(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference, and undo any repacking
    done already; returns how many layers were undone.

    On CPUs with AVX512-BF16, a 4-bit layer's first forward pass without gradients (an
    evaluation, a "before" answer) repacks its weight for a fast inference kernel that has no
    backward: from then on, gradients stop at every 4-bit layer and QLoRA trains the wrong
    adapters, silently. The layers keep the format that backpropagates.
    """
    undone = 0
    for module in model.modules():
        if not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        module.support_avx512bf16_for_cpu = False
        state = getattr(module.weight, "quant_state", None)
        if getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes import functional

            inverse = getattr(functional, "_convert_weight_packed_for_cpu_inverse", None)
            if inverse is None:
                raise WorkbenchError(
                    "This model's 4-bit weights were repacked for CPU inference, which cannot "
                    "train, and this bitsandbytes cannot undo it: load the model again and "
                    "train before generating with it."
                )
            module.weight.data, module.weight.quant_state = inverse(module.weight.data, state)
            undone += 1
    return undone


def apply_method(model, method: Method):
    """Prepare `model` for training with `method`; returns the model to train (maybe wrapped)."""
    check_method(model, method)
    if method.uses_lora:
        from peft import get_peft_model, prepare_model_for_kbit_training

        if method.kind == "qlora":
            keep_4bit_layers_trainable(model)
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return get_peft_model(model, method.to_peft(model))
    if hasattr(model.config, "attention_dropout"):
        model.config.attention_dropout = method.dropout
    for param in model.parameters():
        param.requires_grad = True
    if method.kind == "freeze":
        layers = decoder_layers(model)
        if method.freeze_layers >= len(layers):
            raise WorkbenchError(
                f"`freeze_layers`={method.freeze_layers} freezes all "
                f"{len(layers)} layers: nothing would train."
            )
        # The embeddings sit below layer 0, so they freeze too (and with them a tied output head).
        model.get_input_embeddings().weight.requires_grad = False
        for layer in list(layers)[: method.freeze_layers]:
            for param in layer.parameters():
                param.requires_grad = False
    return model


@dataclass(frozen=True)
class ParameterCount:
    """Trainable and total parameters."""

    trainable: int
    total: int

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return (
            f"{self.trainable:,} trainable of {self.total:,} parameters ({100 * self.share:.2f}%)"
        )


def count_parameters(model) -> ParameterCount:
    """Trainable and total parameters, counting each shared (tied) tensor once."""
    seen, trainable, total = set(), 0, 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        n = param.numel() * (2 if type(param).__name__ == "Params4bit" else 1)
        total += n
        trainable += n if param.requires_grad else 0
    return ParameterCount(trainable, total)
