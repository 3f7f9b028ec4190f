"""Fixed-length blocks of raw text for continued pre-training: every token learned.

Documents are tokenised without special tokens and joined into one stream, each followed by
the tokenizer's EOS (so the model sees where a document ends, as in pre-training), and the
stream is cut into blocks of `block_size` tokens. The last block is usually shorter: it is
kept and padded by `BlockCollator` rather than dropped, so a small corpus (and a held-out set
measured for perplexity) loses no token; only a last block of a single token, which has
nothing to predict, is dropped. Inside a block, attention runs across document
boundaries, as in GPT-style pre-training; the EOS between documents is what separates them.

`BlockCollator` makes the labels: a copy of the input ids (every token learned), with
IGNORE_INDEX only on the padding of a short block. Padding is told apart by each block's
length, never by its token id: SmolLM2's pad token is its EOS, which must be learned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.errors import WorkbenchError
from workbench.tokens.tokenizing import IGNORE_INDEX


@dataclass
class TokenBlocks:
    """A corpus as blocks of token ids: `blocks[i]` holds `block_size` ids (the last one may
    hold fewer), `documents` documents and `tokens` ids in all, EOS separators included."""

    blocks: list[list[int]]
    block_size: int
    documents: int
    tokens: int
    separator: int  # the token id that ends every document (the tokenizer's EOS)

    def __len__(self) -> int:
        return len(self.blocks)

    @property
    def predicted(self) -> int:
        """Tokens that carry loss: all but each block's first, which has no context."""
        return self.tokens - len(self.blocks)

    @property
    def padded(self) -> int:
        """Padding positions the collator adds to the last, short block."""
        return len(self.blocks) * self.block_size - self.tokens

    def to_hf(self):
        """As a `datasets.Dataset` with one `input_ids` column (labels come from the collator)."""
        import datasets

        return datasets.Dataset.from_dict({"input_ids": self.blocks})

    def __str__(self) -> str:
        short = self.tokens % self.block_size
        last = f"; the last holds {short} and is padded" if short else ""
        return (
            f"{self.documents} documents, {self.tokens:,} tokens (one EOS after each document) "
            f"in {len(self.blocks)} blocks of {self.block_size}{last}"
        )


def token_blocks(texts: list[str], tokenizer, block_size: int = 256) -> TokenBlocks:
    """Tokenise `texts`, end each with EOS, join them and cut the stream into blocks."""
    if block_size < 2:
        raise WorkbenchError(f"`block_size`={block_size}: a block needs at least 2 tokens.")
    separator = tokenizer.eos_token_id
    if separator is None:
        raise WorkbenchError(
            "The tokenizer has no EOS token to put between documents: set "
            "tokenizer.eos_token (for example to '<|endoftext|>') first."
        )
    if not texts:
        raise WorkbenchError("No documents to cut into blocks: pass at least one text.")
    encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    stream: list[int] = []
    for ids in encoded:
        stream.extend(ids)
        stream.append(separator)
    blocks = [stream[i : i + block_size] for i in range(0, len(stream), block_size)]
    if len(blocks) > 1 and len(blocks[-1]) == 1:
        blocks.pop()  # one token predicts nothing (a block's first token has no context)
    return TokenBlocks(blocks, block_size, len(texts), sum(map(len, blocks)), separator)


class BlockCollator:
    """Batches blocks: labels equal the input ids (every token learned), padding of a short
    block is masked with IGNORE_INDEX and left out of the attention mask.

    Returns input_ids, labels, attention_mask and `num_tokens` (the real tokens, a Python
    int, which the project's Trainer counts without a device sync).
    """

    def __init__(self, pad_token_id: int | None) -> None:
        self.pad_token_id = 0 if pad_token_id is None else pad_token_id  # never attended

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        lengths = [len(f["input_ids"]) for f in features]
        width = max(lengths)
        ids, labels, mask = [], [], []
        for feature, length in zip(features, lengths):
            pad = width - length
            block = list(feature["input_ids"])
            ids.append(block + [self.pad_token_id] * pad)
            labels.append(block + [IGNORE_INDEX] * pad)
            mask.append([1] * length + [0] * pad)
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
            "num_tokens": sum(lengths),
        }
