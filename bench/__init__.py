"""Benchmarks (one JSON line per figure); `machine()` names the CPU beside every figure."""

import os
from pathlib import Path


def machine() -> str:
    """Cores, CPU model and its fast-bf16 flag (AMX, AVX512-BF16): a lead on one kind vanished on the other."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
        flags = " AMX" if "amx_bf16" in info else " AVX512-BF16" if "avx512_bf16" in info else ""
    except OSError:
        model, flags = "?", ""
    return f"{os.cpu_count()} cores, {model}{flags}"
