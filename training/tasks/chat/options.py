"""The chat task's options, as `python training/chat.py --help` lists them (with training.args' RunArguments and
LoraArguments, every task's)."""

from __future__ import annotations

from dataclasses import dataclass, field

from data import InputError
from data.dialogue import DIALOGUE_FORMATS
from data.encoder import LOSS_ON
from training.args import ScratchArguments
from training.tasks import DATA_FILE, TRAIN_FILE

DEFAULT_CHAT_MODEL = "uer/gpt2-chinese-cluecorpussmall"


@dataclass
class ChatArguments(ScratchArguments):
    data: str = field(
        default=None,
        metadata={
            "role": TRAIN_FILE,
            "help": "dialogue file: blank-line text, JSON Lines, LCCC JSON, TSV or chatterbot YAML",
        },
    )
    valid_data: str = field(
        default=None,
        metadata={"role": DATA_FILE, "help": "validation dialogues (default: a seeded --valid-ratio split of --data)"},
    )
    format: str = field(default="auto", metadata={"help": "dialogue file format", "choices": list(DIALOGUE_FORMATS)})
    model: str = field(
        default=DEFAULT_CHAT_MODEL, metadata={"help": "base GPT-2: a Hub id, a local folder, or 'scratch'"}
    )
    loss_on: str = field(
        default="all",
        metadata={
            "help": "tokens that carry loss: all, replies (2nd speaker's turns), last (final turn)",
            "choices": list(LOSS_ON),
        },
    )
    max_len: int = field(
        default=256, metadata={"help": "longest sequence in tokens; longer dialogues drop their earliest turns"}
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.data:
            raise InputError("--data is required: a file of dialogues, e.g. --data data/samples/dialogs.txt")
        if self.max_len < 16:
            raise InputError(f"--max-len must be at least 16, got {self.max_len}")
