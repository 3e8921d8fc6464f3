"""Dialogue files: every accepted layout read into lists of utterances.

Formats (`--format`, or guessed from the extension and content):
  text   one utterance per line, a blank line between dialogues (GPT2-chitchat)
  jsonl  one dialogue per line: {"dialogue": [...]}, a bare list, or {"messages": [{"content": ...}]}
  lccc   LCCC JSON: {"train": [[u1, u2, ...], ...], "valid": [...]}, or a bare list of dialogues;
         characters separated by spaces are joined back
  tsv    single-turn pairs, `utterance<TAB>reply` (extra non-empty columns become more turns)
  yaml   chatterbot corpus: `conversations:` a list of utterance lists

Bad dialogues are skipped and logged with `file:line` (or `file#key[index]`) reasons.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from data.errors import BadRows, InputError
from data.text import MAX_LINE_CHARS, looks_char_spaced, normalize_utterance
from data.textio import json_lines, load_yaml, loads_json, read_text

DIALOGUE_FORMATS = ("auto", "text", "jsonl", "lccc", "tsv", "yaml")


@dataclass
class DialogueFile:
    """What a dialogue file held: the dialogues of the chosen split, other splits, and the log."""

    path: str
    format: str
    encoding: str
    dialogues: list[list[str]]
    bad: BadRows = field(default_factory=BadRows)
    other_splits: dict[str, list[list[str]]] = field(default_factory=dict)
    char_spaced: bool = False


def detect_format(path: str, text: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".jsonl":
        return "jsonl"
    if ext == ".json":
        return "lccc"
    if ext in (".yml", ".yaml"):
        return "yaml"
    if ext == ".tsv":
        return "tsv"
    lines = [ln for ln in text.split("\n")[:2000] if ln.strip()]
    first = lines[0].lstrip() if lines else ""
    if first.startswith(("{", "[")):
        try:
            loads_json(first)
            return "jsonl"
        except ValueError:
            return "lccc" if first in ("{", "[") else "text"
    if first.startswith(("conversations:", "categories:")):
        return "yaml"
    if lines and sum("\t" in ln for ln in lines) >= 0.8 * len(lines):
        return "tsv"
    return "text"


def read_dialogues(path: str | os.PathLike, fmt: str = "auto", split: str = "train") -> DialogueFile:
    """Read a dialogue file. Raises `InputError` when the file is unusable or holds no dialogue."""
    path = os.fspath(path)
    if fmt not in DIALOGUE_FORMATS:
        raise InputError(f"unknown dialogue format {fmt!r}; choose one of {', '.join(DIALOGUE_FORMATS)}")
    bad = BadRows()
    text, encoding = read_text(path, bad)
    if fmt == "auto":
        fmt = detect_format(path, text)
    name = os.path.basename(path)
    reader = _READERS[fmt]
    raw_splits = reader(text, name, bad, split)  # {split: [(where, [utterances])]}
    samples = [u for items in raw_splits.values() for _, d in items[:200] for u in d if isinstance(u, str)]
    spaced = looks_char_spaced(samples)
    splits: dict[str, list[list[str]]] = {}
    for key, items in raw_splits.items():
        splits[key] = [d for d in (_clean(where, dlg, spaced, bad) for where, dlg in items) if d]
    dialogues = splits.pop(split, None)
    if dialogues is None:  # a JSON file without the requested split: use all of it
        dialogues = [d for ds in splits.values() for d in ds]
        splits = {}
    if not dialogues:
        detail = f" ({bad.examples[0]})" if bad.examples else ""
        raise InputError(f"{path} holds no usable dialogue of two or more utterances{detail}")
    return DialogueFile(path, fmt, encoding, dialogues, bad, splits, spaced)


def _clean(where: str, dialogue, spaced: bool, bad: BadRows) -> list[str] | None:
    if not isinstance(dialogue, list):
        bad.add(where, f"expected a list of utterances, got {type(dialogue).__name__}")
        return None
    turns = []
    for u in dialogue:
        if isinstance(u, (int, float)) and not isinstance(u, bool):
            u = str(u)
        if not isinstance(u, str):
            bad.add(where, f"utterance is a {type(u).__name__}, not text")
            return None
        if len(u) > MAX_LINE_CHARS:
            bad.add(where, f"an utterance is longer than {MAX_LINE_CHARS:,} characters")
            return None
        u = normalize_utterance(u, spaced)
        if not u:
            bad.add(where, "empty utterance")
            return None
        turns.append(u)
    if len(turns) < 2:
        bad.add(where, "dialogue has only one utterance" if turns else "empty dialogue")
        return None
    return turns


def _read_text(text, name, bad, split):
    items, current, start = [], [], 0
    for no, line in enumerate(text.split("\n"), 1):
        if line.strip():
            if not current:
                start = no
            current.append(line)
        elif current:
            items.append((f"{name}:{start}", current))
            current = []
    if current:
        items.append((f"{name}:{start}", current))
    return {split: items}


def _dialogue_from_json(obj):
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict):
        for key in ("dialogue", "dialog", "conversation", "turns", "utterances"):
            if key in obj:
                return obj[key]
        if "messages" in obj and isinstance(obj["messages"], list):
            return [m.get("content") if isinstance(m, dict) else m for m in obj["messages"]]
        return f"no 'dialogue' field (keys: {', '.join(list(obj)[:5])})"
    return f"expected a JSON list or object, got {type(obj).__name__}"


def _read_jsonl(text, name, bad, split):
    items = []
    for where, obj in json_lines(text, name, bad):
        dialogue = _dialogue_from_json(obj)
        if isinstance(dialogue, str):
            bad.add(where, dialogue)
            continue
        items.append((where, dialogue))
    return {split: items}


def _read_lccc(text, name, bad, split):
    try:
        obj = loads_json(text)
    except ValueError as e:
        where = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
        raise InputError(f"{name} is not valid JSON{where}: {getattr(e, 'msg', e)}")
    if isinstance(obj, list):
        obj = {split: obj}
    if not isinstance(obj, dict) or not all(isinstance(v, list) for v in obj.values()):
        raise InputError(f'{name}: expected the LCCC layout {{"train": [[...], ...]}} or a list of dialogues')
    return {
        key: [(f"{name}#{key}[{i}]", _as_list(d)) for i, d in enumerate(dialogues)] for key, dialogues in obj.items()
    }


def _as_list(d):
    extracted = _dialogue_from_json(d)
    return extracted if not isinstance(extracted, str) else d


def _read_tsv(text, name, bad, split):
    items = []
    for no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        cols = [c for c in line.split("\t") if c.strip()]
        if len(cols) < 2:
            bad.add(f"{name}:{no}", "expected `utterance<TAB>reply`")
            continue
        items.append((f"{name}:{no}", cols))
    return {split: items}


def _read_yaml(text, name, bad, split):
    import yaml

    try:
        obj = load_yaml(text)
    except (yaml.YAMLError, ValueError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(e, "problem", None) or (str(e) if isinstance(e, ValueError) else None)
        raise InputError(f"{name} is not valid YAML{where}" + (f": {problem}" if problem else ""))
    if not isinstance(obj, dict) or not isinstance(obj.get("conversations"), list):
        raise InputError(f"{name}: expected a chatterbot corpus with a `conversations:` list")
    return {split: [(f"{name}#conversations[{i}]", d) for i, d in enumerate(obj["conversations"])]}


_READERS = {"text": _read_text, "jsonl": _read_jsonl, "lccc": _read_lccc, "tsv": _read_tsv, "yaml": _read_yaml}
