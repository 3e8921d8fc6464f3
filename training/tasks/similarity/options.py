"""The similarity task's options, as `python training/similarity.py --help` lists them (with training.args'
RunArguments and LoraArguments, every task's)."""

from __future__ import annotations

from dataclasses import dataclass, field

from data import InputError
from data.pairs import PAIR_FORMATS, TASKS
from training.args import DEFAULT_BERT, ScratchArguments
from training.tasks import DATA_FILE, OUTPUT_FILE, SIDE_FILE, TRAIN_FILE


@dataclass
class SimilarityArguments(ScratchArguments):
    train: str = field(
        default=None,
        metadata={
            "role": TRAIN_FILE,
            "help": "training pairs: TSV s1<TAB>s2<TAB>label, AFQMC JSON Lines, or CSV with a header",
        },
    )
    dev: str = field(
        default=None,
        metadata={"role": DATA_FILE, "help": "dev pairs (default: a seeded --valid-ratio split of --train)"},
    )
    format: str = field(default="auto", metadata={"help": "pair file format", "choices": list(PAIR_FORMATS)})
    task: str = field(
        default="auto",
        metadata={"help": "classification or regression (auto: from the labels)", "choices": list(TASKS)},
    )
    model: str = field(
        default=DEFAULT_BERT,
        metadata={"help": "base: a Hub id or folder (BERT, ERNIE, our cloze checkpoint) or 'scratch'"},
    )
    max_len: int = field(default=64, metadata={"help": "tokens per pair; the longer sentence is cut first"})
    metric: str = field(
        default=None, metadata={"help": "metric that picks the best epoch (default: accuracy, or spearman for scores)"}
    )
    symmetric: bool | None = field(
        default=None,
        metadata={
            "help": "also train on every pair in the other order (b, a); default: on for two classes or scores, "
            "off for 3+ "
            "classes (entailment-style labels are not symmetric)"
        },
    )
    predict: str = field(
        default=None, metadata={"role": SIDE_FILE, "help": "after training, score the pairs in this file"}
    )
    output_file: str = field(
        default=None,
        metadata={
            "role": OUTPUT_FILE,
            "help": "where --predict writes JSON Lines (default: <output>/predictions.jsonl)",
        },
    )
    no_mlm_stage: bool = field(
        default=False,
        metadata={
            "help": "from scratch, skip the masked-LM stage on the pair text (training/cloze.py --pairs) that runs "
            "first by default"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.train:
            raise InputError("--train is required: a file of sentence pairs, e.g. --train data/samples/pairs.tsv")
        if self.max_len < 8:
            raise InputError(f"--max-len must be at least 8, got {self.max_len}")
        if self.metric not in (None, "accuracy", "f1", "pearson", "spearman", "loss"):
            raise InputError(f"--metric must be accuracy, f1, pearson, spearman or loss, got {self.metric}")
