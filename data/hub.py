"""Hub reachability and name checks shared by training/ and chat/ (which may not import each other).

Offline, `from_pretrained` on an uncached Hub id retries for minutes; one short TCP connect
tells us first, so an offline user gets one line within seconds.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or "\\" in name or os.path.isabs(name)


def hub_offline_flag() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def can_connect(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """One short TCP connect: no retries, no multi-minute hang (the Hub, Gradio's share server)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    if hub_offline_flag():
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)  # HF_ENDPOINT (a mirror) when set
    return can_connect(url.hostname, url.port or (80 if url.scheme == "http" else 443), timeout)


def custom_code_reason(folder: str) -> str | None:
    """Why `folder` would run its own Python code when loaded (an `auto_map` in its config or tokenizer
    config, or .py files beside them), or None. transformers asks "Do you wish to run the custom
    code? [y/N]" on a terminal; this project never runs a checkpoint's code, whatever stdin is."""
    import json

    for name in ("config.json", "tokenizer_config.json", "processor_config.json"):
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                value = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(value, dict) and value.get("auto_map"):
            return f"{folder} asks to run its own code ({name} has an auto_map); this project never runs a model's code"
    return None
