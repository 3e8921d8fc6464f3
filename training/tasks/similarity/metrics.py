"""Figures of a sentence-pair model on dev: accuracy/F1 or Pearson/Spearman, the decision
threshold and the calibration temperature fitted there, and the majority-class baseline."""

from __future__ import annotations

import difflib

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), for Spearman's correlation."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def classification_metrics(eval_pred) -> dict:
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    preds = logits.argmax(-1)
    out = {"accuracy": float((preds == labels).mean())}
    classes = range(logits.shape[-1])
    f1s = []
    for c in classes if logits.shape[-1] > 2 else [1]:
        tp = float(((preds == c) & (labels == c)).sum())
        precision = tp / max(float((preds == c).sum()), 1.0)
        recall = tp / max(float((labels == c).sum()), 1.0)
        f1s.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    out["f1"] = float(np.mean(f1s))
    return out


def regression_metrics(eval_pred) -> dict:
    preds = np.asarray(eval_pred.predictions).reshape(-1)
    labels = np.asarray(eval_pred.label_ids).reshape(-1)
    return {"pearson": _pearson(preds, labels), "spearman": _pearson(_ranks(preds), _ranks(labels))}


def tune_threshold(p_same: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The cut on p(same meaning) with the best dev accuracy (ties: closest to 0.5)."""
    best = (float(((p_same >= 0.5) == labels).mean()), 0.5)
    for t in np.unique(np.concatenate([p_same, [0.5]])):
        acc = float(((p_same >= t) == labels).mean())
        if acc > best[0] + 1e-12 or (abs(acc - best[0]) < 1e-12 and abs(t - 0.5) < abs(best[1] - 0.5)):
            best = (acc, float(t))
    return best[1], best[0]


MIN_CALIBRATION_ROWS = 20


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 for which softmax(logits / T) has the lowest
    log-loss on dev. A small model that memorised its training pairs says 0.00 or 1.00 about
    everything; dividing its logits by T > 1 makes its probabilities mean what they say. A grid over
    log T (0.25 .. 50) is enough for one parameter and cannot diverge."""
    import torch

    z = torch.tensor(logits, dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.long)
    grid = torch.logspace(np.log10(0.25), np.log10(50), 120, dtype=torch.float64)
    losses = [torch.nn.functional.cross_entropy(z / t, y).item() for t in grid]
    return round(float(grid[int(np.argmin(losses))]), 4)


def majority_class(labels: list[int]) -> tuple[int, float]:
    """The commonest label and its share: the accuracy of always answering it."""
    top = max(set(labels), key=labels.count)
    return top, labels.count(top) / len(labels)


SMALL_MARGIN = 0.03  # dev accuracy within this of the better baseline: worth a warning of its own


def _against(accuracy: float, baseline: float, what: str) -> str:
    """How `accuracy` stands to one baseline, in words that cannot be misread: "no better than", "N points
    below", "only N points above" or "N points above"."""
    margin = accuracy - baseline
    if abs(margin) <= 0.005:
        return f"no better than {what} ({baseline:.1%})"
    if margin < 0:
        return f"{-margin * 100:.1f} points below {what} ({baseline:.1%})"
    return f"{'only ' if margin < SMALL_MARGIN else ''}{margin * 100:.1f} points above {what} ({baseline:.1%})"


def baseline_line(accuracy: float, majority: float, label: str, overlap: float | None) -> tuple[str, bool]:
    """The closing line comparing dev accuracy with what needs no model, each baseline named: always answering
    the commonest dev label, and (two classes) a rule that counts shared characters. Returns (line, weak): weak
    when the model is less than SMALL_MARGIN above the better of the two (or below it)."""
    nothing = no_better_than_majority(accuracy, majority, label)
    if nothing and (overlap is None or accuracy <= overlap + 0.005):
        parts = [f'no better than always answering "{label}" ({majority:.1%})']
    else:
        parts = [_against(accuracy, majority, f'always answering "{label}"')]
    if overlap is not None:
        parts.append(_against(accuracy, overlap, "a rule that counts shared characters"))
    weak = accuracy - max(majority, overlap if overlap is not None else 0.0) < SMALL_MARGIN
    line = f"dev accuracy {accuracy:.1%}: {', and '.join(parts)}"
    if not weak:
        return line, False
    return (
        f"warning: {line}; it has learned little of this task: more or more varied pairs, a longer run, or a "
        "pretrained base (--model bert-base-chinese) help",
        True,
    )


def no_better_than_majority(accuracy: float, majority: float, label: str) -> str | None:
    """One warning line when dev accuracy is within half a point of always answering the commonest
    dev label (what a from-scratch model on a small or skewed set such as AFQMC does), else None."""
    if accuracy > majority + 0.005:
        return None
    return (
        f'warning: dev accuracy {accuracy:.1%} is no better than always answering "{label}" ({majority:.1%}): '
        "the model has not learned this task yet; train longer, run training/cloze.py --pairs on the pairs first, "
        "or start from a pretrained model (--model bert-base-chinese)"
    )


# -- baselines a similarity model is compared with -------------------------------------------


def overlap_features(a: str, b: str) -> list[float]:
    sa, sb = set(a), set(b)
    inter = len(sa & sb)
    bigrams = lambda s: {s[i : i + 2] for i in range(len(s) - 1)}  # noqa: E731
    ba, bb = bigrams(a), bigrams(b)
    return [
        inter / max(1, len(sa | sb)),
        inter / max(1, min(len(sa), len(sb))),
        difflib.SequenceMatcher(None, a, b).ratio(),
        abs(len(a) - len(b)) / max(1, len(a) + len(b)),
        len(ba & bb) / max(1, len(ba | bb)),
        float(a == b),
    ]


def logistic_baseline(train, dev) -> float:
    """Accuracy on `dev` of a character-overlap logistic regression fitted on `train` (each a PairFile-like
    object with .pairs and 0/1 .labels): what a model must beat to have learned more than "similar
    characters mean the same". Hand-written (numpy only, no sklearn dependency); a second or two for
    10,000 pairs."""

    def xy(f):
        x = np.array([overlap_features(a, b) for a, b in f.pairs], dtype=np.float64)
        return x, np.array(f.labels, dtype=np.float64)

    x, y = xy(train)
    xd, yd = xy(dev)
    mu, sd = x.mean(0), x.std(0) + 1e-9
    x, xd = (x - mu) / sd, (xd - mu) / sd
    x, xd = np.hstack([x, np.ones((len(x), 1))]), np.hstack([xd, np.ones((len(xd), 1))])
    w = np.zeros(x.shape[1])
    for _ in range(2000):  # full-batch gradient descent on the log loss
        p = 1 / (1 + np.exp(-x @ w))
        w -= 0.5 * (x.T @ (p - y) / len(y) + 1e-4 * w)
    return float(((xd @ w > 0) == (yd > 0.5)).mean())
