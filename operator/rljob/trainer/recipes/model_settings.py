"""The lean Atari module's own model-config settings, importable without torch (recipes parse args without it)."""
from __future__ import annotations

from pathlib import Path

# Model-config keys the module reads; the recipe writes them next to RLlib's own.
PRECISION_KEY = "rljob_precision"
CHANNELS_LAST_KEY = "rljob_channels_last"
INIT_KEY = "rljob_init"
PRECISIONS = ("auto", "float32", "bfloat16")
INITS = ("orthogonal", "default")
# CPU flags of native bfloat16 arithmetic (Linux's names): AVX-512 BF16's dot products, AMX's tiles.
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies in bfloat16 natively; elsewhere autocast would emulate it, slower than float32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: not detected, so not used
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return bool(CPU_BF16_FLAGS & set(line.split(":", 1)[-1].split()))
    return False
