"""Fine-tuning workbench: data -> template -> tokens -> training -> before/after, in a notebook.

The library never imports widgets or plotting at import time (and transformers only when a
model is loaded or trained); the panels in `widgets/` are built on the public functions here.
"""

import logging

from workbench.data.loading import Examples, load_data
from workbench.data.splits import mix_tasks, split_data
from workbench.errors import (
    AllLabelsMaskedError,
    DataValidationError,
    ModelLoadError,
    Problem,
    TemplateError,
    WorkbenchError,
)
from workbench.evaluation.classifying import evaluate_classifier, predict_proba
from workbench.evaluation.compare import (
    Evaluation,
    TurnScores,
    compare,
    compare_before_after,
    evaluate_model,
    score_turns,
)
from workbench.evaluation.forgetting import (
    ForgettingProbe,
    TaskScores,
    answer_contains,
    forgetting_table,
    learned_retained,
)
from workbench.evaluation.prompting import (
    few_shot_prompt,
    hidden_state_embedder,
    nearest_examples,
    prompting_baselines,
    prompting_table,
)
from workbench.evaluation.rewards import held_out_reward, one_of_labels, valid_iso_date
from workbench.experiments.choosing import (
    Candidate,
    Prices,
    compare_models,
    cost_table,
    measure_candidates,
)
from workbench.experiments.loto import leave_one_task_out, loto_table, task_folds
from workbench.model.generation import Decoding, generate
from workbench.model.loading import DEFAULT_MODEL, load_model, load_tokenizer
from workbench.model.memory import MemoryEstimate, count_trainable, estimate_memory
from workbench.model.methods import Method, ParameterCount, count_parameters, linear_layer_names
from workbench.runs.hyperparameters import Hyperparameters
from workbench.runs.report import save_forgetting, write_report
from workbench.runs.run import Run
from workbench.tokens.checks import Finding, check_dataset
from workbench.tokens.collators import CompletionCollator
from workbench.tokens.stats import dataset_stats
from workbench.tokens.templates import TEMPLATES, Template, default_template, get_template
from workbench.tokens.tokenizing import (
    row_token_view,
    token_view,
    token_view_html,
    token_view_text,
    tokenize_examples,
    tokenize_pair,
)
from workbench.training.classification import (
    load_trained_classifier,
    resume_classifier,
    train_classifier,
)
from workbench.training.distillation import distill, resume_distillation, student_from_teacher
from workbench.training.finetune import resume_run, train
from workbench.training.lwf import LearningWithoutForgetting
from workbench.training.pretraining import (
    continue_pretraining,
    perplexity,
    perplexity_table,
    read_documents,
    resume_pretraining,
)
from workbench.training.regularizers import ElasticWeightConsolidation, fisher_diagonal, fisher_ewc
from workbench.training.reinforcement import RLSettings, reinforce, resume_reinforcement
from workbench.training.remedies import REMEDIES, plan_stage
from workbench.training.reward import (
    RewardSettings,
    load_reward_model,
    pair_accuracy,
    resume_reward_model,
    score_responses,
    train_reward_model,
)
from workbench.training.sequence import SequenceResult, train_sequence
from workbench.training.synaptic import SynapticIntelligence, synaptic_intelligence

# bitsandbytes warns on every import on CPUs with AVX512-BF16 that an optional kernel package
# is missing; it falls back to its own kernel, so the warning only alarms users.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

__all__ = [
    "DEFAULT_MODEL",
    "TEMPLATES",
    "AllLabelsMaskedError",
    "CompletionCollator",
    "DataValidationError",
    "Decoding",
    "Evaluation",
    "ElasticWeightConsolidation",
    "Examples",
    "Finding",
    "ForgettingProbe",
    "Hyperparameters",
    "Method",
    "ModelLoadError",
    "ParameterCount",
    "Problem",
    "Run",
    "Template",
    "TaskScores",
    "TemplateError",
    "TurnScores",
    "WorkbenchError",
    "answer_contains",
    "check_dataset",
    "compare",
    "compare_before_after",
    "count_parameters",
    "dataset_stats",
    "default_template",
    "evaluate_model",
    "few_shot_prompt",
    "fisher_diagonal",
    "fisher_ewc",
    "forgetting_table",
    "generate",
    "get_template",
    "linear_layer_names",
    "count_trainable",
    "estimate_memory",
    "MemoryEstimate",
    "hidden_state_embedder",
    "learned_retained",
    "leave_one_task_out",
    "load_data",
    "load_model",
    "load_tokenizer",
    "loto_table",
    "mix_tasks",
    "nearest_examples",
    "prompting_baselines",
    "prompting_table",
    "resume_run",
    "save_forgetting",
    "score_turns",
    "split_data",
    "task_folds",
    "row_token_view",
    "token_view",
    "token_view_html",
    "token_view_text",
    "tokenize_examples",
    "tokenize_pair",
    "train",
    "write_report",
    # added with the other kinds of training (issues 17 and 18)
    "Candidate",
    "Prices",
    "compare_models",
    "cost_table",
    "measure_candidates",
    "evaluate_classifier",
    "predict_proba",
    "held_out_reward",
    "one_of_labels",
    "valid_iso_date",
    "load_trained_classifier",
    "resume_classifier",
    "train_classifier",
    "distill",
    "resume_distillation",
    "student_from_teacher",
    "LearningWithoutForgetting",
    "continue_pretraining",
    "perplexity",
    "perplexity_table",
    "read_documents",
    "resume_pretraining",
    "RLSettings",
    "reinforce",
    "resume_reinforcement",
    "RewardSettings",
    "load_reward_model",
    "pair_accuracy",
    "resume_reward_model",
    "score_responses",
    "train_reward_model",
    "REMEDIES",
    "SequenceResult",
    "plan_stage",
    "train_sequence",
    "SynapticIntelligence",
    "synaptic_intelligence",
]
