"""The kinds of run, one module each, each registered in `workbench.runs.kinds`: instruction
tuning, DPO, KTO, ORPO, a reward model, GRPO and PPO, a classification head, continued
pre-training, distillation; and continual learning (tasks in sequence, replay, EWC, synaptic
intelligence, LwF). `resume(run_dir)` continues any of them."""
