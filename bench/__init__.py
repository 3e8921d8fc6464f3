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


# the flags that decide which kernels are fast (int8 dot products, bf16, AMX tiles)
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "avx_vnni")


def cpu_flags() -> list[str]:
    """Of KERNEL_FLAGS, those /proc/cpuinfo lists (empty where it cannot be read)."""
    try:
        line = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    except (OSError, StopIteration):
        return []
    have = set(line.split(":", 1)[1].split())
    return [f for f in KERNEL_FLAGS if f in have]
