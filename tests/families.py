"""Tiny models of the common families (Llama 3, Qwen2.5, Qwen3, Gemma 2, Phi-3, Mistral, GPT-2,
GPT-NeoX), each saved to a folder as `save_pretrained` writes it: random weights from the
family's own transformers config class, and a tokenizer with the family's special tokens, its
eos/pad/bos as the family sets them, and a chat template written here from the family's
documented format. `tests/test_families.py` runs the workbench over every one of them.

The chat templates are short versions of the ones the families ship (no tools, no reasoning
content), kept faithful where it matters to the workbench: what closes a turn, what the
generation prompt is, what is written around the conversation (BOS, a default system message,
an empty think block, an EOS after the last turn) and which roles exist.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.workloads import llama_shape, saved_model_folder

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(hidden=32, layers=2, heads=4, kv_heads=2)  # milliseconds a step on one core

# -- the chat templates, as each family documents its format ------------------------------------

# Llama 3 / 3.1 Instruct: BOS, then a header per turn, every turn closed by <|eot_id|>.
LLAMA3_TEMPLATE = (
    "{% for message in messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

# Qwen2.5 Instruct: ChatML, with a default system message when the conversation has none.
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' or (message['role'] == 'system' and not loop.first)"
    " or message['role'] == 'assistant' %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

# Qwen3: ChatML, no default system message; the assistant turns after the last user message
# carry a think block (empty here: no reasoning content), earlier ones lose it. The generation
# prompt opens the assistant turn; with enable_thinking=False it also writes the empty block.
QWEN3_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- set ns = namespace(last_query=0) %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{%- set ns.last_query = loop.index0 %}{%- endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' or (message['role'] == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- if loop.index0 > ns.last_query %}"
    "{{- '<|im_start|>assistant\n<think>\n\n</think>\n\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>assistant\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\n\n</think>\n\n' }}{%- endif %}"
    "{%- endif %}"
)

# Gemma 2 (and 3) instruction-tuned: BOS, user/model turns closed by <end_of_turn>, no system
# role, roles must alternate.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# Phi-3 mini instruct: <|role|> tags, turns closed by <|end|>; without the generation prompt
# the conversation ends with the EOS token (<|endoftext|>), as the shipped template writes it.
PHI3_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# Mistral 7B Instruct (v0.2): BOS, [INST] ... [/INST], the reply closed by </s>; user and
# assistant only, alternating; no generation prompt (the prompt ends with [/INST]).
MISTRAL_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}"
    "{% endfor %}"
)

# GPT-2 and GPT-NeoX ship no chat template: a plain one with Alpaca-like headers. GPT-2's does
# not close the assistant turn (the workbench appends the EOS); GPT-NeoX's writes the EOS itself.
PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '### ' + message['role'] | capitalize + ':\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' and close_with_eos %}{{ eos_token }}{% endif %}"
    "{{ '\n\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}"
)
GPT2_TEMPLATE = "{% set close_with_eos = false %}" + PLAIN_TEMPLATE
NEOX_TEMPLATE = "{% set close_with_eos = true %}" + PLAIN_TEMPLATE


@dataclass(frozen=True)
class Family:
    """One model family: its config class and how its tokenizer is set up.

    `end_of_turn` is the token generation stops on after an answer (the family's generation
    config lists it among its EOS ids); it is the tokenizer's EOS for some families and a
    token of its own for others (Gemma's <end_of_turn>, Phi-3's <|end|>).
    """

    name: str
    config_class: str  # a transformers config class, built with `config_args`
    specials: list[str]
    eos: str
    end_of_turn: str
    chat_template: str
    bos: str | None = None
    pad: str | None = None
    unk: str | None = None
    adds_bos: bool = False  # the tokenizer writes BOS before every text (Llama, Gemma, Mistral)
    system_role: bool = True
    generation_eos: tuple[str, ...] = ()  # generation_config.json's eos_token_id list
    config_args: dict = field(default_factory=dict)


def _decoder(
    hidden: int = TINY["hidden"], kv_heads: int | None = TINY["kv_heads"], **extra
) -> dict:
    """The usual decoder arguments (Llama-style names) at the tiny size; `kv_heads=None` for
    a config without grouped-query attention (GPT-NeoX)."""
    shape = llama_shape(hidden, 2 * hidden, TINY["layers"], TINY["heads"], kv_heads)
    return dict(**shape, max_position_embeddings=512, **extra)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            name="llama3",
            config_class="LlamaConfig",
            specials=[
                "<|begin_of_text|>",
                "<|end_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
            ],
            bos="<|begin_of_text|>",
            eos="<|eot_id|>",  # Llama 3.1 Instruct's tokenizer; the base model's is <|end_of_text|>
            end_of_turn="<|eot_id|>",
            adds_bos=True,
            chat_template=LLAMA3_TEMPLATE,
            generation_eos=("<|end_of_text|>", "<|eot_id|>"),
            config_args=_decoder(tie_word_embeddings=True, rope_theta=500000.0),
        ),
        Family(
            name="qwen2.5",
            config_class="Qwen2Config",
            specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            eos="<|im_end|>",
            pad="<|endoftext|>",
            end_of_turn="<|im_end|>",
            chat_template=QWEN25_TEMPLATE,
            generation_eos=("<|im_end|>", "<|endoftext|>"),
            config_args=_decoder(tie_word_embeddings=True),
        ),
        Family(
            name="qwen3",
            config_class="Qwen3Config",
            specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
            eos="<|im_end|>",
            pad="<|endoftext|>",
            end_of_turn="<|im_end|>",
            chat_template=QWEN3_TEMPLATE,
            generation_eos=("<|im_end|>", "<|endoftext|>"),
            config_args=_decoder(tie_word_embeddings=True, head_dim=16),
        ),
        Family(
            name="gemma2",
            config_class="Gemma2Config",
            specials=["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
            bos="<bos>",
            eos="<eos>",
            pad="<pad>",
            unk="<unk>",
            end_of_turn="<end_of_turn>",
            adds_bos=True,
            system_role=False,
            chat_template=GEMMA_TEMPLATE,
            generation_eos=("<eos>", "<end_of_turn>"),
            config_args=_decoder(head_dim=8, sliding_window=64, query_pre_attn_scalar=8),
        ),
        Family(
            name="phi3",
            config_class="Phi3Config",
            specials=[
                "<unk>",
                "<s>",
                "</s>",
                "<|endoftext|>",
                "<|assistant|>",
                "<|system|>",
                "<|end|>",
                "<|user|>",
            ],
            bos="<s>",
            eos="<|endoftext|>",
            pad="<|endoftext|>",
            unk="<unk>",
            end_of_turn="<|end|>",
            chat_template=PHI3_TEMPLATE,
            generation_eos=("<|endoftext|>", "<|assistant|>", "<|end|>"),
            config_args=_decoder(tie_word_embeddings=False),
        ),
        Family(
            name="mistral",
            config_class="MistralConfig",
            specials=["<unk>", "<s>", "</s>"],
            bos="<s>",
            eos="</s>",
            unk="<unk>",
            end_of_turn="</s>",
            adds_bos=True,
            system_role=False,
            chat_template=MISTRAL_TEMPLATE,
            generation_eos=("</s>",),
            config_args=_decoder(tie_word_embeddings=False, sliding_window=None),
        ),
        Family(
            name="gpt2",
            config_class="GPT2Config",
            specials=["<|endoftext|>"],
            bos="<|endoftext|>",
            eos="<|endoftext|>",
            unk="<|endoftext|>",
            end_of_turn="<|endoftext|>",
            chat_template=GPT2_TEMPLATE,
            generation_eos=("<|endoftext|>",),
            config_args=dict(n_embd=32, n_layer=2, n_head=4, n_positions=512),
        ),
        Family(
            name="gpt-neox",
            config_class="GPTNeoXConfig",
            specials=["<|endoftext|>", "<|padding|>"],
            bos="<|endoftext|>",
            eos="<|endoftext|>",
            pad="<|padding|>",
            unk="<|endoftext|>",
            end_of_turn="<|endoftext|>",
            chat_template=NEOX_TEMPLATE,
            generation_eos=("<|endoftext|>",),
            config_args=_decoder(kv_heads=None, rotary_pct=0.25, tie_word_embeddings=False),
        ),
    ]
}


def _corpus() -> list[str]:
    """The sample data, line by line, and the words the chat templates write."""
    texts = []
    for path in sorted((ROOT / "sample_data").glob("*.jsonl")):
        texts.extend(path.read_text(encoding="utf-8").splitlines())
    texts.append("### User: ### Assistant: ### System: user assistant model system")
    return texts


@functools.lru_cache(maxsize=1)
def _base_bpe() -> str:
    """A byte-level BPE (vocabulary 512) trained once on the sample data, as JSON."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(_corpus(), trainer)
    return backend.to_str()


def build_tokenizer(family: Family):
    """The tiny BPE with the family's special tokens, eos/pad/bos/unk and chat template."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_base_bpe())
    backend.add_special_tokens(family.specials)
    if family.adds_bos:  # as the family's tokenizer.json post-processor does
        bos_id = backend.token_to_id(family.bos)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{family.bos} $A",
            pair=f"{family.bos} $A {family.bos} $B",
            special_tokens=[(family.bos, bos_id)],
        )
    tokens = {"bos_token": family.bos, "pad_token": family.pad, "unk_token": family.unk}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=family.eos,
        **{k: v for k, v in tokens.items() if v is not None},
    )
    tokenizer.chat_template = family.chat_template
    return tokenizer


def build_model(family: Family, tokenizer, seed: int = 0):
    """A randomly initialised model of the family at the tiny size."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    ids = {
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config_class: Callable = getattr(transformers, family.config_class)
    config = config_class(vocab_size=len(tokenizer), **family.config_args, **ids)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.convert_tokens_to_ids(t) for t in family.generation_eos],
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def build_family_folder(family: Family, folder: Path) -> Path:
    """Save the family's tiny model and tokenizer to `folder`, as save_pretrained writes them."""
    tokenizer = build_tokenizer(family)
    return saved_model_folder(build_model(family, tokenizer), tokenizer, folder)


def conversation(family: Family, topic: str = "billing", turns: int = 2) -> list[dict[str, str]]:
    """A `messages` row of `turns` user/assistant exchanges (a system message first, where the
    family has that role)."""
    answers = ["billing", "shipping", "technical", "account", "Friday", "Ingrid"]
    messages = []
    if family.system_role:
        messages.append({"role": "system", "content": "Answer with one word."})
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Which team handles {topic} case {turn}?"})
        messages.append({"role": "assistant", "content": answers[(turn + len(topic)) % 6]})
    return messages
