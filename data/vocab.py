"""Character vocabularies for models trained from scratch.

Chinese text is split into single characters by BERT's pre-tokenizer; English words and
numbers stay whole, so for every ASCII letter or digit both `c` and `##c` go into the
vocab: an unseen English word then becomes characters instead of one `[UNK]`.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Iterable

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_char_vocab(texts: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> list[str]:
    """Special tokens, then characters by falling frequency (ties by code point), as BERT would split them."""
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    # Same normaliser and pre-tokeniser as BertTokenizer(do_lower_case=True): the vocab
    # holds exactly the pieces the tokenizer will look up.
    normalizer, pre = BertNormalizer(lowercase=True), BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)):
            counts[word[0]] += 1
            for ch in word[1:]:
                counts["##" + ch] += 1
    ascii_alnum = [c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    for c in ascii_alnum:  # always present, so English and numbers never turn into [UNK]
        counts[c] += 0
        counts["##" + c] += 0
    chars = [t for t, n in counts.items() if n >= min_freq or t.lstrip("#") in ascii_alnum]
    chars.sort(key=lambda t: (-counts[t], t))
    if max_size is not None:
        chars = chars[: max(0, max_size - len(SPECIAL_TOKENS))]
    return SPECIAL_TOKENS + [t for t in chars if t not in SPECIAL_TOKENS]


def write_vocab(tokens: list[str], folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "vocab.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    return path


def make_tokenizer(tokens: list[str]):
    """A `BertTokenizerFast` over the given vocab.

    transformers 5: the argument is `vocab=`; the blog-post idiom `vocab_file=` silently
    builds a tokenizer that knows only the special tokens.
    """
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)})
