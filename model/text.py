"""Tokenisers the model layer accepts, behind one small protocol.

Real backbones bring their Hugging Face tokenizer; the tiny random backbones used in tests
use `ByteTokenizer`, which needs no files at all (UTF-8 bytes + 3 specials), so the tests
run offline and load in no time.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence


class TextCodec(Protocol):
    """What the model needs from a tokenizer."""

    pad_token_id: int
    eos_token_id: int

    def encode_batch(self, texts: Sequence[str], *, max_length: int | None = None) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes shifted by 3; ids 0/1/2 are pad/eos/bos (T5 style: decoder start = pad)."""

    pad_token_id = 0
    eos_token_id = 1
    bos_token_id = 2
    offset = 3
    vocab_size = 256 + offset

    def encode_batch(self, texts: Sequence[str], *, max_length: int | None = None) -> list[list[int]]:
        out = [[b + self.offset for b in t.encode("utf-8")] for t in texts]
        return [ids[:max_length] if max_length else ids for ids in out]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i - self.offset for i in ids if i >= self.offset).decode("utf-8", errors="replace")


class HFTokenizer:
    """Adapter for a `transformers` tokenizer; no special tokens added (the model adds eos itself)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        self.eos_token_id = int(eos if eos is not None else 0)
        # decoder-only tokenizers often have no pad token; any id works because padding is masked
        self.pad_token_id = int(pad if pad is not None else self.eos_token_id)

    def encode_batch(self, texts: Sequence[str], *, max_length: int | None = None) -> list[list[int]]:
        enc = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [ids[:max_length] if max_length else list(ids) for ids in enc]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)
