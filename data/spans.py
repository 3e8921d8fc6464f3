"""Recurring spans of a fact corpus, and the self-quiz built from them.

A user's facts live in the words their text repeats: names, places, objects (林小溪, 云栖岛,
桂花酥). jieba splits invented names oddly, so they are found from the text itself: character
spans of 2-6 characters that occur in several lines and stick together (their pointwise
mutual information across every split point is high, the idea behind PMI-masking, Levine et
al. 2021), keeping the longest form (林小溪, not 林小 or 小溪). Training masks these spans
whole; the self-quiz masks them in a line held out from training and asks the model to fill
them in, which measures whether the fact was learned rather than the line copied.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass

# Runs of CJK characters, Latin letters and digits (codes such as K7, Q-19 or B2 name things too):
# a BERT vocab reads a CJK character as one token and a Latin or digit run as word pieces.
# A hyphen only ever sits inside a code, so no span starts or ends with one.
_WORD_CHARS = re.compile(r"(?:[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)+")
_CODE_CHARS = re.compile(r"[A-Za-z0-9-]")


def _inside_code(text: str, i: int) -> bool:
    """Whether position i of text (between text[i - 1] and text[i]) is inside a code such as Q-19."""
    return 0 < i < len(text) and bool(_CODE_CHARS.match(text[i - 1]) and _CODE_CHARS.match(text[i]))


FUNCTION_CHARS = set(
    "的了是在有和与也就都而及或一这那个们我你他她它为以于之其中上下不没很又还把被给从向对叫说着过吗呢吧啊"
)


def _grams(line: str, max_len: int) -> set[str]:
    out = set()
    for run in _WORD_CHARS.findall(line):
        # a gram starts and ends at the edges of a code (Q-19 or 1987, never 已经1 of 已经12年)
        cut = [not _inside_code(run, i) for i in range(len(run) + 1)]
        for n in range(1, max_len + 1):
            out.update(run[i : i + n] for i in range(len(run) - n + 1) if cut[i] and cut[i + n])
    return out


def recurring_spans(
    passages: list[str], min_lines: int = 2, max_len: int = 6, min_pmi: float = 1.0, max_share: float = 0.5
) -> dict[str, int]:
    """{span: number of lines it occurs in} for the cohesive spans that recur across lines.

    Kept: 2-`max_len` characters (CJK, Latin letters, digits; digits only in a code with letters
    such as Q-19 or B2: 12年 or 1987 are amounts and dates, not names), in at least `min_lines`
    lines (and at most `max_share` of them), not starting or ending with a function character
    (的, 是, 了 ...), cohesive (every
    split has PMI >= `min_pmi`, or the span is most of its commoner part's lines), and whole: a
    span nearly always seen with the same character before or after it is a piece of a longer
    span or phrase (林小 of 林小溪, 早上七点开 of a repeated sentence) and is dropped.
    """
    n = len(passages)
    df = Counter()
    for line in passages:
        df.update(_grams(line, max_len + 1))
    limit = max(min_lines, int(max_share * n))
    extended = Counter()  # the most lines any one-character extension of a span occurs in
    for g, c in df.items():
        if len(g) >= 3 and c >= min_lines:
            for part in (g[1:], g[:-1]):
                extended[part] = max(extended[part], c)

    def cohesive(g: str) -> bool:
        """Every split of g: the parts co-occur more than by chance (PMI >= min_pmi), or the whole
        accounts for most lines of its commoner part (a name in half of a small corpus: PMI is low
        only because the corpus is small)."""
        for i in range(1, len(g)):
            if _inside_code(g, i):
                continue  # one word to the tokenizer, however common its digits (and its pieces are no grams)
            a, b = df[g[:i]], df[g[i:]]
            if math.log(n * df[g] / (a * b)) < min_pmi and df[g] < 0.6 * max(a, b):
                return False
        return True

    return {
        g: c
        for g, c in sorted(df.items(), key=lambda kv: (-kv[1], -len(kv[0]), kv[0]))
        if 2 <= len(g) <= max_len
        and min_lines <= c <= limit
        and g[0] not in FUNCTION_CHARS
        and g[-1] not in FUNCTION_CHARS
        and (not any(ch.isdigit() for ch in g) or any(ch.isascii() and ch.isalpha() for ch in g))
        and extended[g] < 0.7 * c
        and cohesive(g)
    }


@dataclass
class Probe:
    text: str  # the line with the span masked
    answer: str
    where: str  # "line N"
    held_out: bool  # the line was kept out of training


def self_quiz(
    passages: list[str], spans: dict[str, int], max_probes: int = 30, hold_share: float = 0.2, seed: int = 0
) -> tuple[list[int], list[Probe]]:
    """(indices of lines to hold out of training, probes). A span seen in 3+ lines is probed in a
    held-out line; one seen in 2 lines, or once the hold-out budget is spent, in a training line."""
    rng = random.Random(seed)
    budget = int(hold_share * len(passages))
    held: set[int] = set()
    probes: list[Probe] = []
    for span in sorted(spans, key=lambda g: (-spans[g], -len(g), g)):
        if len(probes) >= max_probes:
            break
        lines = [i for i, p in enumerate(passages) if span in p]
        if not lines:
            continue
        free = [i for i in lines if i not in held]
        hold = len(free) >= 3 and len(held) < budget  # two training lines still teach the span
        i = rng.choice(free if free else lines)
        if hold:
            held.add(i)
        elif i in held:
            hold = True
        text = passages[i].replace(span, "[MASK]" * len(span), 1)
        probes.append(Probe(text, span, f"line {i + 1}", hold))
    return sorted(held), probes
