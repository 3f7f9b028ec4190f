"""PPO: proximal policy optimisation with a value head, on the transformers Trainer.

TRL 1.16 ships no PPOTrainer (neither in `trl` nor in `trl.experimental`), so this module
writes the algorithm on the Trainer the project's other runs use: the same arguments, Stop,
checkpoints, resume and event bridge. One optimizer step trains on one minibatch:

1. Every `ppo_epochs x minibatches` steps the policy samples one answer per prompt copy
   (`num_generations` copies of `batch_size / num_generations` prompts), the reward scores
   each answer, and one forward pass without gradients records, for every answer token, the
   policy's log-probability, the value head's estimate, and the reference's log-probability.
   The reference is the starting adapter, kept frozen on the same model as `ref`.
2. Each token's reward is `-beta * (log p - log p_ref)` (the KL penalty), and the answer's
   score is added at its last token. Generalised advantage estimation (gamma 1,
   `gae_lambda`) turns rewards and values into advantages (whitened) and returns.
3. Each step takes one minibatch of that rollout (reshuffled every PPO epoch) and minimises
   the clipped surrogate `max(-A r, -A clip(r, 1-epsilon, 1+epsilon))` plus `value_coef` x the
   squared error of the value head against the returns.

The value head is one linear layer on the policy's last hidden state, detached: the critic
learns from the policy's features without pulling them. Dropout is off in every forward pass
(the model stays in training mode for the updates, so gradient checkpointing still applies),
so the ratio compares policies, not dropout masks. A checkpoint holds the adapters (`ref/`
beside the trained one), the value head and the rollout being trained on, so a run stopped
between two rollouts' minibatches resumes with the same updates.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.evaluation.rewards import held_out_reward, score_all
from workbench.model.compiling import eager
from workbench.model.generation import Decoding, eval_mode, prompt_batch
from workbench.runs.bridge import bridged, event_bridge

ROLLOUT_FILE = "ppo_rollout.pt"
VALUE_HEAD_FILE = "value_head.safetensors"


def updates_per_rollout(settings) -> int:
    """Optimizer steps trained on each rollout: every minibatch, every PPO epoch."""
    return settings.ppo_epochs * settings.minibatches


def add_reference(model) -> None:
    """Freeze a copy of the trained adapter (`default`) as adapter `ref`: the starting policy
    the KL penalty measures against. An existing `ref` (a resume's) is replaced by the copy;
    the checkpoint then loads the stored one over it."""
    import torch

    if "ref" in model.peft_config:
        model.delete_adapter("ref")
    config = copy.deepcopy(model.peft_config["default"])
    config.inference_mode = True
    model.add_adapter("ref", config)
    weights = dict(model.named_parameters())
    with torch.no_grad():
        for name, weight in weights.items():
            if ".default." in name:
                weights[name.replace(".default.", ".ref.")].copy_(weight)
    model.set_adapter("default")  # trainable again; `ref` frozen
    for name, weight in weights.items():
        if ".ref." in name:
            weight.requires_grad_(False)


@contextlib.contextmanager
def reference_adapter(model):
    """Inside the block the model computes with the frozen `ref` adapter."""
    model.set_adapter("ref")
    try:
        yield
    finally:
        model.set_adapter("default")
        for name, weight in model.named_parameters():
            if ".ref." in name:
                weight.requires_grad_(False)


@dataclass
class Rollout:
    """One batch of sampled answers and what PPO trains on with it. Token tensors are
    [answers, answer tokens]; `prompt_length` is where the answers start in `input_ids`."""

    index: int  # which rollout of the run: global step // updates per rollout
    input_ids: object
    attention_mask: object
    prompt_length: int
    mask: object  # 1 for each answer token up to and including the first end of sequence
    logprobs: object
    values: object
    advantages: object
    returns: object

    def state(self) -> dict:
        return dict(self.__dict__)


def rollout_sampler(prompts: int, per_rollout: int, repeats: int, seed: int):
    """A sampler over prompt indices: each epoch a seeded shuffle, cut into whole rollouts of
    `per_rollout` prompts, each rollout's indices given `repeats` times in a row (the Trainer
    takes one batch per step, and PPO trains several steps on each rollout)."""
    import torch

    class RolloutSampler(torch.utils.data.Sampler):
        def __init__(self):
            self.epoch = 0

        def set_epoch(self, epoch: int) -> None:  # the Trainer calls it, also on a resume
            self.epoch = epoch

        def __len__(self) -> int:
            return (prompts // per_rollout) * per_rollout * repeats

        def __iter__(self):
            generator = torch.Generator().manual_seed(seed * 1_000_003 + self.epoch)
            order = torch.randperm(prompts, generator=generator).tolist()
            for start in range(0, prompts - per_rollout + 1, per_rollout):
                for _ in range(repeats):
                    yield from order[start : start + per_rollout]

    return RolloutSampler()


@contextlib.contextmanager
def dropout_off(model):
    """Every dropout layer's rate at 0 inside the block, restored after. The model stays in
    training mode (gradient checkpointing on), and the backward pass, which may recompute the
    forward, sees the same rates."""
    import torch

    layers = [(m, m.p) for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for layer, _ in layers:
        layer.p = 0.0
    try:
        yield
    finally:
        for layer, rate in layers:
            layer.p = rate


def masked_mean(values, mask):
    return (values * mask).sum() / mask.sum().clamp(min=1)


def ppo_trainer_class():
    """The Trainer subclass (defined in a function: `import workbench` imports no torch)."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import Trainer

    class PPOTrainer(Trainer):
        """PPO on a PEFT model with adapters `default` (trained) and `ref` (frozen)."""

        def __init__(self, *, settings, reward, held_out_prompts, **kwargs):
            super().__init__(**kwargs)
            if self.args.gradient_accumulation_steps != 1:
                raise WorkbenchError(
                    "`gradient_accumulation` must be 1 for PPO: each step is one minibatch "
                    "of a rollout (raise `minibatches` or `ppo_epochs` for more updates)."
                )
            self.ppo = settings
            self.reward = reward
            self.held_out_prompts = held_out_prompts
            hidden = self.model.config.hidden_size
            device = next(self.model.parameters()).device
            self.value_head = torch.nn.Linear(hidden, 1, device=device)
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)
            self.rollout: Rollout | None = None
            self.pending: dict = {}  # the newest rollout's figures, logged with its first step

        def train(self, *args, **kwargs):
            with dropout_off(self.model):  # the ratio compares policies, not dropout masks
                return super().train(*args, **kwargs)

        # --- the optimizer also trains the value head
        def create_optimizer(self, model=None):
            optimizer = super().create_optimizer(model)
            head = list(self.value_head.parameters())
            if not any(p is head[0] for group in optimizer.param_groups for p in group["params"]):
                optimizer.add_param_group(
                    {
                        "params": head,
                        "weight_decay": 0.0,
                        "lr": self.ppo.value_learning_rate or self.args.learning_rate,
                    }
                )
            return optimizer

        def _get_train_sampler(self, train_dataset=None):
            return rollout_sampler(
                len(self.train_dataset),
                self.args.per_device_train_batch_size,
                updates_per_rollout(self.ppo),
                self.args.seed,
            )

        # --- the loss
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self.value_head.zero_grad(set_to_none=True)  # the Trainer zeroes the model's only
            per_rollout = updates_per_rollout(self.ppo)
            step = self.state.global_step
            if self.rollout is None or self.rollout.index != step // per_rollout:
                self.rollout = self.make_rollout(model, inputs["prompt"], step // per_rollout)
            rollout = self.rollout
            ppo_epoch, minibatch = divmod(step % per_rollout, self.ppo.minibatches)
            generator = torch.Generator().manual_seed(
                self.args.seed * 1_000_003 + rollout.index * 131 + ppo_epoch
            )
            answers = rollout.input_ids.shape[0]
            order = torch.randperm(answers, generator=generator).view(self.ppo.minibatches, -1)
            rows = order[minibatch].to(rollout.input_ids.device)
            mask = rollout.mask[rows]
            # tokens through the model this step (prompt and answer): the monitor's tokens/s
            self.state.num_input_tokens_seen += int(rollout.attention_mask[rows].sum())
            logprobs, values = self.forward(
                model,
                rollout.input_ids[rows],
                rollout.attention_mask[rows],
                rollout.prompt_length,
            )
            advantages = rollout.advantages[rows]
            ratio = torch.exp(logprobs - rollout.logprobs[rows])
            clipped = torch.clamp(ratio, 1 - self.ppo.epsilon, 1 + self.ppo.epsilon)
            policy_loss = masked_mean(torch.max(-advantages * ratio, -advantages * clipped), mask)
            value_loss = masked_mean((values - rollout.returns[rows]) ** 2, mask)
            loss = policy_loss + self.ppo.value_coef * value_loss
            clip_fraction = masked_mean(((ratio - 1).abs() > self.ppo.epsilon).float(), mask)
            self.pending.update(
                {
                    "policy_loss": float(policy_loss.detach()),
                    "value_loss": float(value_loss.detach()),
                    "clip_fraction": float(clip_fraction),
                }
            )
            return loss

        def forward(self, model, input_ids, attention_mask, prompt_length: int):
            """Log-probability of each answer token (at the sampling temperature) and the
            value head's estimate before it: [answers, answer tokens] each."""
            output = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0),  # as generate counts
                output_hidden_states=True,
            )
            logits = output.logits[:, prompt_length - 1 : -1].float() / self.ppo.temperature
            tokens = input_ids[:, prompt_length:]
            logprobs = torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1))
            hidden = output.hidden_states[-1][:, prompt_length - 1 : -1].detach().float()
            return logprobs.squeeze(-1), self.value_head(hidden).squeeze(-1)

        @torch.no_grad()
        def make_rollout(self, model, prompts: list[str], index: int) -> Rollout:
            """Sample answers, score them, and compute advantages and returns."""
            prompts = [p for p in prompts for _ in range(self.ppo.num_generations)]
            tokenizer = self.processing_class
            batch = prompt_batch(tokenizer, prompts, self.value_head.weight.device)
            prompt_length = batch["input_ids"].shape[1]
            with eval_mode(model), eager(model):
                output = model.generate(
                    **batch,
                    do_sample=True,
                    temperature=self.ppo.temperature,
                    top_p=1.0,
                    top_k=0,
                    max_new_tokens=self.ppo.max_completion_length,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
                answers = output[:, prompt_length:]
                mask = answer_mask(answers, tokenizer.eos_token_id)
                attention = torch.cat([batch["attention_mask"], mask.long()], dim=1)
                logprobs, values = self.forward(model, output, attention, prompt_length)
                with reference_adapter(model):
                    reference, _ = self.forward(model, output, attention, prompt_length)
            lengths = mask.sum(dim=1).long().tolist()
            texts = [
                tokenizer.decode(row[:n], skip_special_tokens=True).strip()
                for row, n in zip(answers, lengths)
            ]
            scores = torch.tensor(
                score_all(self.reward.score, prompts, texts),
                dtype=torch.float32,
                device=mask.device,
            )
            kl = (logprobs - reference) * mask
            rewards = -self.ppo.beta * kl
            last = mask.sum(dim=1).long() - 1
            rewards[torch.arange(len(prompts)), last] += scores
            advantages, returns = advantages_and_returns(
                rewards, values * mask, mask, self.ppo.gae_lambda
            )
            self.pending = {
                "reward": float(scores.mean()),
                "kl": float(kl.sum() / mask.sum()),
                "completions/mean_length": float(mask.sum(dim=1).mean()),
            }
            return Rollout(
                index, output, attention, prompt_length, mask, logprobs, values,
                advantages, returns,
            )  # fmt: skip

        def log(self, logs, start_time=None):
            if "loss" in logs and self.pending:  # the step's rollout figures beside its loss
                logs = {**logs, **self.pending}
                self.pending = {}
            super().log(logs, start_time)

        # --- evaluation: greedy answers to the held-out prompts, their mean reward
        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            decoding = Decoding(max_new_tokens=self.ppo.max_completion_length)
            result = held_out_reward(
                self.model,
                self.processing_class,
                self.held_out_prompts,
                self.reward.score,
                decoding,
            )
            metrics = {f"{metric_key_prefix}_reward": result.mean}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(
                self.args, self.state, self.control, metrics
            )
            return metrics

        # --- checkpoints: the value head and the rollout travel with the adapters
        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            save_file(
                {k: v.detach().contiguous() for k, v in self.value_head.state_dict().items()},
                str(folder / VALUE_HEAD_FILE),
            )
            if self.rollout is not None:
                torch.save(self.rollout.state(), folder / ROLLOUT_FILE)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            folder = Path(resume_from_checkpoint)
            device = self.value_head.weight.device
            self.value_head.load_state_dict(
                load_file(str(folder / VALUE_HEAD_FILE), device=str(device))
            )
            if (folder / ROLLOUT_FILE).is_file():
                state = torch.load(folder / ROLLOUT_FILE, map_location=device, weights_only=True)
                self.rollout = Rollout(**state)

    return PPOTrainer


def answer_mask(answers, eos_token_id: int):
    """1.0 for each sampled token up to and including the first end of sequence, else 0.0."""
    import torch

    is_end = answers == eos_token_id
    ended_before = torch.cumsum(is_end.long(), dim=1) - is_end.long()
    return (ended_before == 0).float()


def advantages_and_returns(rewards, values, mask, gae_lambda: float):
    """Generalised advantage estimation with gamma 1 over each answer's tokens: advantages
    (whitened over the batch's answer tokens) and returns (advantage + value, unwhitened)."""
    import torch

    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        following = values[:, t + 1] if t + 1 < rewards.shape[1] else 0.0
        running = rewards[:, t] + following - values[:, t] + gae_lambda * running
        advantages[:, t] = running
    advantages = advantages * mask
    returns = advantages + values
    mean = masked_mean(advantages, mask)
    variance = masked_mean((advantages - mean) ** 2, mask)
    whitened = (advantages - mean) / math.sqrt(float(variance) + 1e-8)
    return whitened * mask, returns


def build_ppo_trainer(run, settings, reward, texts, held_texts, resuming: bool):
    """The PPO Trainer for a reinforcement-learning Run (`reinforce(..., algorithm="ppo")`),
    with the Run's event bridge; `texts` and `held_texts` are the prompts as the model sees
    them. The frozen reference adapter is made from the starting adapter; a resume's
    checkpoint loads the stored one over it."""
    import datasets

    add_reference(run.model)
    args = settings.run_arguments(
        run.directory.checkpoints_dir,
        run.model,
        has_validation=held_texts is not None,
        per_device_train_batch_size=settings.batch_size // settings.num_generations,
    )
    if resuming:
        args.eval_on_start = False  # the resumed run already measured its start
    trainer = ppo_trainer_class()(
        settings=settings,
        reward=reward,
        held_out_prompts=held_texts,
        model=run.model,
        args=args,
        train_dataset=datasets.Dataset.from_list([{"prompt": t} for t in texts]),
        eval_dataset=(
            datasets.Dataset.from_list([{"prompt": t} for t in held_texts]) if held_texts else None
        ),
        data_collator=lambda rows: {"prompt": [row["prompt"] for row in rows]},
        processing_class=run.tokenizer,
        callbacks=[event_bridge(run)],
    )
    return bridged(trainer, run)
