"""What the fault tests' process server (tests/processes.py) imports once for all its children:
the slow imports of a training process (the library itself imports these lazily)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: one thread per child
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub reads it

import peft  # noqa: E402, F401
import torch  # noqa: E402, F401
import transformers  # noqa: E402, F401
import trl  # noqa: E402, F401
from transformers import (  # noqa: E402, F401
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
)
from trl import DPOTrainer, GRPOTrainer, KTOTrainer, RewardTrainer  # noqa: E402, F401

import workbench  # noqa: E402, F401
