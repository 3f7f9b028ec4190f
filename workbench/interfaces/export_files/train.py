"""Fine-tune a causal LM on prompt/response pairs: a standalone script exported from a
fine-tuning workbench run. It needs torch, transformers, peft, datasets and pyyaml, not the
workbench; config.yaml next to it holds every setting, data/ the rendered training rows.

    python train.py                                        # one process: CPU or one GPU
    accelerate launch train.py                             # as `accelerate config` set it up
    accelerate launch --config_file accelerate/ddp.yaml train.py    # DDP on several GPUs
    accelerate launch --config_file accelerate/fsdp.yaml train.py   # FSDP on several GPUs
    accelerate launch --multi_gpu --num_processes 2 train.py  # no GPU: 2 CPU processes (gloo)

(On a machine without GPUs `--multi_gpu` starts the processes through torchrun and they train
on the CPU over gloo; `accelerate launch --cpu --num_processes 2` instead expects MPI and,
without it, runs ONE process.)

`training.batch_size` x `training.gradient_accumulation` in config.yaml is the GLOBAL batch
of the original run: with N processes each takes batch_size / N rows per forward pass, so
every optimizer step sees the same rows, and the same first steps are trained, on any N.
`quantization` (4bit or 8bit) loads the base through bitsandbytes, as the run did.
`training.report_to` sends the logs to tensorboard (event files in <output-dir>/tensorboard),
wandb or mlflow (each needs its package), or to none.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from pathlib import Path

import torch
import yaml
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
    set_seed,
)

HERE = Path(__file__).resolve().parent
IGNORE_INDEX = -100  # labels PyTorch's cross-entropy skips: the prompt tokens


def tokenize_segments(segments: list[dict], tokenizer, data: dict) -> dict:
    """Ids and labels for one row: its segments (pieces of text, each learned or not, some
    followed by EOS) tokenised one by one, so the labels follow the learned text exactly; every
    assistant turn of a conversation is a learned segment."""
    bos = getattr(tokenizer, "bos_token", None)
    ids, learned = [], []
    for index, segment in enumerate(segments):
        text = segment["text"]
        first = index == 0 and not (bos and text.startswith(bos))  # BOS written as text
        piece = tokenizer(text, add_special_tokens=first)["input_ids"] if text else []
        if segment.get("eos") and tokenizer.eos_token_id is not None:
            piece = piece + [tokenizer.eos_token_id]
        ids += piece
        learned += [bool(segment["learned"])] * len(piece)
    start, end = kept_range(learned, data["max_length"], data["truncation_side"])
    ids, learned = ids[start:end], learned[start:end]
    keep_all = not data["completion_only"]
    labels = [t if keep or keep_all else IGNORE_INDEX for t, keep in zip(ids, learned)]
    return {"input_ids": ids, "labels": labels}


def kept_range(learned: list[bool], limit: int, side: str) -> tuple[int, int]:
    """[start, end) of the tokens kept: 'right' cuts the end; 'left' cuts the start up to the
    first learned token, then the end if the row is still too long (the rule training used,
    written again here because this script imports nothing of the workbench)."""
    if len(learned) <= limit:
        return 0, len(learned)
    if side == "right":
        return 0, limit
    first = learned.index(True) if True in learned else len(learned)
    start = min(len(learned) - limit, first)
    return start, start + limit


def segments_of(row: dict) -> list[dict]:
    """A data row's segments; rows of older exports hold one prompt and one response."""
    if "segments" in row:
        return row["segments"]
    prompt = {"text": row["prompt"], "learned": False, "eos": False}
    return [prompt, {"text": row["response"], "learned": True, "eos": True}]


def load_rows(path: Path, tokenizer, data: dict):
    """A datasets.Dataset of tokenised rows from a JSONL file of {"segments": [...]}."""
    import datasets

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    items = [tokenize_segments(segments_of(r), tokenizer, data) for r in rows]
    return datasets.Dataset.from_list(items)


def collate(pad_token_id: int):
    """Pad a batch on the right; padded labels are -100 and carry no loss."""

    def collate_batch(features: list[dict]) -> dict:
        longest = max(len(f["input_ids"]) for f in features)
        ids, labels, mask = [], [], []
        for f in features:
            pad = longest - len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [pad_token_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            mask.append([1] * len(f["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }

    return collate_batch


def load_model(config: dict):
    """The base model and tokenizer, in float32 on a CPU and bf16/fp16 on a GPU."""
    name = config["model"]
    if name.startswith((".", "/", "~")) and not Path(name).expanduser().is_dir():
        raise SystemExit(
            f"config.yaml `model`: {name} does not exist on this machine. Set it to a hub id "
            f"(the comment above `model` suggests one) or to a folder holding the model."
        )
    kwargs = {}
    if torch.cuda.is_available():
        kwargs["dtype"] = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quantization = config.get("quantization")
    if quantization:
        kwargs["quantization_config"] = quantization_config(quantization, kwargs)
        # each process loads the quantised base on its own GPU (bitsandbytes places it there)
        device = int(os.environ.get("LOCAL_RANK", 0)) if torch.cuda.is_available() else "cpu"
        kwargs["device_map"] = {"": device}
    tokenizer = AutoTokenizer.from_pretrained(name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    return model, tokenizer


def quantization_config(quantization: str, kwargs: dict):
    """bitsandbytes settings for the run's `quantization`: 4bit (NF4, as QLoRA) or 8bit."""
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs.get("dtype", torch.float32),
        )
    raise SystemExit(f"config.yaml `quantization`={quantization!r}: use null, 4bit or 8bit.")


def prepare(model, method: dict, seed: int):
    """LoRA adapters (peft), or full fine-tuning with the bottom `freeze_layers` frozen."""
    set_seed(seed)  # LoRA's initial weights come from this seed
    if method["kind"] in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if method["kind"] == "qlora":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        lora = {k: v for k, v in method["lora"].items() if v is not None}
        return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora))
    for param in model.parameters():
        param.requires_grad = True
    if method.get("freeze_layers"):
        count = model.config.num_hidden_layers
        layers = next(
            m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == count
        )
        model.get_input_embeddings().weight.requires_grad = False
        for layer in list(layers)[: method["freeze_layers"]]:
            for param in layer.parameters():
                param.requires_grad = False
    return model


def per_device_batch(training: dict, world_size: int) -> tuple[int, int]:
    """(rows per process per forward pass, accumulation) keeping the run's global batch."""
    batch, accumulation = training["batch_size"], training["gradient_accumulation"]
    if batch % world_size == 0:
        return batch // world_size, accumulation
    if accumulation % world_size == 0:
        return batch, accumulation // world_size
    raise SystemExit(
        f"config.yaml `training.batch_size`={batch} x `gradient_accumulation`={accumulation} "
        f"cannot be split evenly over {world_size} processes: make batch_size a multiple of "
        f"{world_size} (and keep the product) or launch a number of processes that divides it."
    )


def tracking(training: dict, output_dir: Path, names) -> dict:
    """`report_to`: tensorboard (into <output-dir>/tensorboard), wandb, mlflow or none."""
    report_to = training.get("report_to", "none")
    packages = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
    package = packages.get(report_to)
    if package and importlib.util.find_spec(package) is None:
        raise SystemExit(
            f"config.yaml `training.report_to`={report_to!r} needs the {package} package: "
            f"pip install {package} (or set report_to: none)."
        )
    folder = str(output_dir / "tensorboard")
    if "logging_dir" in names:  # transformers 4
        return {"report_to": report_to, "logging_dir": folder}
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", folder)  # transformers 5 reads it here
    return {"report_to": report_to}


def training_arguments(training: dict, output_dir: Path, world_size: int, has_eval: bool):
    batch, accumulation = per_device_batch(training, world_size)
    names = TrainingArguments.__init__.__code__.co_varnames
    checkpointing = (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else ("gradient_checkpointing")
    )
    return TrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        learning_rate=training["learning_rate"],
        lr_scheduler_type=training["lr_scheduler"],
        warmup_steps=training["warmup"],
        num_train_epochs=training["epochs"],
        max_steps=training["max_steps"],
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        weight_decay=training["weight_decay"],
        max_grad_norm=training["max_grad_norm"],
        eval_strategy="steps" if has_eval else "no",
        eval_steps=training["eval_every"],
        save_strategy="steps",
        save_steps=training["eval_every"],
        save_total_limit=training["keep_checkpoints"],
        logging_steps=1,
        seed=training["seed"],
        data_seed=training["seed"],
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,
        **{checkpointing: training["gradient_checkpointing"]},
        **tracking(training, output_dir, names),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(HERE / "config.yaml"))
    parser.add_argument("--output-dir", default=str(HERE / "output"))
    parser.add_argument("--max-steps", type=int, default=None, help="override training.max_steps")
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    training, data = config["training"], config["data"]
    if args.max_steps:
        training["max_steps"] = args.max_steps
    output_dir = Path(args.output_dir)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    model, tokenizer = load_model(config)
    model = prepare(model, config["method"], training["seed"])
    base = Path(args.config).resolve().parent
    train_rows = load_rows(base / data["train"], tokenizer, data)
    validation = (
        load_rows(base / data["validation"], tokenizer, data) if data.get("validation") else None
    )
    trainer = Trainer(
        model=model,
        args=training_arguments(training, output_dir, world_size, validation is not None),
        train_dataset=train_rows,
        eval_dataset=validation,
        data_collator=collate(tokenizer.pad_token_id),
        processing_class=tokenizer,
    )
    rank = trainer.args.process_index
    (output_dir / "processes").mkdir(parents=True, exist_ok=True)
    (output_dir / "processes" / f"rank-{rank}.json").write_text(
        json.dumps(
            {
                "rank": rank,
                "pid": os.getpid(),
                "world_size": world_size,
                "per_device_batch": trainer.args.per_device_train_batch_size,
            }
        )
    )
    trainer.train()
    if trainer.is_world_process_zero():
        history = json.dumps(trainer.state.log_history, indent=1)
        (output_dir / "log_history.json").write_text(history)
    trainer.save_model(str(output_dir / ("adapter" if hasattr(model, "peft_config") else "model")))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        trainer.accelerator.wait_for_everyone()
        torch.distributed.destroy_process_group()  # gloo threads left running abort the exit


if __name__ == "__main__":
    main()
