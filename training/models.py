"""Base models: a local folder, a Hub id (cached or downloaded), or `scratch`; LoRA on top.

Offline, `from_pretrained` on an uncached Hub id retries for minutes. We look in the cache
first and probe the Hub once with a short timeout, so an offline user gets one line and
(unless --no-fallback) a scratch model within seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from data.errors import InputError
from data.hub import custom_code_reason, hub_reachable, looks_like_path

SCRATCH = "scratch"


@dataclass
class BaseChoice:
    """Where the base model comes from: `source` is "scratch", "folder" or "hub"."""

    source: str
    name: str
    fallback_reason: str | None = None


# The default bases' ids on ModelScope (modelscope.cn), for --hub modelscope; any other id is passed as given.
MODELSCOPE_IDS = {"bert-base-chinese": "AI-ModelScope/bert-base-chinese"}
HUBS = ("huggingface", "modelscope")
MODELSCOPE_HOST = "www.modelscope.cn"


def hub_of(hub: str | None) -> str:
    """--hub, else USE_MODELSCOPE_HUB=1 (as LLaMA-Factory reads it), else the Hugging Face Hub (or HF_ENDPOINT)."""
    if hub:
        return hub
    return "modelscope" if os.environ.get("USE_MODELSCOPE_HUB", "").lower() in ("1", "true", "yes") else "huggingface"


def unreachable(name: str, hub: str) -> str:
    """The one line said when no source answers: both ways to a base from mainland China."""
    from huggingface_hub import constants

    where = f"ModelScope ({MODELSCOPE_HOST})" if hub == "modelscope" else f"the Hugging Face Hub ({constants.ENDPOINT})"
    reason = f"{name!r} is not in the local cache and {where} cannot be reached (offline)"
    if "/" in name:
        reason += f"; there is no local folder {name!r} either"
    other = (
        "--hub huggingface, or a mirror: HF_ENDPOINT=https://hf-mirror.com"
        if hub == "modelscope"
        else "a mirror (HF_ENDPOINT=https://hf-mirror.com) or --hub modelscope (pip install modelscope)"
    )
    return f"{reason}. 在中国大陆可以用 From mainland China try {other}"


def _from_modelscope(name: str, load, no_fallback: bool):
    """Download `name` (or its ModelScope id) with modelscope's snapshot_download, then load the folder."""
    from data.hub import can_connect

    try:
        from modelscope import snapshot_download
    except ImportError:
        raise InputError("--hub modelscope needs the modelscope package: pip install modelscope") from None
    ms_id = MODELSCOPE_IDS.get(name, name)
    try:  # downloaded before?
        folder = snapshot_download(ms_id, local_files_only=True)
        return _load_or_explain(load, folder, f"{ms_id} (ModelScope) is not usable"), BaseChoice("hub", ms_id)
    except InputError:
        raise
    except Exception:
        pass
    if not can_connect(MODELSCOPE_HOST):
        reason = unreachable(name, "modelscope")
        if no_fallback:
            raise InputError(f"{reason}; drop --no-fallback to train from scratch")
        return None, BaseChoice(SCRATCH, SCRATCH, fallback_reason=reason)
    try:
        folder = snapshot_download(ms_id)
    except Exception as e:  # not found, a broken download: one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"could not download {ms_id!r} from ModelScope: {first[:300]}")
    reason = custom_code_reason(folder)
    if reason:
        raise InputError(reason)
    return _load_or_explain(load, folder, f"{ms_id} (ModelScope) is not usable"), BaseChoice("hub", ms_id)


def load_base(name: str, load: Callable[..., object], no_fallback: bool, what: str, hub: str | None = None):
    """Load `name` with `load(name_or_path, **kw)`; returns (loaded_or_None, BaseChoice).

    None means "build from scratch" (asked for, or the offline fallback). A Hub id comes from the Hugging Face Hub
    (HF_ENDPOINT honoured: a mirror) or, with hub="modelscope", from ModelScope.
    """
    if name == SCRATCH:
        return None, BaseChoice(SCRATCH, SCRATCH)
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        reason = custom_code_reason(expanded)
        if reason:
            raise InputError(reason)
        return _load_or_explain(load, expanded, f"{name} is not a usable {what} folder"), BaseChoice("folder", expanded)
    if looks_like_path(name) or os.path.exists(expanded):
        raise InputError(f"model folder not found: {name}")
    if hub_of(hub) == "modelscope":
        return _from_modelscope(name, load, no_fallback)
    _refuse_cached_custom_code(name)
    try:  # cached from an earlier download?
        return load(name, local_files_only=True), BaseChoice("hub", name)
    except InputError:
        raise
    except Exception:
        pass
    if not hub_reachable():
        reason = unreachable(name, "huggingface")
        if no_fallback:
            raise InputError(f"{reason}; drop --no-fallback to train from scratch, or pass a local folder to --model")
        return None, BaseChoice(SCRATCH, SCRATCH, fallback_reason=reason)
    return _load_or_explain(load, name, f"could not load {name!r} from the Hugging Face Hub"), BaseChoice("hub", name)


def _refuse_cached_custom_code(name: str) -> None:
    """The same refusal for a Hub model already in the cache (a download is refused by transformers
    itself: the Auto* loaders here pass trust_remote_code=False; chat loads GPT-2 classes by name)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # not a valid repo id: the loader says so in one line further on
        return
    if isinstance(cached, str):
        reason = custom_code_reason(os.path.dirname(cached))
        if reason:
            raise InputError(reason.replace(os.path.dirname(cached), name))


def _load_or_explain(load, name, prefix):
    try:
        return load(name)
    except InputError:
        raise
    except Exception as e:  # OSError, ValueError, EnvironmentError from from_pretrained: report in one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"{prefix}: {first[:300]}")


def check_model_type(path_or_id: str, expected: tuple[str, ...], what: str, **kw) -> None:
    """Refuse a folder whose config is another architecture (it would load with random weights)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path_or_id, **kw)
    if config.model_type not in expected:
        raise InputError(f"{path_or_id} holds a {config.model_type} model, not a {what} ({'/'.join(expected)})")


def wrap_lora(model, r: int, alpha: int, dropout: float, targets: list[str], task_type: str, **extra):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type=task_type, **extra
    )
    return get_peft_model(model, config)
