"""Text-classification predictor over a classify checkpoint folder (or any *ForSequenceClassification one).

    from chat.classify import ClassifyPredictor
    classify = ClassifyPredictor.from_pretrained("checkpoints/classify")
    classify.predict("送餐很快，味道也不错")           # {"label": "好评", "probabilities": {"好评": 0.97, ...}}
    classify.predict_file("reviews.txt", "out.csv")  # one text per line (or a CSV with a text column) -> CSV

Texts are encoded `[CLS] text [SEP]` and cut to what the model reads, as in training.
"""

from __future__ import annotations

import csv
import io
import os

import torch

from chat.settings import MAX_SENTENCE_CHARS
from data import InputError

MAX_FILE_TEXTS = 10_000  # a file of texts to label: more is a job for the command line, not the page
TOP = 5  # probabilities shown per text


class ClassifyPredictor:
    def __init__(self, model, tokenizer, max_len: int = 256, name: str = "classify"):
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.max_len = min(max_len, int(getattr(model.config, "max_position_embeddings", max_len)))
        self.labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]

    @classmethod
    def from_pretrained(cls, folder: str, max_len: int = 256) -> ClassifyPredictor:
        from transformers import AutoModelForSequenceClassification

        from chat.loading import load_auto_folder

        model, tokenizer = load_auto_folder(folder, AutoModelForSequenceClassification, "classify", "text classifier")
        return cls(model, tokenizer, max_len, folder)

    @staticmethod
    def _check(text) -> str:
        if not isinstance(text, str) or not text.strip():
            raise InputError("the text is empty")
        if len(text) > MAX_SENTENCE_CHARS:
            raise InputError(f"keep each text under {MAX_SENTENCE_CHARS} characters")
        return text.strip()

    @torch.no_grad()
    def predict_batch(self, texts: list[str], batch_size: int = 64) -> list[dict]:
        """{"label", "probability", "probabilities" (the TOP most likely)} per text."""
        texts = [self._check(t) for t in texts]
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(
                texts[i : i + batch_size], truncation=True, max_length=self.max_len, padding=True, return_tensors="pt"
            )
            for p in self.model(**enc).logits.float().softmax(-1).tolist():
                order = sorted(range(len(p)), key=p.__getitem__, reverse=True)
                out.append(
                    {
                        "label": self.labels[order[0]],
                        "probability": round(p[order[0]], 4),
                        "probabilities": {self.labels[k]: round(p[k], 4) for k in order[:TOP]},
                    }
                )
        return out

    def predict(self, text: str) -> dict:
        return self.predict_batch([text])[0]

    def predict_file(self, path: str, output: str) -> int:
        """Label every text of `path` (one per line, or a CSV/TSV/JSON Lines file with a text column) and write
        `output` as CSV (text, label, probability); returns the count."""
        texts = read_texts(path)
        rows = self.predict_batch(texts)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["text", "label", "probability"])
        for text, row in zip(texts, rows):
            writer.writerow([text, row["label"], row["probability"]])
        with open(output, "w", encoding="utf-8-sig", newline="") as f:  # with a BOM: Excel then reads it as UTF-8
            f.write(buffer.getvalue())
        return len(rows)


def read_texts(path: str) -> list[str]:
    """The texts of a file to label: a .csv/.tsv with a header naming its text column (found by name, as training
    finds it; other columns ignored), JSON Lines with a text field, else one text per line; at most
    MAX_FILE_TEXTS."""
    import json

    from data.labelled import TEXT_NAMES
    from data.text import normalize_utterance
    from data.textio import read_text

    text, _ = read_text(path)
    ext, name = os.path.splitext(path)[1].lower(), os.path.basename(path)
    if ext in (".csv", ".tsv"):
        rows = list(csv.reader(io.StringIO(text), delimiter="\t" if ext == ".tsv" else ","))
        header = [h.strip().lower().lstrip("\ufeff") for h in rows[0]] if rows else []
        column = next((header.index(n) for n in TEXT_NAMES if n in header), None)
        if column is None and len(header) > 1:
            raise InputError(
                f"{name}: no text column (columns: {', '.join(rows[0])[:120]}); name one text, 文本 or 评论"
            )
        raw = [r[column] for r in rows[1:] if len(r) > column] if column is not None else [r[0] for r in rows if r]
    elif ext in (".jsonl", ".json"):
        raw = []
        for line in text.split("\n"):
            try:
                obj = json.loads(line) if line.strip() else None
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                raw += [str(obj[k]) for k in obj if k.lower() in TEXT_NAMES][:1]
    else:
        raw = text.split("\n")
    texts = [t[:MAX_SENTENCE_CHARS] for t in (normalize_utterance(str(r)) for r in raw) if t]
    if not texts:
        raise InputError(f"{name} holds no text to label")
    if len(texts) > MAX_FILE_TEXTS:
        raise InputError(f"{name} has {len(texts):,} texts; at most {MAX_FILE_TEXTS:,} at a time")
    return texts
