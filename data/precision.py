"""bf16 only where it is fast: CUDA GPUs that support it, and CPUs with bf16 instructions (AMX or
AVX512-BF16), for training and chat.

On a CPU without them (older AMD EPYC and Xeons: AVX2/AVX-512 but no bf16) torch emulates bf16
matmuls through conversions: the first training step of the README's chat command took 200 s
in bf16 against 27 s in fp32 on such a machine, and a chat reply's tokens took 626 ms each in
bf16 against 39 ms in fp32 (bench/decode.py, 12x768 GPT-2, 2-core AMD EPYC). So `--bf16`
means "bf16 where it pays off" and says in one line when it falls back to fp32; `--bf16 force` insists.
"""

from __future__ import annotations

BF16_MODES = ("no", "auto", "force")
_YES = ("auto", "true", "yes", "1", "on")
_NO = ("no", "false", "0", "off", "")
CPUINFO = "/proc/cpuinfo"


def cpu_bf16_support(cpuinfo: str = CPUINFO) -> str | None:
    """The CPU's bf16 instructions ("AMX" on Sapphire Rapids and later, "AVX512-BF16" on Cooper Lake,
    Zen 4 and later), or None when torch has to emulate bf16."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = f.read()
    except OSError:
        return None
    return "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else None


def bf16_mode(value) -> str:
    """'no' | 'auto' | 'force' from a flag or config value (`--bf16` alone and `bf16: true` are 'auto')."""
    text = str(value).strip().lower() if value is not None else ""
    if text in _NO:
        return "no"
    if text in _YES:
        return "auto"
    if text == "force":
        return "force"
    raise ValueError(f"--bf16 takes no value, or one of: force, no (got {value!r})")


def bf16_fast_here() -> tuple[bool, str]:
    """(is bf16 faster than fp32 on the device training will use, and why in words)."""
    import torch

    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return True, "this GPU supports bf16"
        return False, "this GPU has no bf16 support"
    kind = cpu_bf16_support()
    if kind:
        return True, f"this CPU has {kind}"
    return (
        False,
        "this CPU has no bf16 instructions (AMX or AVX512-BF16), so bf16 is several times slower than fp32 here",
    )


def resolve_bf16(mode: str, say=None) -> bool:
    """Whether to train in bf16 for `mode`; says in one line when `--bf16` falls back to fp32."""
    if mode == "no":
        return False
    if mode == "force":
        return True
    fast, why = bf16_fast_here()
    if not fast and say is not None:
        say(f"note: --bf16 ignored: {why}; training in fp32 (--bf16 force to insist)")
    return fast
