"""Similarity predictor over a sentence-pair checkpoint folder.

    from chat.similarity import SimilarityPredictor
    judge = SimilarityPredictor.from_pretrained("checkpoints/similarity")
    judge.score("花呗怎么还款", "花呗如何还钱")   # {"label": "1", "probability": 0.93, ...}

Classification models give the probability of "same meaning" (the last class of a binary
model, label 1), calibrated on dev by training (temperature scaling), and a label decided by the
threshold tuned on dev; regression models give
a 0..5 score. Pairs are encoded exactly as in training ([CLS] a [SEP] b [SEP]).
"""

from __future__ import annotations

import torch

from chat.settings import MAX_SENTENCE_CHARS as MAX_CHARS
from data import InputError


def _at_half(p: float, threshold: float) -> float:
    """p with `threshold` moved to 0.5: sigmoid(logit(p) - logit(threshold))."""
    import math

    eps = 1e-6
    p, t = min(max(p, eps), 1 - eps), min(max(threshold, eps), 1 - eps)
    z = math.log(p / (1 - p)) - math.log(t / (1 - t))
    return 1 / (1 + math.exp(-z)) if z > -700 else 0.0


class SimilarityPredictor:
    def __init__(self, model, tokenizer, max_len: int = 128, name: str = "similarity"):
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.max_len = min(max_len, int(getattr(model.config, "max_position_embeddings", max_len)))
        self.regression = model.config.problem_type == "regression" or model.config.num_labels == 1
        self.threshold = getattr(model.config, "decision_threshold", None)
        self.temperature = float(
            getattr(model.config, "calibration_temperature", None) or 1.0
        )  # fitted on dev by training
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    @classmethod
    def from_pretrained(cls, folder: str, max_len: int = 128) -> "SimilarityPredictor":
        from transformers import AutoModelForSequenceClassification

        from chat.loading import load_auto_folder

        model, tokenizer = load_auto_folder(folder, AutoModelForSequenceClassification, "similarity", "sentence-pair")
        return cls(model, tokenizer, max_len, folder)

    def _check(self, a, b) -> tuple[str, str]:
        if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
            raise InputError("both sentences are needed; one of them is empty")
        if len(a) > MAX_CHARS or len(b) > MAX_CHARS:
            raise InputError(f"keep each sentence under {MAX_CHARS} characters")
        return a.strip(), b.strip()

    @torch.no_grad()
    def score_batch(self, pairs: list[tuple[str, str]], batch_size: int = 64) -> list[dict]:
        pairs = [self._check(a, b) for a, b in pairs]
        out = []
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i : i + batch_size]
            enc = self.tokenizer(
                [a for a, _ in chunk],
                [b for _, b in chunk],
                truncation="longest_first",
                max_length=self.max_len,
                padding=True,
                return_tensors="pt",
            )
            logits = self.model(**enc).logits.float()
            if self.regression:
                out += [{"score": round(float(s), 4)} for s in logits[:, 0]]
                continue
            for p in (logits / self.temperature).softmax(-1).tolist():
                if len(p) == 2:
                    same = p[1]
                    threshold = self.threshold if self.threshold is not None else 0.5
                    out.append(
                        {
                            "label": self.labels[int(same >= threshold)],
                            "probability": round(same, 4),
                            "probabilities": dict(zip(self.labels, [round(x, 4) for x in p])),
                            "threshold": threshold,
                            # the same probability with the tuned threshold moved to 0.5 (a shift of the
                            # log-odds, as a bias on the classifier would): one scale for a verdict and a
                            # chart that must agree (issue #38)
                            "decision_probability": round(_at_half(same, threshold), 4),
                        }
                    )
                else:
                    k = max(range(len(p)), key=p.__getitem__)
                    out.append(
                        {
                            "label": self.labels[k],
                            "probability": round(p[k], 4),
                            "probabilities": dict(zip(self.labels, [round(x, 4) for x in p])),
                        }
                    )
        return out

    def score(self, a: str, b: str) -> dict:
        return self.score_batch([(a, b)])[0]
