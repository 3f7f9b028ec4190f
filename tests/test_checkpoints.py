"""The checkpoints in between (workbench/experiments/checkpoints.py): a run directory's saved
checkpoints answer the same prompts after the fact, without training again."""

from __future__ import annotations

import pytest
import torch
from conftest import quick

import workbench
from workbench.errors import WorkbenchError
from workbench.evaluation.compare import question_of
from workbench.experiments.checkpoints import checkpoint_answers, checkpoint_models
from workbench.model.generation import Decoding, generate
from workbench.model.methods import Method
from workbench.runs.directory import RunDirectory
from workbench.runs.saved import load_adapter


def train_tiny(tiny_model_dir, ticket_split, run_dir, method: Method):
    """A 4-step run on the tiny model keeping a checkpoint at every step."""
    model, tokenizer = workbench.load_model(str(tiny_model_dir), device="cpu")
    run = workbench.train(
        model,
        tokenizer,
        *ticket_split,
        method=method,
        settings=quick(
            max_steps=4, eval_every=1, keep_checkpoints=4, learning_rate=1e-2, warmup=0
        ),  # no warmup: every step, the first too, moves the weights
        run_dir=run_dir,
        samples=1,
    ).wait()
    assert run.status == "finished", run.error
    return run


def checkpoint_folder(run, step: int):
    """The run's checkpoint saved at `step`, found through RunDirectory."""
    return next(p for p in run.directory.complete_checkpoints() if p.name == f"checkpoint-{step}")


@pytest.fixture(scope="module")
def stepped_run(tiny_model_dir, ticket_split, tmp_path_factory):
    """A finished LoRA run with all four of its checkpoints kept."""
    folder = tmp_path_factory.mktemp("runs") / "stepped"
    return train_tiny(tiny_model_dir, ticket_split, folder, Method(r=8, dropout=0.0))


def test_every_checkpoint_answers_and_the_last_matches_the_finished_model(stepped_run):
    kept = RunDirectory(stepped_run.run_dir).complete_checkpoints()
    assert len(kept) == 4

    view = checkpoint_answers(stepped_run.run_dir, rows=3, max_new_tokens=6, device="cpu")

    assert view.steps == [0, 1, 2, 3, 4]  # the base model, then each checkpoint
    held_out = stepped_run.directory.load_rows("validation").rows[:3]
    assert view.questions == [question_of(r) for r in held_out]
    assert view.references == [r["output"] for r in held_out]
    table = view.table()
    assert table.shape == (5, 3) and table.index.name == "step"
    finished = generate(stepped_run.model, stepped_run.tokenizer, view.prompts, Decoding(6))
    assert view.answers[4] == finished


def test_each_step_is_its_checkpoint_loaded_alone_on_a_fresh_base(stepped_run, tiny_model_dir):
    prompt = stepped_run.template.prompt_for_text("Where is my parcel?", stepped_run.tokenizer)
    ids = torch.tensor([stepped_run.tokenizer(prompt)["input_ids"]])
    seen = []
    for step, model, _ in checkpoint_models(stepped_run.run_dir, device="cpu"):
        base, _ = workbench.load_model(str(tiny_model_dir), device="cpu")
        alone = base if step == 0 else load_adapter(base, checkpoint_folder(stepped_run, step))
        with torch.no_grad():
            logits = model.eval()(input_ids=ids).logits
            expected = alone.eval()(input_ids=ids).logits
        assert torch.allclose(logits, expected, atol=1e-6), f"step {step}"
        seen.append((step, logits))
    assert [step for step, _ in seen] == [0, 1, 2, 3, 4]
    for (_, earlier), (step, later) in zip(seen, seen[1:]):
        assert not torch.allclose(earlier, later, atol=1e-6), f"step {step} changed nothing"


def test_typed_questions_are_rendered_as_the_prompt_tried(stepped_run, tiny_model_dir):
    prompts = ["Where is my parcel?", "I was charged twice."]
    view = checkpoint_answers(stepped_run.run_dir, prompts, max_new_tokens=6, device="cpu")
    base, tokenizer = workbench.load_model(str(tiny_model_dir), device="cpu")
    rendered = [stepped_run.template.prompt_for_text(p, tokenizer) for p in prompts]
    assert view.prompts == rendered and view.questions == prompts
    assert view.answers[0] == generate(base, tokenizer, rendered, Decoding(6))
    alone = load_adapter(base, checkpoint_folder(stepped_run, 3))
    assert view.answers[3] == generate(alone, tokenizer, rendered, Decoding(6))
    assert view.references is None
    with pytest.raises(WorkbenchError, match="references"):
        view.first_matches()


def test_the_first_matching_step_and_the_metric_per_step(stepped_run):
    prompts = ["Where is my parcel?", "I was charged twice."]
    first = checkpoint_answers(stepped_run.run_dir, prompts, max_new_tokens=6, device="cpu")
    wanted = [first.answers[4][0], "an answer no checkpoint gives"]

    view = checkpoint_answers(stepped_run.run_dir, prompts, wanted, max_new_tokens=6, device="cpu")

    first_step = next(s for s in view.steps if view.answers[s][0] == wanted[0])
    assert list(view.first_matches().values()) == [first_step, None]
    assert all(view.matched[s][0] for s in view.steps if s >= first_step)
    series = view.metric("exact_match")
    assert series.index.tolist() == view.steps
    assert series[4] == 0.5  # one of two prompts matched at the last step
    assert series.tolist() == [sum(view.matched[s]) / 2 for s in view.steps]
    with pytest.raises(WorkbenchError, match="rouge_l"):
        view.metric("rouge_l")


def test_full_fine_tuning_checkpoints_are_loaded_as_the_model(
    tiny_model_dir, ticket_split, tmp_path
):
    run = train_tiny(tiny_model_dir, ticket_split, tmp_path / "full", Method(kind="full"))
    view = checkpoint_answers(
        run.run_dir, ["Where is my parcel?"], include_base=False, max_new_tokens=6, device="cpu"
    )
    assert view.steps == [1, 2, 3, 4]
    assert view.answers[4] == generate(run.model, run.tokenizer, view.prompts, Decoding(6))


def test_what_cannot_be_viewed_says_why(stepped_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        checkpoint_answers(tmp_path / "nothing")
    directory = RunDirectory(tmp_path / "head")
    directory.path.mkdir()
    directory.write_config({**stepped_run.directory.read_config(), "stage": "classify"})
    with pytest.raises(WorkbenchError, match="`stage`='classify'"):
        checkpoint_answers(directory.path)
    bare = RunDirectory(tmp_path / "bare")
    bare.path.mkdir()
    bare.write_config(stepped_run.directory.read_config())
    with pytest.raises(WorkbenchError, match="keep_checkpoints"):
        checkpoint_answers(bare.path)
    with pytest.raises(WorkbenchError, match="one reference a prompt"):
        checkpoint_answers(stepped_run.run_dir, ["a", "b"], ["only one"], device="cpu")
