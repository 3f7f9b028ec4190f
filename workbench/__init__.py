"""Fine-tuning workbench: data -> template -> tokens -> training -> before/after, in a notebook.

The library never imports widgets or plotting at import time (and transformers only when a
model is loaded or trained); the panels in `widgets/` are built on the public functions here.
"""

import logging

from workbench.data.documents import read_documents
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
from workbench.evaluation.preferences import preference_margin
from workbench.evaluation.prompting import (
    few_shot_prompt,
    hidden_state_embedder,
    nearest_examples,
    prompting_baselines,
    prompting_table,
)
from workbench.evaluation.rewards import held_out_reward, one_of_labels, valid_iso_date
from workbench.evaluation.shifts import (
    Alternatives,
    TokenShifts,
    answer_alternatives,
    generated_shifts,
    shift_text,
    token_shifts,
)
from workbench.experiments.checkpoints import (
    CheckpointAnswers,
    checkpoint_answers,
    checkpoint_models,
)
from workbench.experiments.choosing import (
    Candidate,
    Prices,
    compare_models,
    cost_table,
    measure_candidates,
)
from workbench.experiments.loto import leave_one_task_out, loto_table, task_folds
from workbench.experiments.preferences import PreferenceExperiment, preference_experiment
from workbench.experiments.reinforcement import RLExperiment, rl_experiment
from workbench.model.generation import Decoding, generate
from workbench.model.loading import DEFAULT_MODEL, load_model, load_tokenizer
from workbench.model.memory import MemoryEstimate, count_trainable, estimate_memory
from workbench.model.methods import Method, ParameterCount, count_parameters, linear_layer_names
from workbench.runs.hyperparameters import Hyperparameters
from workbench.runs.kinds import KINDS, Kind
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
    ClassifierSettings,
    load_trained_classifier,
    resume_classifier,
    train_classifier,
)
from workbench.training.distillation import (
    DistillationSettings,
    distill,
    resume_distillation,
    student_from_teacher,
    train_distillation,
)
from workbench.training.finetune import train
from workbench.training.kto import KTOSettings, resume_kto, train_kto
from workbench.training.lwf import LearningWithoutForgetting
from workbench.training.orpo import ORPOSettings, resume_orpo, train_orpo
from workbench.training.preference import PreferenceSettings, train_dpo, train_preferences
from workbench.training.pretraining import (
    PretrainingSettings,
    continue_pretraining,
    perplexity,
    perplexity_table,
    resume_pretraining,
    train_pretraining,
)
from workbench.training.regularizers import ElasticWeightConsolidation, fisher_diagonal, fisher_ewc
from workbench.training.reinforcement import (
    RLSettings,
    reinforce,
    resume_reinforcement,
    train_grpo,
    train_ppo,
)
from workbench.training.remedies import REMEDIES, plan_stage
from workbench.training.resume import resume, resume_run
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
# ... and, offline, the package that fetches that kernel says it skipped a check it cannot do
logging.getLogger("kernels._internals.hf_hub").addFilter(
    lambda record: not str(record.msg).startswith("Skipping publisher trust check")
)

__all__ = [
    # data: read, validate, split, mix
    "Examples", "load_data", "split_data", "mix_tasks", "read_documents",
    # tokens: templates, the tokens trained on, pre-flight checks
    "TEMPLATES", "Template", "get_template", "default_template", "row_token_view", "token_view",
    "token_view_text", "token_view_html", "tokenize_examples", "tokenize_pair",
    "CompletionCollator", "dataset_stats", "Finding", "check_dataset",
    # the model: load it, the training method, memory
    "DEFAULT_MODEL", "load_model", "load_tokenizer", "Method", "ParameterCount",
    "count_parameters", "linear_layer_names", "MemoryEstimate", "estimate_memory",
    "count_trainable", "Decoding", "generate",
    # runs: the settings, the Run, the registry of kinds, one resume, the report
    "Hyperparameters", "Run", "Kind", "KINDS", "resume", "write_report", "save_forgetting",
    # the kinds of run: train_<kind>(model, tokenizer, rows, validation, *, settings, ...)
    "train", "train_dpo", "PreferenceSettings", "train_kto", "KTOSettings", "train_orpo",
    "ORPOSettings", "train_reward_model", "RewardSettings", "train_grpo", "train_ppo",
    "RLSettings", "train_classifier", "ClassifierSettings", "train_pretraining",
    "PretrainingSettings", "train_distillation", "DistillationSettings", "student_from_teacher",
    # continual learning: tasks in sequence and the remedies against forgetting
    "train_sequence", "SequenceResult", "REMEDIES", "plan_stage", "fisher_ewc",
    "fisher_diagonal", "ElasticWeightConsolidation", "synaptic_intelligence",
    "SynapticIntelligence", "LearningWithoutForgetting",
    # evaluation: answers, metrics, before/after, forgetting, prompting baselines, rewards
    "Evaluation", "TurnScores", "evaluate_model", "compare", "compare_before_after",
    "score_turns", "ForgettingProbe", "TaskScores", "answer_contains", "forgetting_table",
    "learned_retained", "few_shot_prompt", "hidden_state_embedder", "nearest_examples",
    "prompting_baselines", "prompting_table", "evaluate_classifier", "predict_proba",
    "load_trained_classifier", "perplexity", "perplexity_table", "preference_margin",
    "pair_accuracy", "score_responses", "load_reward_model", "held_out_reward",
    "one_of_labels", "valid_iso_date",
    # what fine-tuning changed: per-token shifts, alternatives, the checkpoints in between
    "TokenShifts", "token_shifts", "generated_shifts", "shift_text", "Alternatives",
    "answer_alternatives", "CheckpointAnswers", "checkpoint_answers", "checkpoint_models",
    # experiments: measured before, trained, measured after
    "PreferenceExperiment", "preference_experiment", "RLExperiment", "rl_experiment",
    "leave_one_task_out", "loto_table", "task_folds", "Candidate", "Prices",
    "compare_models", "cost_table", "measure_candidates",
    # errors a user can cause
    "WorkbenchError", "DataValidationError", "TemplateError", "ModelLoadError",
    "AllLabelsMaskedError", "Problem",
    # each kind's own resume, and the old names (kept for one release, with a warning)
    "resume_classifier", "resume_distillation", "resume_kto", "resume_orpo",
    "resume_pretraining", "resume_reinforcement", "resume_reward_model", "resume_run",
    "train_preferences", "reinforce", "continue_pretraining", "distill",
]  # fmt: skip
