"""Sentence pairs for similarity: "do these two sentences mean the same?".

Formats (guessed from the extension and content, or given):
  tsv    `s1<TAB>s2<TAB>label` (LCQMC/AFQMC/STS-B; empty extra columns are ignored)
  jsonl  {"sentence1": ..., "sentence2": ..., "label": 1 or "1"} (AFQMC json)
  csv    a header naming the two sentence columns and the label column

Labels: integers or class words -> classification (words are mapped to ids, the map is
kept); numbers with decimals, or more than 5 distinct integers (STS-B's 0..5) -> a
regression score. A file for prediction may have no label column.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field

from data.errors import BadRows, InputError
from data.text import MAX_LINE_CHARS, normalize_utterance
from data.textio import json_lines, read_text

PAIR_FORMATS = ("auto", "tsv", "jsonl", "csv")
TASKS = ("auto", "classification", "regression")
_S1 = ("sentence1", "s1", "text_a", "question1", "query", "sentence_a")
_S2 = ("sentence2", "s2", "text_b", "question2", "title", "sentence_b")
_LABEL = ("label", "score", "similarity", "is_duplicate", "labels")


@dataclass
class PairFile:
    path: str
    format: str
    encoding: str
    pairs: list[tuple[str, str]]
    labels: list[float | int] | None  # class ids or scores, aligned with pairs; None when unlabelled
    task: str  # "classification" | "regression" | "unlabelled"
    label_names: list[str] | None = None  # class id -> name, for classification
    bad: BadRows = field(default_factory=BadRows)
    scale: tuple[float, float] | None = None  # regression: the range its scores were read on (SCORE_SCALES)

    def class_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for y in self.labels or []:
            counts[int(y)] = counts.get(int(y), 0) + 1
        return counts


def _detect(path: str, text: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jsonl", ".json"):
        return "jsonl"
    if ext == ".csv":
        return "csv"
    first = next((ln for ln in text.split("\n") if ln.strip()), "")
    if first.lstrip().startswith("{"):
        return "jsonl"
    return "tsv"


def _rows(fmt: str, text: str, name: str, bad: BadRows):
    """Yield (where, s1, s2, raw_label_or_None)."""
    if fmt == "tsv":
        for no, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            cols = [c.strip() for c in line.split("\t")]
            if len(cols) > 3:  # an empty extra column (two TABs in a row): keep the non-empty ones
                cols = [c for c in cols if c]
            if len(cols) not in (2, 3):
                bad.add(f"{name}:{no}", f"expected `s1<TAB>s2<TAB>label`, found {len(cols)} columns")
                continue
            yield f"{name}:{no}", cols[0], cols[1], (cols[2] or None) if len(cols) == 3 else None
    elif fmt == "jsonl":
        for where, obj in json_lines(text, name, bad):
            if not isinstance(obj, dict):
                bad.add(where, "expected a JSON object with sentence1/sentence2/label")
                continue
            yield where, _pick(obj, _S1), _pick(obj, _S2), _pick(obj, _LABEL)
    else:
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip().lower() for h in reader.fieldnames or []]
        if not any(h in _S1 for h in header) or not any(h in _S2 for h in header):
            raise InputError(
                f"{name}: the CSV header must name the two sentence columns (e.g. sentence1,sentence2,label); "
                f"found {', '.join(header) or 'nothing'}"
            )
        for row in reader:
            row = {(k or "").strip().lower(): v for k, v in row.items()}
            yield f"{name}:{reader.line_num}", _pick(row, _S1), _pick(row, _S2), _pick(row, _LABEL)


def _pick(obj: dict, keys: tuple[str, ...]):
    for k in keys:
        if k in obj and obj[k] is not None and obj[k] != "":
            return obj[k]
    return None


# The scales similarity scores come on (STS-B 0..5, cosine 0..1 or -1..1, percentages). A file's scores are read
# on the smallest scale that holds nine in ten of them; the rest (1e308, a stray -1 among 0..5 scores) are typos
# that, trained as regression targets, made every weight NaN.
SCORE_SCALES = ((0, 1), (-1, 1), (0, 5), (0, 10), (0, 100))
SCALE_SHARE = 0.9


def score_scale(values: list[float]) -> tuple[float, float] | None:
    for low, high in SCORE_SCALES:
        if sum(low <= v <= high for v in values) >= SCALE_SHARE * len(values):
            return low, high
    return None


MAX_CLASS = 999  # a class number above this is a typo, not a class (2000000000 built a 4 GB head)


def _number(raw) -> float | None:
    """The label as a finite number, or None (text, nan, inf, 1e400)."""
    if isinstance(raw, bool):
        return None
    try:
        value = float(raw) if isinstance(raw, (int, float)) else float(str(raw).strip())
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _not_finite(raw) -> bool:
    """nan, inf, -inf, 1e400: a number, but not a usable one (and never a class word)."""
    if isinstance(raw, float):
        return not math.isfinite(raw)
    try:
        return not math.isfinite(float(str(raw).strip()))
    except OverflowError:
        return True
    except ValueError:
        return False


def _usable_rows(found, bad: BadRows, require_labels: bool) -> list[tuple]:
    """(where, s1, s2, raw label) of the rows with both sentences (normalised) and a finite label or none."""
    rows = []
    for where, s1, s2, raw in found:
        if max(len(str(s1 or "")), len(str(s2 or ""))) > MAX_LINE_CHARS:
            bad.add(where, f"a sentence is longer than {MAX_LINE_CHARS:,} characters")
            continue
        s1 = normalize_utterance(str(s1)) if s1 is not None else ""
        s2 = normalize_utterance(str(s2)) if s2 is not None else ""
        if not s1 or not s2:
            bad.add(where, "a sentence is missing")
            continue
        if raw is None and require_labels:
            bad.add(where, "no label")
            continue
        if raw is not None and _not_finite(raw):
            bad.add(where, f"label {str(raw)[:20]!r} is not a finite number")
            continue
        rows.append((where, s1, s2, raw))
    return rows


def _label(raw, task: str, scale, words: list[str] | None) -> tuple[float | int | None, str | None]:
    """(the label of a raw value, None) or (None, why it is not one): a score on `scale`, one of the class `words`,
    or a class number."""
    if raw is None:
        return None, "no label"
    n = _number(raw)
    if task == "regression":
        if n is None:
            return None, f"label {raw!r} is not a finite number"
        if not scale[0] <= n <= scale[1]:
            outside = f"score {str(raw)[:20]} is outside {scale[0]}..{scale[1]}"
            return None, f"{outside}, the scale of the file's other scores"
        return n, None
    if words is not None:
        word = str(raw).strip()
        if word not in words:
            return None, f"label {raw!r} is not one of {', '.join(words)}"
        return words.index(word), None
    if n is None or n != int(n) or n < 0:
        return None, f"label {raw!r} is not a class number (0, 1, ...)"
    if n > MAX_CLASS:
        return None, f"label {raw!r} is too large for a class number (at most {MAX_CLASS})"
    return int(n), None


def read_pairs(
    path: str | os.PathLike,
    fmt: str = "auto",
    task: str = "auto",
    label_names: list[str] | None = None,
    require_labels: bool = True,
    scale: tuple[float, float] | None = None,
) -> PairFile:
    """Read a pair file. `label_names` (from a training file) maps words the same way in dev/test files, and
    `scale` reads their scores on the training file's scale."""
    path = os.fspath(path)
    if fmt not in PAIR_FORMATS:
        raise InputError(f"unknown pair format {fmt!r}; choose one of {', '.join(PAIR_FORMATS)}")
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    bad = BadRows()
    text, encoding = read_text(path, bad)
    fmt = _detect(path, text) if fmt == "auto" else fmt
    name = os.path.basename(path)
    rows = _usable_rows(_rows(fmt, text, name, bad), bad, require_labels)
    if not rows:
        detail = f" ({bad.examples[0]})" if bad.examples else ""
        raise InputError(f"{path} holds no usable sentence pair{detail}")
    raws = [r[3] for r in rows if r[3] is not None]
    if not raws:
        return PairFile(path, fmt, encoding, [(r[1], r[2]) for r in rows], None, "unlabelled", label_names, bad)

    numbers = [_number(x) for x in raws]
    numeric_share = sum(n is not None for n in numbers) / len(numbers)
    if label_names is None and numeric_share < 0.5:  # class words: entailment / neutral / contradiction ...
        label_names = sorted({str(x).strip() for x, n in zip(raws, numbers) if n is None})
    if task == "auto":
        if label_names is not None and numeric_share < 0.5:
            task = "classification"
        else:
            values = {n for n in numbers if n is not None}
            fractional = any(v != int(v) for v in values)
            task = "regression" if fractional or len(values) > 5 else "classification"

    if task == "regression" and scale is None:
        scale = score_scale([n for n in numbers if n is not None])
        if scale is None:
            shown = ", ".join(str(x)[:12] for x in raws[:6])
            raise InputError(
                f"{path}: the labels do not look like similarity scores (fewer than {SCALE_SHARE:.0%} of them lie on "
                f"one scale such as 0..5 or 0..1; first ones: {shown}); fix them, or use class labels (0/1)"
            )
    words = label_names if task != "regression" and label_names is not None and numeric_share < 0.5 else None
    pairs, labels = [], []
    for where, s1, s2, raw in rows:
        label, why = _label(raw, task, scale, words)
        if why:
            bad.add(where, why)
            continue
        pairs.append((s1, s2))
        labels.append(label)
    if not pairs:
        detail = f" ({bad.examples[0]})" if bad.examples else ""
        raise InputError(f"{path} holds no pair with a usable label{detail}")
    if task == "classification" and label_names is None:
        label_names = [str(i) for i in range(max(labels) + 1)]
    names = label_names if task == "classification" else None
    return PairFile(path, fmt, encoding, pairs, labels, task, names, bad, scale if task == "regression" else None)
