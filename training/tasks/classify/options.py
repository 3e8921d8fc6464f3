"""The classify task's options, as `python training/classify.py --help` lists them (with training.args' RunArguments
and LoraArguments, every task's)."""

from __future__ import annotations

from dataclasses import dataclass, field

from data import InputError
from data.labelled import LABELLED_FORMATS
from training.args import DEFAULT_BERT, ScratchArguments
from training.tasks import DATA_FILE, TRAIN_FILE

CLASS_WEIGHTS = ("auto", "balanced", "none")


@dataclass
class ClassifyArguments(ScratchArguments):
    data: str = field(
        default=None,
        metadata={
            "role": TRAIN_FILE,
            "help": "labelled texts: CSV/TSV with a header (text and label columns found by name), text<TAB>label "
            "lines, JSON Lines {text, label}, or a folder with one sub-folder of .txt files per class",
        },
    )
    dev: str = field(
        default=None,
        metadata={"role": DATA_FILE, "help": "dev texts, same format (default: a stratified --valid-ratio split)"},
    )
    format: str = field(default="auto", metadata={"help": "file format", "choices": list(LABELLED_FORMATS)})
    text_column: str = field(default=None, metadata={"help": "the text column's name (default: found by name)"})
    label_column: str = field(default=None, metadata={"help": "the label column's name (default: found by name)"})
    model: str = field(
        default=DEFAULT_BERT,
        metadata={"help": "base: a Hub id or folder (BERT, ERNIE, RoBERTa ...) or 'scratch'"},
    )
    max_len: int = field(default=128, metadata={"help": "tokens per text; longer texts are cut"})
    class_weights: str = field(
        default="auto",
        metadata={
            "help": "weigh the loss by class: balanced (each class counts the same), none, or auto (the square root "
            "of balanced when the largest class has 1.5x the smallest)",
            "choices": list(CLASS_WEIGHTS),
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.data:
            raise InputError("--data is required: a file of labelled texts, e.g. --data data/samples/reviews.csv")
        if self.max_len < 8:
            raise InputError(f"--max-len must be at least 8, got {self.max_len}")
