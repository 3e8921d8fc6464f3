"""The write task's options, as `python training/write.py --help` lists them (with training.args' RunArguments and
LoraArguments, every task's)."""

from __future__ import annotations

from dataclasses import dataclass, field

from data import InputError
from training.args import ScratchArguments
from training.tasks import DATA_FILE, TRAIN_FILE
from training.tasks.chat.options import DEFAULT_CHAT_MODEL


@dataclass
class WriteArguments(ScratchArguments):
    data: str = field(
        default=None,
        metadata={
            "role": TRAIN_FILE,
            "help": "your prose: a .txt file (hard-wrapped lines are joined back into paragraphs) or a folder of them",
        },
    )
    dev: str = field(
        default=None,
        metadata={"role": DATA_FILE, "help": "held-out text to measure on (default: the last --valid-ratio of --data)"},
    )
    model: str = field(
        default=DEFAULT_CHAT_MODEL, metadata={"help": "base GPT-2: a Hub id, a local folder, or 'scratch'"}
    )
    max_len: int = field(default=256, metadata={"help": "block length in tokens: the text is cut into blocks of it"})
    dropout: float = field(
        default=0.1,
        metadata={
            "help": "scratch: dropout of the embeddings and residuals, none on attention (a small text is learned by "
            "heart fast)"
        },
    )
    average_weights: float = field(
        default=0.995,
        metadata={
            "help": "scratch: the weights evaluated and saved are a moving average of the trained ones with this "
            "decay per step; 0 turns it off"
        },
    )
    ngram_teacher: float = field(
        default=0.7,
        metadata={
            "help": "scratch: share of the loss taken from a Kneser-Ney n-gram model's next-token distribution "
            "(counted on the rest of your text) instead of the next token alone; 0 turns it off"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.data:
            raise InputError("--data is required: a text file of your prose, e.g. --data data/samples/story.txt")
        if not 0 <= self.dropout < 1:
            raise InputError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.ngram_teacher < 1:
            raise InputError(f"--ngram-teacher must be in [0, 1), got {self.ngram_teacher}")
        if not 0 <= self.average_weights < 1:
            raise InputError(f"--average-weights must be in [0, 1), got {self.average_weights}")
        if self.max_len < 16:
            raise InputError(f"--max-len must be at least 16, got {self.max_len}")
