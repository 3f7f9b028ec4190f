"""The family matrix: the workbench on a tiny model of each common family (tests/families.py),
one test id per (check, family). Each family is loaded by path, its LoRA targets found, a
multi-turn conversation masked, two steps trained, an answer generated up to the end-of-turn
token, the adapter merged and reloaded with plain transformers, and its memory estimated.

A cell the library fails is marked xfail (strict) with the failure in KNOWN_FAILURES, and
listed in docs/families.md; fixing the library turns the cell into an XPASS, which fails.
"""

from __future__ import annotations

import math

import pytest
from families import FAMILIES, Family, build_family_folder, conversation

from workbench import WorkbenchError

pytestmark = pytest.mark.training

_NOT_LLAMA_LIKE = (
    "estimate_memory raises UnsupportedModelError: Cannot count parameters of model_type={type!r} "
    "from its config: only Llama-like decoders (llama, mistral, qwen2, qwen3) are known"
)
# (check, family) -> what fails and why. Kept in step with docs/families.md.
KNOWN_FAILURES: dict[tuple[str, str], str] = {
    ("chat_masks", "phi3"): (
        "Phi-3's template writes eos_token (<|endoftext|>) after the conversation when "
        "add_generation_prompt is false, so it is not prefix-stable: TurnsFallbackWarning, only "
        "the last reply is learned, as 'account<|endoftext|>' instead of 'account<|end|>'; "
        "the earlier replies and every <|end|> carry no loss"
    ),
    **{
        (check, name): _NOT_LLAMA_LIKE.format(type=model_type)
        for check in ("memory", "memory_parameters")
        for name, model_type in [
            ("gemma2", "gemma2"), ("phi3", "phi3"), ("gpt2", "gpt2"), ("gpt-neox", "gpt_neox"),
        ]
    },
}  # fmt: skip


def cells(check: str) -> list:
    """One parameter per family, xfail (strict) where KNOWN_FAILURES names the cell."""
    params = []
    for name in FAMILIES:
        reason = KNOWN_FAILURES.get((check, name))
        # The memory cells fail by raising (UnsupportedModelError, a WorkbenchError), the
        # others on an assertion: any other error in a known cell is a new failure.
        raises = WorkbenchError if check.startswith("memory") else AssertionError
        marks = [pytest.mark.xfail(strict=True, raises=raises, reason=reason)] if reason else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    """The folder of a family's tiny model, built once per session: family_dir('gpt2')."""
    built = {}

    def folder(name: str):
        if name not in built:
            built[name] = build_family_folder(FAMILIES[name], tmp_path_factory.mktemp(name))
        return built[name]

    return folder


@pytest.fixture(scope="session")
def family_run(family_dir, tmp_path_factory):
    """A finished 2-step LoRA run of a family's model on 6 conversations, once per session
    (the training and the merge checks share it): family_run('gpt2')."""
    import workbench as wb

    runs = {}

    def run(name: str):
        if name not in runs:
            family = FAMILIES[name]
            model, tokenizer = wb.load_model(str(family_dir(name)), device="cpu")
            topics = ["billing", "shipping", "refund", "login", "invoice", "parcel", "card", "x"]
            rows = [{"messages": conversation(family, topic)} for topic in topics]
            train_rows = wb.load_data(rows[:6], verbose=False)
            validation = wb.load_data(rows[6:], verbose=False)
            runs[name] = wb.train(
                model,
                tokenizer,
                train_rows,
                validation,
                settings=wb.Hyperparameters(
                    max_steps=2,
                    batch_size=2,
                    learning_rate=1e-2,
                    eval_every=2,
                    sample_max_new_tokens=2,
                ),
                method=wb.Method(kind="lora", target_modules="all-linear"),
                template=chat_template(family),
                run_dir=tmp_path_factory.mktemp(f"run-{name}") / "run",
                samples=0,
            ).wait(timeout=300)
        return runs[name]

    return run


def chat_template(family: Family):
    import workbench as wb

    return wb.Template(name=f"{family.name}-chat", use_chat_template=True, assistant_turns="all")


def linear_layers(model) -> set[str]:
    """The projection layers LoRA should adapt, found independently of the workbench: every
    torch Linear and transformers Conv1D (GPT-2) except the output head."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, Conv1D)) and module is not head
    }


@pytest.mark.parametrize("name", cells("load"))
def test_loads_by_path_with_its_tokens(name, family_dir):
    import transformers

    import workbench as wb

    family = FAMILIES[name]
    model, tokenizer = wb.load_model(str(family_dir(name)), device="cpu")
    assert model.config.model_type == getattr(transformers, family.config_class).model_type
    assert tokenizer.eos_token == family.eos
    assert tokenizer.bos_token == family.bos
    assert tokenizer.pad_token == (family.pad or family.eos)  # load_model: EOS stands in
    assert tokenizer.chat_template == family.chat_template
    assert len(tokenizer(family.end_of_turn, add_special_tokens=False)["input_ids"]) == 1
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


@pytest.mark.parametrize("name", cells("lora_targets"))
def test_lora_targets_every_projection_layer(name, family_dir):
    from peft import get_peft_model

    import workbench as wb

    model, _ = wb.load_model(str(family_dir(name)), device="cpu")
    expected = linear_layers(model)
    assert expected, "the family has projection layers"
    assert set(wb.linear_layer_names(model)) == expected
    adapted = get_peft_model(model, wb.Method(kind="lora", target_modules="all-linear").to_peft())
    with_lora = {n.rsplit(".", 1)[-1] for n, m in adapted.named_modules() if hasattr(m, "lora_A")}
    assert with_lora == expected


@pytest.mark.parametrize("name", cells("chat_masks"))
def test_every_assistant_turn_and_its_end_of_turn_is_learned(name, family_dir):
    import workbench as wb

    family = FAMILIES[name]
    tokenizer = wb.load_tokenizer(str(family_dir(name)))
    messages = conversation(family, turns=3)
    tokens, item = wb.row_token_view({"messages": messages}, chat_template(family), tokenizer)
    learned_runs, current = [], []
    for token in tokens:
        if token.carries_loss:
            current.append(token.token_id)
        elif current:
            learned_runs.append(current)
            current = []
    learned_runs += [current] if current else []
    texts = [tokenizer.decode(ids, skip_special_tokens=False) for ids in learned_runs]
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    assert texts == [reply + family.end_of_turn for reply in replies]
    assert {t.role for t in tokens if t.carries_loss} == {"assistant"}  # no user/system token
    stop_id = tokenizer.convert_tokens_to_ids(family.end_of_turn)
    assert item.labels.count(stop_id) == len(replies)
    batch = wb.tokenize_examples(wb.load_data([{"messages": messages}], verbose=False),
                                 chat_template(family), tokenizer)  # fmt: skip
    assert batch.examples[0].labels == item.labels


@pytest.mark.parametrize("name", cells("train"))
def test_two_training_steps_have_a_finite_loss(name, family_run):
    run = family_run(name)
    assert run.status == "finished", run.error
    assert len(run.losses) == 2
    assert all(math.isfinite(loss) for loss in run.losses)


@pytest.mark.parametrize("name", cells("generate"))
def test_generation_stops_at_the_end_of_turn_token(name, family_dir):
    """The output head is biased so the end-of-turn token is always the argmax: generation
    must stop after one token, however many it was allowed."""
    import workbench as wb

    family = FAMILIES[name]
    model, tokenizer = wb.load_model(str(family_dir(name)), device="cpu")
    stop_id = tokenizer.convert_tokens_to_ids(family.end_of_turn)
    calls = []

    def biased(module, inputs, logits):
        calls.append(logits.shape)
        logits = logits.clone()
        logits[..., stop_id] += 1000.0
        return logits

    model.get_output_embeddings().register_forward_hook(biased)
    question = "Which team handles billing?"
    prompt = chat_template(family).prompt_for_text(question, tokenizer)
    assert prompt == tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    answers = wb.generate(model, tokenizer, [prompt], wb.Decoding(max_new_tokens=4))
    assert answers == [""]
    assert len(calls) == 1, (
        f"generated {len(calls)} tokens: it did not stop at {family.end_of_turn}"
    )


@pytest.mark.parametrize("name", cells("merge"))
def test_merged_model_reloads_with_transformers(name, family_dir, family_run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.interfaces.export import merge_adapter  # what `export RUN --merged` calls

    run = family_run(name)
    assert run.status == "finished", run.error
    folder = merge_adapter(run.run_dir, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(folder).eval()
    base = AutoModelForCausalLM.from_pretrained(family_dir(name)).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template == FAMILIES[name].chat_template
    assert not any("lora" in key for key in merged.state_dict())
    ids = tokenizer("Which team handles billing?", return_tensors="pt")["input_ids"]
    run.model.eval()
    with torch.no_grad():
        trained, folded, original = (m(input_ids=ids).logits for m in (run.model, merged, base))
    assert torch.allclose(folded, trained, atol=1e-4), "the merged model answers as the run's"
    assert not torch.allclose(folded, original, atol=1e-4), "the adapter was folded in"


@pytest.mark.parametrize("name", cells("memory"))
def test_memory_estimate_is_positive(name, family_dir):
    import workbench as wb

    model, _ = wb.load_model(str(family_dir(name)), device="cpu")
    estimate = wb.estimate_memory(
        model.config, wb.Method(), batch_size=2, seq_length=64, device="cpu"
    )
    assert estimate.total > 0
    assert all(value >= 0 for value in estimate.terms().values())


@pytest.mark.parametrize("name", cells("memory_parameters"))
def test_memory_estimate_counts_the_models_parameters(name, family_dir):
    """The estimate is built from a parameter layout read off the config: it must count the
    weights the model really has (within 1%), or every term built on it is off."""
    import workbench as wb

    model, _ = wb.load_model(str(family_dir(name)), device="cpu")
    estimate = wb.estimate_memory(
        model.config, wb.Method(kind="full"), batch_size=2, seq_length=64, device="cpu"
    )
    actual = wb.count_parameters(model).total
    assert estimate.parameters is not None
    assert abs(estimate.parameters.total - actual) <= 0.01 * actual, (
        f"estimated {estimate.parameters.total:,} parameters, the model has {actual:,}"
    )
