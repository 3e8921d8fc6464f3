"""The data check: what training will meet in the user's data, said before it trains.

Every run says these lines once its data is read and encoded (so a log opens with them), and `--check` says
them and stops before anything is trained or written: duplicates, characters the vocabulary lacks (read as
[UNK]), examples at --max-len (cut), label balance, and whether the data is enough for the task (the benches'
figures); with --check also the run's plan and its time on this machine (training/plan.py).
"""

from __future__ import annotations

from collections import Counter

EXAMPLES = 3  # of each finding, quoted
SKEWED = 5.0  # the commonest label this many times the rarest: said as a warning


def _as_text(item) -> str:
    """An example as one string, for counting repeats: a line, a pair, a dialogue, (text, label)."""
    if isinstance(item, str):
        return item
    if isinstance(item, (list, tuple)):
        return " | ".join(_as_text(x) for x in item)
    return str(item)


def _quote(text: str, width: int = 30) -> str:
    text = text.replace("\n", " ")
    return "「" + (text[:width] + "…" if len(text) > width else text) + "」"


def duplicates(items: list, unit: str) -> str | None:
    keys = [_as_text(x) for x in items]
    counts = Counter(keys)
    repeats = len(keys) - len(counts)
    if not repeats:
        return None
    top = [f"{_quote(k)} x{n}" for k, n in counts.most_common(EXAMPLES) if n > 1]
    share = repeats / len(keys)
    return (
        f"duplicates: {repeats} of {len(keys)} training {unit} ({share:.0%}) repeat an earlier one, e.g. "
        f"{', '.join(top)}: a repeated example weighs more (and can sit on both sides of the held-out split)"
    )


def unknown_characters(tokenizer, texts: list[str]) -> str:
    """How much of the text the tokenizer reads as [UNK], with the commonest such characters."""
    counts = Counter(ch for t in texts for ch in t if not ch.isspace())
    total = sum(counts.values())
    unk = tokenizer.unk_token_id
    if not total or unk is None:
        return "characters: nothing to check"
    chars = list(counts)
    ids = tokenizer(chars, add_special_tokens=False)["input_ids"]
    missing = {c: counts[c] for c, i in zip(chars, ids) if i == [unk]}
    if not missing:
        return f"characters: all {len(counts):,} kinds in the vocabulary (no [UNK])"
    share = sum(missing.values()) / total
    top = "".join(c for c, _ in Counter(missing).most_common(10))
    return (
        f"characters the vocabulary lacks: {len(missing):,} kinds, {share:.2%} of the text reads as [UNK] "
        f"(commonest: {top}){'; --min-freq 1 keeps every character' if share > 0.001 else ''}"
    )


def at_max_len(rows: list, max_len: int | None, unit: str) -> str | None:
    """Encoded rows as long as --max-len: cut there (or exactly that long)."""
    if not max_len or not rows or not isinstance(rows[0], dict) or "input_ids" not in rows[0]:
        return None
    lengths = sorted(len(r["input_ids"]) for r in rows)
    full = sum(n >= max_len for n in lengths)
    median = lengths[len(lengths) // 2]
    line = f"lengths: median {median} tokens, longest {lengths[-1]}; --max-len {max_len}"
    if full:
        return line + f": {full} of {len(rows)} {unit} ({full / len(rows):.0%}) reach it and are cut there"
    return line + ": none is cut"


def balance(counts: dict[str, int] | None) -> str | None:
    if not counts or len(counts) < 2:
        return None
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{name} = {n}" for name, n in ordered[:8]) + (" …" if len(ordered) > 8 else "")
    ratio = ordered[0][1] / max(1, ordered[-1][1])
    line = f"labels (training examples each): {shown}"
    if ratio >= SKEWED:
        line += (
            f"; warning: {ordered[0][0]} has {ratio:.0f}x the examples of {ordered[-1][0]}: the rare ones are learned "
            "last (more examples of them help most)"
        )
    return line


def enough(training, items: int, unit: str) -> str | None:
    """Too little data for the task, from the benches (Training.plenty)."""
    if not training.plenty or items >= training.plenty[0]:
        return None
    wanted, expect = training.plenty
    return f"little data: {items:,} {unit} (the benches' runs from scratch had {wanted:,}+): {expect}"


def data_check(run) -> list[str]:
    """The check's lines for a run whose data is read, model built and examples encoded (training.pipeline.Run)."""
    recipe, data = run.recipe, run.data
    unit = recipe.training.items
    rule = recipe.rule(run)
    counted = rule.unit if rule is not None else unit  # what Data.items counts (the plan's unit)
    lines = [
        duplicates(data.train, unit),
        unknown_characters(run.tokenizer, data.texts) if data.texts else None,
        at_max_len(run.setup.train_ds, run.max_len, "training examples") if recipe.cuts_at_max_len else None,
        balance(recipe.label_counts(run)),
        enough(recipe.training, data.items, counted),
    ]
    return [line for line in lines if line]
