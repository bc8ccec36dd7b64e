"""Autocast choice: bf16 on CPU only where the hardware has it (a scalar fallback is minutes slower)."""
from __future__ import annotations

import pytest
import torch

from mmkg.kg_store.errors import ConfigError
from mmkg.model.runtime import cpu_has_native_bf16, resolve_amp

CPU = torch.device("cpu")


AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw\nbugs\t\t: avx512_bf16_fake\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"


def test_native_bf16_is_read_from_the_cpu_flags():
    assert not cpu_has_native_bf16(AVX2_ONLY)  # avx512f alone is not bf16; "bugs" lines are not flags
    assert cpu_has_native_bf16(SAPPHIRE)
    assert not cpu_has_native_bf16("")


def test_auto_on_this_cpu():
    flags = open("/proc/cpuinfo").read()
    assert resolve_amp("auto", CPU) == (torch.bfloat16 if ("avx512_bf16" in flags.split() or
                                                           "amx_bf16" in flags.split()) else None)


def test_explicit_choices_and_a_bad_one():
    assert resolve_amp("off", CPU) is None
    assert resolve_amp("bf16", CPU) == torch.bfloat16
    with pytest.raises(ConfigError, match="amp must be one of"):
        resolve_amp("fp8", CPU)
