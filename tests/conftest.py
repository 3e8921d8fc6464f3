"""Shared fixtures: offline hub, tiny training flags, the sample data, ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Small enough to train in a couple of seconds on 2 CPU cores, big enough for the loss to fall.
TINY_CHAT = [
    "--model",
    "scratch",
    "--n-layer",
    "1",
    "--n-embd",
    "32",
    "--n-head",
    "2",
    "--max-len",
    "64",
    "--batch-size",
    "16",
    "--seed",
    "0",
]


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (only present in the project workspace)")
    return SHARED_DATA


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture(scope="session")
def chat_checkpoint(tmp_path_factory):
    """A tiny chat model trained by training/chat.py on the sample dialogues (the real contract)."""
    from training import chat as chat_script
    from training.cli import guarded

    out = tmp_path_factory.mktemp("ckpt") / "chat"
    argv = ["--data", str(SAMPLES / "dialogs.txt"), "--output", str(out), *TINY_CHAT, "--epochs", "3", "--lr", "3e-3"]
    assert guarded(chat_script.main, argv) == 0
    return out
