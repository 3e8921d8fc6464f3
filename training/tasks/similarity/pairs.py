"""Sentence pairs for the similarity recipe: groups that keep related pairs on one side of the split, the
encoding `[CLS] a [SEP] b [SEP]`, the app's Try examples, and predictions for --predict."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from training.runner import predict_in_order


def sentence_groups(pairs: list[tuple[str, str]]) -> list[int]:
    """A group id per pair: pairs linked through a shared sentence get the same id (union-find)."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        parent[root(a)] = root(b)
    ids: dict[str, int] = {}
    return [ids.setdefault(root(a), len(ids)) for a, _ in pairs]


def encode(tokenizer, pairs, labels, max_len: int) -> list[dict]:
    if not pairs:  # --valid-ratio 0 leaves no dev pairs; the tokenizer cannot take an empty batch
        return []
    enc = tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation="longest_first", max_length=max_len)
    rows = []
    for i in range(len(pairs)):
        row = {k: enc[k][i] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}
        if labels is not None:
            row["labels"] = labels[i]
        rows.append(row)
    return rows


def example_pairs(pairs, labels, limit: int = 8) -> list[list[str]]:
    """A few short pairs of the run's own data, the labels taking turns: the app's Try examples for it."""
    by_label: dict = {}
    for (a, b), y in zip(pairs, labels):
        if len(a) + len(b) <= 60:
            by_label.setdefault(y, []).append([a, b])
    turns = [x for group in itertools.zip_longest(*by_label.values()) for x in group if x is not None]
    return turns[:limit]


def predict_pairs(
    trainer, tokenizer, file, max_len: int, task: str, label_names, threshold, temperature: float | None = None
) -> list[dict]:
    """Score --predict pairs with the trained model (labels in the file are ignored)."""
    output = predict_in_order(trainer, encode(tokenizer, file.pairs, None, max_len))
    rows = []
    if task == "regression":
        for (a, b), score in zip(file.pairs, np.asarray(output).reshape(-1).tolist()):
            rows.append({"sentence1": a, "sentence2": b, "score": round(score, 4)})
        return rows
    probs = (torch.tensor(output).double() / (temperature or 1.0)).softmax(-1).tolist()
    for (a, b), p in zip(file.pairs, probs):
        k = int(np.argmax(p)) if threshold is None else int(p[1] >= threshold)
        rows.append(
            {
                "sentence1": a,
                "sentence2": b,
                "label": label_names[k],
                "probabilities": {name: round(q, 4) for name, q in zip(label_names, p)},
            }
        )
    return rows
