"""Labelled texts for classification, as people have them: "this review is 好评", "this ticket is billing".

Formats (guessed from the path and content, or named with --format):
  csv / tsv  a header naming the text and label columns (found by name: text, review, 评论 ...; label,
             category, 标签 ...; or given with --text-column / --label-column); extra columns are ignored;
             quoted fields may hold commas and line breaks
  tsv        without a header: `text<TAB>label` per line
  jsonl      {"text": ..., "label": ...} per line (the same names as the columns)
  folder     one sub-folder per class, named by its label, holding .txt files (one text per file)

UTF-8 (with or without a BOM), GBK/GB18030 and UTF-16 files are read (data/textio.py). Labels are kept
as the strings the file has ("好评", "1", "billing"); a row without a text or a label is skipped with
its `file:line` reason.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field

from data.errors import BadRows, InputError
from data.text import MAX_LINE_CHARS, normalize_utterance
from data.textio import read_text

LABELLED_FORMATS = ("auto", "csv", "tsv", "jsonl", "folder")
TEXT_NAMES = (
    "text", "texts", "review", "reviews", "sentence", "content", "comment", "document", "body", "query", "title",
    "文本", "评论", "内容", "句子", "正文", "评价", "文章", "标题", "问题",
)  # fmt: skip
LABEL_NAMES = (
    "label", "labels", "category", "categories", "cat", "class", "classes", "tag", "topic", "sentiment", "target",
    "标签", "类别", "分类", "类型", "情感", "主题", "标注",
)  # fmt: skip
MAX_DATA_BYTES = 32 * 2**20  # 32 MiB: ~300,000 short texts, far more than 2 cores train on in an hour
MAX_LABEL_CHARS = 50
RARE = 2  # a label seen this often or less is reported: likely a typo of another one


@dataclass
class LabelledFile:
    path: str
    format: str
    encoding: str
    texts: list[str]
    labels: list[str]  # the file's own label strings, one per text
    bad: BadRows = field(default_factory=BadRows)
    columns: tuple[str, str] | None = None  # (text, label) column names, where the file has a header

    @property
    def rows(self) -> list[tuple[str, str]]:
        """(text, label) pairs: what the Train tab's preview counts."""
        return list(zip(self.texts, self.labels))

    def counts(self) -> Counter:
        return Counter(self.labels)

    def rare(self) -> list[str]:
        """Labels seen at most RARE times when others are common: likely typos ("好坪" for "好评")."""
        counts = self.counts()
        if len(counts) < 2 or max(counts.values()) <= 3 * RARE:
            return []
        return sorted((label for label, n in counts.items() if n <= RARE), key=lambda x: (counts[x], x))

    def describe(self) -> list[str]:
        """What was read, in lines for the terminal and the Train tab's preview."""
        counts = self.counts()
        shown = ", ".join(f"{label} {n:,}" for label, n in counts.most_common(12))
        more = f" (+{len(counts) - 12} more)" if len(counts) > 12 else ""
        lines = [f"{len(counts)} classes: {shown}{more}"]
        if self.columns:
            lines.insert(0, f"columns: text = {self.columns[0]!r}, label = {self.columns[1]!r}")
        rare = self.rare()
        if rare:
            lines.append(
                f"warning: {len(rare)} label(s) seen only once or twice: {', '.join(rare[:8])} (a typo of another "
                "label? fix them in the file, or they are classes with almost nothing to learn from)"
            )
        return lines


def _column(header: list[str], given: str | None, names: tuple, flag: str, path: str) -> int | None:
    folded = [h.strip().lower().lstrip("\ufeff") for h in header]
    if given:
        if given.strip().lower() in folded:
            return folded.index(given.strip().lower())
        raise InputError(f"{path} has no column {given!r} ({flag}); its columns are: {', '.join(header)[:200]}")
    for name in names:
        if name in folded:
            return folded.index(name)
    return None


def _delimiter(path: str, first_line: str) -> str:
    if path.lower().endswith(".tsv") or "\t" in first_line:
        return "\t"
    try:
        return csv.Sniffer().sniff(first_line, delimiters=",;|\t").delimiter
    except csv.Error:
        return ","


def _table_rows(text: str, path: str, fmt: str, text_column, label_column, bad: BadRows):
    """((text, label) column names or None without a header, [(file:line, text, label)]) of a CSV/TSV file."""
    name = os.path.basename(path)
    first = text.split("\n", 1)[0]
    delimiter = "\t" if fmt == "tsv" and "\t" in first else _delimiter(path, first)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        raise InputError(f"{path} has no rows")
    t = _column(header, text_column, TEXT_NAMES, "--text-column", path)
    y = _column(header, label_column, LABEL_NAMES, "--label-column", path)
    columns = None
    if t is not None and y is not None:
        columns = (header[t].strip().lstrip("\ufeff"), header[y].strip())
        start = []
    elif t is None and y is None and len(header) == 2 and not (text_column or label_column):
        t, y, start = 0, 1, [(1, header)]  # headerless text<delimiter>label: the first line is data
    else:
        missing = "text" if t is None else "label"
        raise InputError(
            f"{path}: cannot tell which column holds the {missing} (columns: {', '.join(header)[:160]}); name it with "
            f"--{missing}-column, or use a header such as text,label or 评论,标签"
        )
    rows, found = list(start), []
    try:
        for row in reader:  # line_num: the line a row ends on (a quoted field may hold line breaks)
            rows.append((reader.line_num, row))
    except csv.Error as e:
        bad.add(f"{name}:{reader.line_num}", f"unreadable CSV ({e}); the rest of the file is skipped")
    for line, row in rows:
        if not any(cell.strip() for cell in row):
            continue
        if max(t, y) >= len(row):
            bad.add(f"{name}:{line}", f"{len(row)} column(s), the {'text' if t >= len(row) else 'label'} is missing")
            continue
        found.append((f"{name}:{line}", row[t], row[y]))
    return columns, found


def _json_rows(text: str, path: str, text_column, label_column, bad: BadRows):
    name = os.path.basename(path)
    for no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            bad.add(f"{name}:{no}", "not a JSON object")
            continue
        if not isinstance(obj, dict):
            bad.add(f"{name}:{no}", "not a JSON object")
            continue
        keys = list(obj)
        t = _column(keys, text_column, TEXT_NAMES, "--text-column", path) if keys else None
        y = _column(keys, label_column, LABEL_NAMES, "--label-column", path) if keys else None
        if t is None or y is None:
            bad.add(f"{name}:{no}", f"no {'text' if t is None else 'label'} field (keys: {', '.join(keys)[:80]})")
            continue
        yield f"{name}:{no}", obj[keys[t]], obj[keys[y]]


def _folder_rows(path: str, bad: BadRows):
    """(file, text, label) of a folder with one sub-folder of .txt files per class."""
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
    if not classes:
        raise InputError(f"{path} is a folder without sub-folders: give one sub-folder of .txt files per class")
    size = 0
    for label in classes:
        folder = os.path.join(path, label)
        for file in sorted(os.listdir(folder)):
            full = os.path.join(folder, file)
            where = f"{label}/{file}"
            if not file.lower().endswith(".txt") or not os.path.isfile(full):
                continue
            size += os.path.getsize(full)
            if size > MAX_DATA_BYTES:
                raise InputError(f"{path} holds over {MAX_DATA_BYTES // 2**20} MB of text; use a sample of it")
            try:
                text, _ = read_text(full)
            except InputError as e:
                bad.add(where, str(e).replace(full, "the file"))
                continue
            yield where, text, label


def _detect(path: str, text: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jsonl", ".json") or text.lstrip().startswith("{"):
        return "jsonl"
    if ext == ".tsv" or "\t" in text.split("\n", 1)[0]:
        return "tsv"
    return "csv"


def read_labelled(
    path: str | os.PathLike,
    fmt: str = "auto",
    text_column: str | None = None,
    label_column: str | None = None,
) -> LabelledFile:
    """Read a file (or folder) of labelled texts; raise InputError with one sentence when nothing usable is in it."""
    path = os.fspath(path)
    if fmt not in LABELLED_FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(LABELLED_FORMATS)}")
    bad, columns = BadRows(), None
    if os.path.isdir(path):
        fmt, encoding, found = "folder", "utf-8", _folder_rows(path, bad)
    else:
        if os.path.isfile(path) and os.path.getsize(path) > MAX_DATA_BYTES:
            raise InputError(
                f"{path} is {os.path.getsize(path) / 2**20:.0f} MB; a classification file may have at most "
                f"{MAX_DATA_BYTES // 2**20} MB (~300,000 short texts): train on a sample of it"
            )
        text, encoding = read_text(path, bad)
        fmt = _detect(path, text) if fmt == "auto" else fmt
        if fmt == "folder":
            raise InputError(f"{path} is a file; --format folder needs a folder of class sub-folders")
        if fmt == "jsonl":
            found = _json_rows(text, path, text_column, label_column, bad)
        else:
            columns, found = _table_rows(text, path, fmt, text_column, label_column, bad)
    texts, labels = [], []
    for where, raw_text, raw_label in found:
        body = normalize_utterance(str(raw_text)) if raw_text is not None else ""
        label = " ".join(str(raw_label).split()) if raw_label is not None else ""
        if not body:
            bad.add(where, "the text is empty")
        elif len(body) > MAX_LINE_CHARS:
            bad.add(where, f"the text is longer than {MAX_LINE_CHARS:,} characters")
        elif not label:
            bad.add(where, "no label")
        elif len(label) > MAX_LABEL_CHARS:
            bad.add(where, f"the label is longer than {MAX_LABEL_CHARS} characters (a text in the label column?)")
        else:
            texts.append(body)
            labels.append(label)
    if not texts:
        detail = f" ({bad.examples[0]})" if bad.examples else ""
        raise InputError(f"{path} holds no usable labelled text{detail}")
    return LabelledFile(path, fmt, encoding, texts, labels, bad, columns)
