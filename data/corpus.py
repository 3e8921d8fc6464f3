"""Cloze corpora and prompts: what a masked-LM learns from and how it is quizzed.

Corpus: plain text, one passage per line (blank lines ignored), or JSON Lines with `text`.
Prompts: `text with [MASK]<TAB>expected answer` per line (`[mask]` and `［MASK］` accepted).
Long passages become overlapping windows instead of being cut off.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from data.errors import BadRows, InputError
from data.text import MAX_LINE_CHARS, normalize_utterance
from data.textio import LONE_SURROGATE, loads_json, read_text

MASK = "[MASK]"
_MASK_VARIANTS = re.compile(r"\[\s*mask\s*\]|［\s*mask\s*］", re.IGNORECASE)


def normalize_masks(text: str) -> str:
    """`[mask]`, `[ MASK ]` and the full-width `［MASK］` all become `[MASK]`."""
    return _MASK_VARIANTS.sub(MASK, text)


@dataclass
class CorpusFile:
    path: str
    format: str
    encoding: str
    passages: list[str]
    bad: BadRows = field(default_factory=BadRows)


def read_corpus(path: str | os.PathLike, min_chars: int = 2) -> CorpusFile:
    """Read passages; raises `InputError` when nothing usable is left."""
    path = os.fspath(path)
    bad = BadRows()
    text, encoding = read_text(path, bad)
    name = os.path.basename(path)
    lines = text.split("\n")
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    fmt = "jsonl" if path.endswith(".jsonl") or first.startswith("{") else "text"
    passages = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if fmt == "jsonl":
            try:
                obj = loads_json(line)
            except ValueError as e:
                bad.add(f"{name}:{no}", str(e) if str(e) in ("nested too deeply", LONE_SURROGATE) else "not valid JSON")
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                bad.add(f"{name}:{no}", "no 'text' field")
                continue
            line = obj["text"]
        if len(line) > MAX_LINE_CHARS:
            bad.add(
                f"{name}:{no}",
                f"longer than {MAX_LINE_CHARS:,} characters (a file without line breaks? put one passage per line)",
            )
            continue
        passage = normalize_utterance(line)
        if len(passage) < min_chars:
            bad.add(f"{name}:{no}", f"shorter than {min_chars} characters")
            continue
        passages.append(passage)
    if not passages:
        detail = f" ({bad.examples[0]})" if bad.examples else ""
        raise InputError(f"{path} holds no passage long enough to learn from{detail}")
    return CorpusFile(path, fmt, encoding, passages, bad)


@dataclass
class ClozePrompt:
    text: str  # with [MASK] placeholders
    answer: str
    where: str


def read_prompts(path: str | os.PathLike) -> tuple[list[ClozePrompt], BadRows]:
    """Prompts `text with [MASK]<TAB>answer`; the answer has one character per [MASK]."""
    path = os.fspath(path)
    bad, prompts = BadRows(), []
    text, _ = read_text(path, bad)
    name = os.path.basename(path)
    for no, line in enumerate(text.split("\n"), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{name}:{no}"
        parts = line.split("\t")
        if len(parts) < 2 or not parts[1].strip():
            bad.add(where, "expected `text with [MASK]<TAB>answer`")
            continue
        prompt, answer = normalize_masks(parts[0].strip()), parts[1].strip()
        masks = prompt.count(MASK)
        if masks == 0:
            bad.add(where, "the text has no [MASK]")
            continue
        if masks != len(answer):
            bad.add(where, f"{masks} [MASK] but the answer {answer!r} has {len(answer)} characters")
            continue
        prompts.append(ClozePrompt(prompt, answer, where))
    if not prompts:
        detail = f" ({bad.examples[0]})" if bad.examples else ""
        raise InputError(f"{path} holds no usable prompt{detail}")
    return prompts, bad


def windows(ids: list[int], size: int, overlap: int) -> list[list[int]]:
    """Split token ids into windows of `size` sharing `overlap` tokens (the last window ends at the end)."""
    if len(ids) <= size:
        return [ids]
    step = max(1, size - overlap)
    out = [ids[i : i + size] for i in range(0, len(ids) - size, step)]
    out.append(ids[-size:])
    return out


def jieba_word_offsets(text: str, tokens: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Offsets that make each jieba word one "word" for `DataCollatorForLanguageModeling(whole_word_mask=True)`.

    The collator treats tokens as one word when each starts where the previous ended. Chinese
    characters always touch, so a gap of one is put between jieba words: tokens keep touching
    inside a word and are separated between words.
    """
    import jieba

    word_of_char = [0] * len(text)
    for k, (_, start, end) in enumerate(jieba.tokenize(text)):
        for i in range(start, end):
            word_of_char[i] = k
    out = []
    for start, end in tokens:
        if end <= start:
            out.append((0, 0))
            continue
        shift = word_of_char[min(start, len(text) - 1)]  # one extra position per earlier word boundary
        out.append((start + shift, end + shift))
    return out
