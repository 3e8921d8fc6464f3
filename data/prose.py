"""A user's own prose (a novel, essays, a diary) as paragraphs, for the write task.

Plain-text books are often hard-wrapped: a paragraph is broken into lines of 30-70 characters. Lines are joined
back into paragraphs: a paragraph starts after a blank line, or, in a text that indents its paragraphs (spaces,
full-width spaces or a tab), at an indented line; chapter headings (第一章 渡口, 一、狐狸和月亮, 序, 尾声 ...) are
paragraphs of their own, as is a short centred line (a title). A text with neither blank lines nor indents has one
paragraph per line. Editors' note markers (⑴, ①, 〔１〕) are dropped. One file, or a folder of .txt files read in
name order; UTF-8 (with or without a BOM), GBK/GB18030 and UTF-16 are read (data/textio.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from data.errors import BadRows, InputError
from data.textio import read_text

# The paragraph break as the models see it: one token of its own (BERT's vocabulary has no newline), which every
# tokenizer of a write checkpoint decodes as a line break
PARAGRAPH = "\n"
MIN_CHARS = 200  # less than this is not enough text to continue in its style
MAX_PROSE_BYTES = 64 * 2**20  # 64 MiB: ~20 million characters, far more than 2 cores train on in a day
_NUMERAL = "零一二三四五六七八九十百千两〇0-9０-９"
HEADING = re.compile(
    rf"^(第[{_NUMERAL}]+[章回节卷部篇集幕]|[{_NUMERAL}]+[、.．]|[序楔引]子?$|序[章言]|楔子|引子|尾声|后记|前言|番外)"
)
# editors' note references: ①-⒛, ⓪, ❶-➓, and numbers in brackets such as 〔１〕 or [12]
_NOTE_MARKS = re.compile(r"[\u2460-\u249b\u24ea\u2776-\u2793]|[〔［\[][0-9０-９]{1,3}[〕］\]]")
_CJK_GAP = re.compile(r"(?<=[^\x00-\x7f]) (?=[^\x00-\x7f])")
_CENTRED = re.compile(r"^[ \u3000]{6,}")  # a short line pushed to the middle: a title
_INDENT = re.compile(r"^[ \t\u3000\u00a0]{2,}|^[\t\u3000]")


@dataclass
class ProseFile:
    path: str
    format: str  # "text" or "folder"
    encoding: str
    paragraphs: list[str]
    headings: int = 0  # chapter headings found
    joined_lines: int = 0  # hard-wrapped lines joined into the paragraph before them
    bad: BadRows = field(default_factory=BadRows)

    @property
    def chars(self) -> int:
        return sum(len(p) for p in self.paragraphs)

    @property
    def text(self) -> str:
        """The paragraphs with the paragraph token between them: what is tokenized."""
        return PARAGRAPH.join(self.paragraphs)

    def describe(self) -> list[str]:
        lines = [f"{self.chars:,} characters in {len(self.paragraphs):,} paragraphs"]
        if self.headings:
            lines[0] += f", {self.headings} chapter headings"
        if self.joined_lines:
            lines.append(f"{self.joined_lines:,} hard-wrapped lines joined back into their paragraphs")
        return lines


def _join(left: str, right: str) -> str:
    """Two pieces of one paragraph: Chinese joins directly, two Latin words or numbers keep a space."""
    if left and right and left[-1].isascii() and left[-1].isalnum() and right[0].isascii() and right[0].isalnum():
        return f"{left} {right}"
    return left + right


def paragraphs(text: str) -> tuple[list[str], int, int]:
    """(paragraphs, headings, joined lines) of a text's lines."""
    lines = text.split("\n")
    nonblank = [line for line in lines if line.strip()]
    indents = sum(bool(_INDENT.match(line)) for line in nonblank)
    blanks = len(lines) - len(nonblank)
    uses_indent = indents >= max(2, len(nonblank) // 20)  # a text that indents its paragraphs
    one_per_line = not uses_indent and blanks < max(2, len(nonblank) // 20)
    out: list[str] = []
    headings = joined = 0
    open_paragraph = False  # the last paragraph may continue on the next line
    for raw in lines:
        line = _NOTE_MARKS.sub("", raw).strip(" \t\u3000\u00a0\ufeff")
        line = _CJK_GAP.sub("", " ".join(line.split()))  # 奔　　月 -> 奔月; English keeps its spaces
        if not line:
            open_paragraph = False
            continue
        if (HEADING.match(line) and len(line) <= 30) or (_CENTRED.match(raw) and len(line) <= 20):
            out.append(line)
            headings += 1
            open_paragraph = False
            continue
        starts = one_per_line or not open_paragraph or (uses_indent and _INDENT.match(raw))
        if starts:
            out.append(line)
        else:
            out[-1] = _join(out[-1], line)
            joined += 1
        open_paragraph = True
    return out, headings, joined


def read_prose(path: str | os.PathLike) -> ProseFile:
    """Read a text file (or a folder of .txt files) as paragraphs; InputError with one sentence when it is not
    prose enough to train on."""
    path = os.fspath(path)
    bad = BadRows()
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.lower().endswith(".txt") and not f.startswith("."))
        if not files:
            raise InputError(f"{path} is a folder without .txt files")
        fmt, encoding, texts = "folder", "utf-8", []
        for name in files:
            full = os.path.join(path, name)
            try:
                texts.append(_read_one(full, bad)[0])
            except InputError as e:
                bad.add(name, str(e).replace(full, "the file"))
    else:
        fmt = "text"
        text, encoding = _read_one(path, bad)
        texts = [text]
    found, headings, joined = [], 0, 0
    for text in texts:
        p, h, j = paragraphs(text)
        found += p
        headings, joined = headings + h, joined + j
    prose = ProseFile(path, fmt, encoding, found, headings, joined, bad)
    if prose.chars < MIN_CHARS:
        raise InputError(
            f"{path} has only {prose.chars} characters of text; a writer needs at least {MIN_CHARS} (tens of "
            "thousands to write in its style)"
        )
    return prose


def _read_one(path: str, bad: BadRows) -> tuple[str, str]:
    if os.path.isfile(path) and os.path.getsize(path) > MAX_PROSE_BYTES:
        raise InputError(
            f"{path} is {os.path.getsize(path) / 2**20:.0f} MB; at most {MAX_PROSE_BYTES // 2**20} MB of text "
            "(~20 million characters) is read: train on a part of it"
        )
    return read_text(path, bad)
