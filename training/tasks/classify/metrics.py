"""Figures of a text classifier on its dev texts: accuracy, macro-F1, each class's precision and recall, the
confusion matrix (and its picture), the majority class, and a simple baseline on the same split: character
n-gram TF-IDF + logistic regression (scikit-learn), what a model has to beat to have learned more than which
characters go with which label."""

from __future__ import annotations

import numpy as np

# Within this many points of the baseline a model "matches" it; further below it has learned less than counting
# characters does
MATCH_POINTS = 2.0


def accuracy_and_f1(eval_pred) -> dict:
    """The Trainer's compute_metrics: accuracy and macro-F1 (every class counts the same, however rare)."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    preds = np.asarray(logits).argmax(-1)
    return {"accuracy": float((preds == labels).mean()), "macro_f1": macro_f1(preds, labels, logits.shape[-1])}


def per_class(preds, labels, k: int) -> list[dict]:
    """Precision, recall, F1 and support of each class id."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    rows = []
    for c in range(k):
        tp = float(((preds == c) & (labels == c)).sum())
        precision = tp / max(float((preds == c).sum()), 1.0)
        recall = tp / max(float((labels == c).sum()), 1.0)
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        rows.append({"precision": precision, "recall": recall, "f1": f1, "support": int((labels == c).sum())})
    return rows


def macro_f1(preds, labels, k: int) -> float:
    """Mean F1 over the classes that occur in `labels` or `preds`."""
    rows = per_class(preds, labels, k)
    present = set(np.asarray(labels).tolist()) | set(np.asarray(preds).tolist())
    return float(np.mean([rows[c]["f1"] for c in range(k) if c in present])) if present else 0.0


def confusion(preds, labels, k: int) -> list[list[int]]:
    """counts[true][predicted]."""
    matrix = np.zeros((k, k), dtype=int)
    for t, p in zip(np.asarray(labels).tolist(), np.asarray(preds).tolist()):
        matrix[t, p] += 1
    return matrix.tolist()


def most_confused(matrix: list[list[int]], names: list[str], shown: int = 3) -> list[dict]:
    """The class pairs mistaken for each other most often (true -> predicted)."""
    pairs = [(matrix[t][p], t, p) for t in range(len(names)) for p in range(len(names)) if t != p and matrix[t][p]]
    return [{"true": names[t], "predicted": names[p], "count": n} for n, t, p in sorted(pairs, reverse=True)[:shown]]


def tfidf_baseline(train_texts, train_labels, dev_texts, dev_labels, seed: int = 0) -> float | None:
    """Dev accuracy of character 1-3-gram TF-IDF + logistic regression fitted on the training texts; None when
    there is no dev text or a single training class."""
    if not dev_texts or len(set(train_labels)) < 2:
        return None
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=1, max_features=200_000)
    x = vectorizer.fit_transform(train_texts)
    classifier = LogisticRegression(C=10.0, max_iter=2000, random_state=seed).fit(x, train_labels)
    return float((classifier.predict(vectorizer.transform(dev_texts)) == np.asarray(dev_labels)).mean())


def baseline_line(accuracy: float, baseline: float | None, majority: float) -> tuple[str, bool]:
    """(one line setting the model's dev accuracy beside what needs no model, whether it learned too little)."""
    if accuracy <= majority + 0.005:
        return (
            f"warning: dev accuracy {accuracy:.1%} is no better than always answering the commonest class "
            f"({majority:.1%}): the model has not learned the task; more data, more time or a pretrained base "
            "(--model bert-base-chinese) would help",
            True,
        )
    if baseline is None:
        return f"dev accuracy {accuracy:.1%} (always the commonest class: {majority:.1%})", False
    points = 100 * (accuracy - baseline)
    if points >= 0.05:
        return (
            f"dev accuracy {accuracy:.1%}: beats the simple baseline (character n-gram TF-IDF + logistic regression, "
            f"{baseline:.1%}) by {points:.1f} points",
            False,
        )
    if points > -MATCH_POINTS:
        below = "the same figure" if points > -0.05 else f"{-points:.1f} points below"
        return (
            f"dev accuracy {accuracy:.1%}: about as good as the simple baseline (character n-gram TF-IDF + logistic "
            f"regression, {baseline:.1%}; {below}); a pretrained base (--model bert-base-chinese) would clearly "
            "beat it",
            False,
        )
    return (
        f"warning: dev accuracy {accuracy:.1%} does not beat the simple baseline (character n-gram TF-IDF + "
        f"logistic regression, {baseline:.1%}; {-points:.1f} points below): more data, more time or a pretrained "
        "base (--model bert-base-chinese) would help",
        True,
    )


def plot_confusion(matrix: list[list[int]], names: list[str], path: str, title: str) -> None:
    """The confusion matrix as a picture: rows the true class, columns the predicted one, each row in shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.checkpoint import drawable

    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    k = len(names)
    size = min(12, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    # without a CJK font, a Chinese label is drawn as its number (its characters would be boxes)
    ticks = [drawable(n[:12])[0] if drawable(n[:12])[1] or n.isascii() else f"#{i}" for i, n in enumerate(names)]
    family = next((drawable(n)[1] for n in [title, *names] if drawable(n)[1]), None)
    font = {"fontfamily": family} if family else {}
    ax.set_xticks(range(k), ticks, rotation=45, ha="right", **font)
    ax.set_yticks(range(k), ticks, **font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(drawable(title)[0], **font)
    if k <= 20:
        for t in range(k):
            for p in range(k):
                colour = "white" if shares[t, p] > 0.6 else "black"
                ax.text(p, t, str(int(counts[t, p])), ha="center", va="center", color=colour, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
