"""RLPanel: reinforcement learning (GRPO or PPO) after instruction tuning, from the notebook.

Choose the reward: a verifiable Python check of the answer ("answer is one of the labels",
"valid ISO date") or a reward model trained first on preference pairs (its held-out pair
accuracy before and after is shown, then it scores the answers). Pick the algorithm (GRPO:
several answers per prompt against their average; PPO: a value head as the baseline and several
updates per batch of answers), the prompts, the steps and the settings, press Train RL: a
TrainingMonitor follows the run (mean reward, KL to the starting model, answer length per
step); afterwards the held-out mean reward before and after and a CompareView of the SFT
answers beside the SFT+RL answers. The experiment itself is
`workbench.experiments.reinforcement.rl_experiment`; the runs are `train_reward_model` and
`reinforce`.
"""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as widgets

from workbench.data.loading import load_data
from workbench.data.splits import split_data
from workbench.evaluation.rewards import labels_in, one_of_labels, valid_iso_date
from workbench.experiments.reinforcement import RLExperiment, rl_experiment
from workbench.model.generation import Decoding
from workbench.tokens.templates import Template
from workbench.training.reinforcement import RLSettings
from workbench.training.reward import RewardSettings, train_reward_model
from workbench.widgets._common import heading
from workbench.widgets._run_panels import ContinuesTuning

SAMPLES = Path("sample_data")  # the shipped files (found from any folder)
# each reward source, and the sample prompts it suits
REWARDS = {
    "labels": ("answer is one of the labels", SAMPLES / "support_tickets.jsonl"),
    "iso_date": ("valid ISO date", SAMPLES / "date_rewrite.jsonl"),
    "reward_model": ("reward model (trained on pairs first)", SAMPLES / "preferences.jsonl"),
}


class RLPanel(ContinuesTuning):
    """GRPO or PPO on top of an instruction-tuned model, with a verifiable reward or a reward
    model.

    Children: `.algorithm` (Dropdown: 'grpo', 'ppo'; PPO shows `.ppo_epochs` and
    `.minibatches`), `.reward_source` (Dropdown: 'labels', 'iso_date', 'reward_model'), `.labels`
    (comma-separated; empty: the prompt rows' answers), `.pairs_path` and `.reward_steps` (the
    reward model's pairs and steps), `.prompts_path`, `.held_out`, `.max_steps`,
    `.learning_rate`, `.batch_size` (answers per step), `.num_generations`, `.beta`,
    `.train_button`, `.status`, `.error_html`, `.monitor` (the reward model's run, then the RL
    run), `.reward_model_html`, `.reward_html`, `.compare_box`. Results: `.reward_run` (the
    reward model's Run, or None), `.experiment` (the library's RLExperiment), `.run`,
    `.compare_panel`, `.pair_accuracy` and `.rewards` (before, after).
    """

    continues = "RL"
    dom_class = "wb-rl-panel"
    reward_max_length = 512  # prompt + reply of a preference pair, in tokens
    experiment: RLExperiment | None = None

    def __init__(
        self,
        model=None,
        tokenizer=None,
        *,
        template: Template | str = "alpaca",
        parent: str | Path | None = None,
        settings: RLSettings | None = None,
    ) -> None:
        settings = settings or RLSettings(max_steps=16, batch_size=16, learning_rate=2e-4)
        super().__init__(model, tokenizer, template, parent)
        self.reward_run = None
        self.decoding = Decoding(max_new_tokens=settings.max_completion_length)
        self._build_reward_controls(settings)
        self._build_run_controls(settings)
        self._build_train_controls("Train RL")
        self.reward_model_html = widgets.HTML()
        self.reward_html = widgets.HTML()
        self.compare_box = widgets.VBox()
        self.reward_source.observe(self._on_source, names="value")
        self._on_source({"old": None, "new": self.reward_source.value})
        self.algorithm.observe(self._on_algorithm, names="value")
        self._on_algorithm({"old": None, "new": self.algorithm.value})
        self.children = [
            widgets.HBox([self.algorithm, self.reward_source, self.labels]),
            self.reward_model_box,
            self.prompts_path,
            widgets.HBox([self.held_out, self.max_steps, self.learning_rate]),
            widgets.HBox([self.batch_size, self.num_generations, self.beta]),
            self.ppo_box,
            widgets.HBox([self.train_button, self.status]),
            self.error_html,
            self.reward_model_html,
            self.monitor,
            self.reward_html,
            heading("SFT against SFT+RL on held-out prompts"),
            self.compare_box,
        ]

    def _build_reward_controls(self, settings: RLSettings) -> None:
        self.reward_source = widgets.Dropdown(
            options=[(label, key) for key, (label, _) in REWARDS.items()],
            value="labels",
            description="Reward",
            style={"description_width": "initial"},
        )
        self.labels = widgets.Text(
            description="labels",
            placeholder="comma-separated; empty: the answers in the prompt rows",
            layout=widgets.Layout(width="50%"),
        )
        self.pairs_path = widgets.Text(
            value=str(REWARDS["reward_model"][1]),
            description="Pairs",
            layout=widgets.Layout(width="70%"),
        )
        self.reward_steps = widgets.BoundedIntText(
            value=2 * settings.max_steps, min=1, max=100_000, description="RM steps"
        )
        self.reward_model_box = widgets.HBox([self.pairs_path, self.reward_steps])

    def _build_run_controls(self, settings: RLSettings) -> None:
        self.algorithm = widgets.Dropdown(
            options=[("GRPO", "grpo"), ("PPO", "ppo")], value="grpo", description="Algorithm"
        )
        self.ppo_epochs = widgets.BoundedIntText(
            value=settings.ppo_epochs, min=1, max=64, description="PPO epochs"
        )
        self.minibatches = widgets.BoundedIntText(
            value=settings.minibatches, min=1, max=256, description="minibatches"
        )
        self.ppo_box = widgets.HBox(
            [
                self.ppo_epochs,
                self.minibatches,
                widgets.HTML(
                    "<small>PPO: a step is one minibatch; each batch of answers trains "
                    "PPO epochs x minibatches steps.</small>"
                ),
            ]
        )
        self.prompts_path = widgets.Text(
            value=str(REWARDS["labels"][1]),
            description="Prompts",
            layout=widgets.Layout(width="70%"),
        )
        self.held_out = widgets.BoundedIntText(value=16, min=1, max=10_000, description="held out")
        self._build_step_controls(
            settings.max_steps, settings.learning_rate, settings.batch_size, "answers/step"
        )
        self._usual_steps = settings.max_steps  # GRPO's; PPO's follow from it
        self.num_generations = widgets.BoundedIntText(
            value=settings.num_generations, min=1, max=256, description="per prompt"
        )
        self.beta = widgets.BoundedFloatText(
            value=settings.beta, min=0, max=10, step=0.01, description="beta (KL)"
        )
        self._max_completion_length = settings.max_completion_length

    def _on_source(self, change) -> None:
        """Show the controls of the chosen reward; the prompts follow it while they are one of
        the sample files (a path the user typed is kept)."""
        source = change["new"]
        self.labels.layout.display = None if source == "labels" else "none"
        self.reward_model_box.layout.display = None if source == "reward_model" else "none"
        samples = {str(path) for _, path in REWARDS.values()}
        if self.prompts_path.value in samples:
            self.prompts_path.value = str(REWARDS[source][1])

    def _on_algorithm(self, change) -> None:
        """PPO's own controls show with PPO. Answers per prompt and steps follow the
        algorithm's usual values unless the user changed them: GRPO needs a group, PPO usually
        samples one; a PPO step is one minibatch, so PPO gets PPO epochs x minibatches steps
        for each GRPO step (as many sampled answers)."""
        ppo = change["new"] == "ppo"
        self.ppo_box.layout.display = None if ppo else "none"
        usual = {"grpo": RLSettings.num_generations, "ppo": 1}
        if change["old"] in usual and self.num_generations.value == usual[change["old"]]:
            self.num_generations.value = usual[change["new"]]
        per_batch = self.ppo_epochs.value * self.minibatches.value
        steps = {"grpo": self._usual_steps, "ppo": self._usual_steps * per_batch}
        if change["old"] in steps and self.max_steps.value == steps[change["old"]]:
            self.max_steps.value = steps[change["new"]]

    @property
    def settings(self) -> RLSettings:
        """The settings as the controls say (an invalid combination raises, named)."""
        settings = RLSettings(
            **self._step_settings(),
            num_generations=self.num_generations.value,
            beta=self.beta.value,
            max_completion_length=self._max_completion_length,
            ppo_epochs=self.ppo_epochs.value,
            minibatches=self.minibatches.value,
        )
        settings.check_for(self.algorithm.value)
        return settings

    @property
    def rewards(self) -> list[float | None]:
        """The held-out mean reward (greedy answers) before and after RL."""
        return self._before_after(lambda e: (e.reward_before, e.reward_after))

    @property
    def pair_accuracy(self) -> list[float | None]:
        """The reward model's held-out pair accuracy at its start and at its end."""
        if self.reward_run is None:
            return [None, None]
        accuracies = [
            e["eval_accuracy"]
            for e in self.reward_run.events
            if e["event"] == "evaluation" and e.get("eval_accuracy") is not None
        ]
        return [accuracies[0], accuracies[-1]] if accuracies else [None, None]

    # -- the work behind the button -------------------------------------------------------
    def start(self) -> None:
        """Train the reward model first when it is the reward, then start the library's RL
        experiment on the prompts with the SFT model."""
        self._check_ready()
        settings = self.settings  # checked before any work starts
        prompts = load_data(self.prompts_path.value.strip(), verbose=False)
        self.compare_box.children = []
        self.reward_html.value = self.reward_model_html.value = ""
        reward = self._reward(prompts, settings.seed)
        self.status.value = "<i>Answering held-out prompts with the SFT model ...</i>"
        experiment = rl_experiment(
            prompts,
            reward=reward,
            settings=settings,
            algorithm=self.algorithm.value,
            **self._experiment_arguments(),
        )
        self._follow(experiment)

    def _reward(self, prompts, seed: int):
        """What scores the answers: a verifiable function, or a reward model trained here."""
        source = self.reward_source.value
        if source == "iso_date":
            return valid_iso_date
        if source == "labels":
            typed = [label.strip() for label in self.labels.value.split(",") if label.strip()]
            return one_of_labels(typed or labels_in(prompts))
        return self._train_reward_model(seed)

    def _train_reward_model(self, seed: int):
        """Train the reward model on the pairs (held-out pairs measure it), follow it in the
        monitor and wait for it: RL needs it finished. The held-out pairs are split as the
        held-out prompts are, so prompts from the same file stay unseen by both."""
        pairs = load_data(self.pairs_path.value.strip(), verbose=False)
        steps = self.reward_steps.value
        train_pairs, held_pairs = split_data(pairs, self.held_out.value, seed=seed)
        self.reward_run = train_reward_model(
            self.model,
            self.tokenizer,
            train_pairs,
            held_pairs,
            settings=RewardSettings(
                max_steps=steps, eval_every=steps, max_length=self.reward_max_length
            ),
            template=self.template,
            parent=self.parent,
            start=False,
        )
        self.monitor.attach(self.reward_run)
        self.status.value = "<i>Training the reward model ...</i>"
        run = self.reward_run.start().wait()
        before, after = self.pair_accuracy
        if run.status != "finished" or after is None:
            raise ValueError(
                f"The reward model's run {run.run_dir.name} ended {run.status!r} "
                f"({run.error or 'stopped before its last evaluation'}): RL was not started. "
                "Press Train RL again to train a new one."
            )
        self.reward_model_html.value = html.escape(
            f"Reward model {run.run_dir.name}: held-out pair accuracy {before:.2f} → "
            f"{after:.2f} over {len(held_pairs)} pairs (chosen scored above rejected)."
        )
        return run

    def _on_end(self, experiment: RLExperiment) -> None:
        """The run ended: the held-out reward after RL, and SFT against SFT+RL side by side.
        The next Train RL continues this model: `run.model` (PEFT wraps the given model and
        changes it in place, so only the wrapper is a whole model to go on from), this run
        its parent."""
        run = experiment.run
        self.model, self.parent = run.model, run.run_dir
        experiment.measure_after()
        self.reward_html.value = html.escape(experiment.summary())
        if experiment.answers_before is not None:  # both answered by the experiment
            self._show_comparison(experiment, experiment.answers_after)
        self.status.value = (
            f"RL <code>{html.escape(run.run_dir.name)}</code> {run.status}; Train RL again "
            "continues this model."
        )

    # -- without a widget frontend (StaticFallback) ----------------------------------------
    def static_text(self) -> str:
        lines = [f"RLPanel: RL run {self.run_summary()}"]
        if self.experiment is not None:
            lines.append(self.experiment.summary())
        return "\n".join([*lines, *self.errors[-5:]])

    def static_html(self) -> str:
        title = "<div><b>RLPanel</b></div>"
        results = [self.reward_model_html.value, self.reward_html.value, self._monitor_html()]
        return "".join([title, self.error_html.value, *results, self._compare_html()])
