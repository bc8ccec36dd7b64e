"""Autocast choice: bf16 on CPU only where the hardware has it (a scalar fallback is minutes slower)."""
from __future__ import annotations

import pytest
import torch

from kg_store.errors import KGStoreError
from model.runtime import cpu_has_native_bf16, resolve_amp

CPU = torch.device("cpu")


def test_auto_on_cpu_follows_the_hardware():
    assert resolve_amp("auto", CPU) == (torch.bfloat16 if cpu_has_native_bf16() else None)


def test_explicit_choices_and_a_bad_one():
    assert resolve_amp("off", CPU) is None
    assert resolve_amp("bf16", CPU) == torch.bfloat16
    with pytest.raises(KGStoreError, match="amp must be one of"):
        resolve_amp("fp8", CPU)
