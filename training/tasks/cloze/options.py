"""The cloze task's options, as `python training/cloze.py --help` lists them (with training.args' RunArguments and
LoraArguments, every task's)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from data import InputError
from data.pairs import PAIR_FORMATS
from training.args import DEFAULT_BERT, ScratchArguments
from training.tasks import DATA_FILE, SIDE_FILE, TRAIN_FILE

# Measured on bench/corpora (reworded prompts, 3,000 steps, same recipe otherwise): town15 8/8, shop30 13/14,
# friends60 21/26 with rotary positions; 4/8, 6/14, 8/26 with BERT's absolute ones. A masked name in a new
# sentence sits at new positions, and the model has to tell which character of the name each [MASK] is.
SCRATCH_ARCHITECTURES = {
    "roformer": ("RoFormerConfig", "RoFormerForMaskedLM"),
    "bert": ("BertConfig", "BertForMaskedLM"),
}


@dataclass
class ClozeArguments(ScratchArguments):
    data: str = field(
        default=None,
        metadata={"role": TRAIN_FILE, "help": "corpus: one passage per line, or JSON Lines with a 'text' field"},
    )
    pairs: bool = field(
        default=False,
        metadata={
            "help": "read --data as sentence pairs (any file training/similarity.py reads; labels ignored) and "
            "train on "
            "`[CLS] a [SEP] b [SEP]` with token types, in both orders: masked-LM pre-training for "
            "training/similarity.py"
        },
    )
    format: str = field(
        default="auto", metadata={"help": "with --pairs: the pair file's format", "choices": list(PAIR_FORMATS)}
    )
    model: str = field(
        default=DEFAULT_BERT,
        metadata={"help": "base masked-LM: a Hub id (any *ForMaskedLM), a local folder, or 'scratch'"},
    )
    eval_prompts: str = field(
        default=None,
        metadata={
            "role": SIDE_FILE,
            "help": "quiz file: `text with [MASK]<TAB>answer` per line; top-5 before/after training",
        },
    )
    general_text: str = field(
        default=None,
        metadata={"role": SIDE_FILE, "help": "general text to measure how much ordinary cloze accuracy is lost"},
    )
    max_len: int = field(
        default=128, metadata={"help": "window length in tokens; longer passages become overlapping windows"}
    )
    overlap: int = field(
        default=None,
        metadata={"help": "tokens shared by consecutive windows of a long passage (default: a quarter of --max-len)"},
    )
    mlm_probability: float = field(
        default=None,
        metadata={"help": "fraction of tokens (or words) masked (default: 0.4 for a fact corpus, 0.15 with --pairs)"},
    )
    mask_replace_prob: float = field(default=0.8, metadata={"help": "of masked tokens: fraction replaced by [MASK]"})
    random_replace_prob: float = field(
        default=0.1, metadata={"help": "of masked tokens: fraction replaced by a random token"}
    )
    whole_word_mask: bool = field(
        default=False, metadata={"help": "mask whole jieba words instead of single characters"}
    )
    span_probability: float = field(
        default=0.9,
        metadata={
            "help": "fraction of training lines in which one recurring span of your text (a name, a place, an "
            "object, found "
            "by data/spans.py) is masked whole, or all but its first characters, on top of --mlm-probability"
        },
    )
    recombine_probability: float = field(
        default=0.9,
        metadata={
            "help": "fraction of training lines seen recombined: their recurring spans kept (in another order half "
            "of the "
            "time), the words between them kept, replaced or dropped, one span masked; teaches the facts apart from "
            "the sentences that state them (0: off)"
        },
    )
    bag_probability: float = field(
        default=0.3,
        metadata={
            "help": "fraction of training lines seen as a bag of words: one recurring span masked, the text "
            "around it cut into short pieces, a third of them kept, shuffled; teaches which words point to a name "
            "(0: off)"
        },
    )
    user_dict: str = field(
        default=None,
        metadata={"role": DATA_FILE, "help": "jieba user dictionary (one word per line) so invented names stay whole"},
    )
    n_layer: int = field(
        default=2, metadata={"help": "scratch: transformer layers"}
    )  # smaller than ScratchArguments': a fact corpus is small
    n_embd: int = field(default=128, metadata={"help": "scratch: hidden size"})
    dropout: float = field(
        default=None,
        metadata={
            "help": "scratch: dropout (default 0.1; 0 with --pairs, the short masked-LM stage of "
            "training/similarity.py, which learns more per minute without it)"
        },
    )
    scratch_architecture: str = field(
        default=None,
        metadata={
            "help": "scratch: 'roformer' (rotary, relative positions: a fact asked in new words sits at new "
            "positions; the "
            "default for a fact corpus) or 'bert' (absolute positions; the default with --pairs, which "
            "training/similarity.py builds on)"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.data:
            raise InputError("--data is required: a text file of passages, e.g. --data data/samples/cloze_corpus.txt")
        if self.max_len < 16:
            raise InputError(f"--max-len must be at least 16, got {self.max_len}")
        if self.overlap is None:
            self.overlap = self.max_len // 4
        if not 0 <= self.overlap < self.max_len // 2:
            raise InputError(f"--overlap must be between 0 and half of --max-len, got {self.overlap}")
        for flag, value in (
            ("--span-probability", self.span_probability),
            ("--recombine-probability", self.recombine_probability),
            ("--bag-probability", self.bag_probability),
        ):
            if not 0 <= value <= 1:
                raise InputError(f"{flag} must be between 0 and 1, got {value}")
        if self.scratch_architecture is None:
            self.scratch_architecture = "bert" if self.pairs else "roformer"
        if self.scratch_architecture not in SCRATCH_ARCHITECTURES:
            raise InputError(
                f"--scratch-architecture must be one of {', '.join(SCRATCH_ARCHITECTURES)}, got "
                f"{self.scratch_architecture!r}"
            )
        if self.dropout is None:
            self.dropout = 0.0 if self.pairs else 0.1
        if not 0 <= self.dropout < 1:
            raise InputError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.mlm_probability is None:  # a small fact corpus is learned faster with more masked per pass
            self.mlm_probability = 0.15 if self.pairs else 0.4
        if not 0 < self.mlm_probability < 1:
            raise InputError(f"--mlm-probability must be between 0 and 1, got {self.mlm_probability}")
        if (
            self.mask_replace_prob < 0
            or self.random_replace_prob < 0
            or self.mask_replace_prob + self.random_replace_prob > 1
        ):
            raise InputError("--mask-replace-prob and --random-replace-prob must be >= 0 and add up to at most 1")
        if self.whole_word_mask:  # the library collator only masks whole words with [MASK]
            self.mask_replace_prob, self.random_replace_prob = 1.0, 0.0
        if self.user_dict and not os.path.exists(self.user_dict):
            raise InputError(f"file not found: {self.user_dict}")
