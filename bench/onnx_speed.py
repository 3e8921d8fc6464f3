"""ONNX Runtime beside our PyTorch path on the same inputs: a text classifier (the classify and similarity tasks'
model) of the scratch default's shape (4x256 BERT) and of bert-base-chinese's (12x768), random weights.

    python bench/onnx_speed.py                 # both shapes, batches of 1 and 32, ~3 minutes on 2 cores
    python bench/onnx_speed.py --shapes 4x256

Ours is `chat.classify.ClassifyPredictor.predict_batch` (what the app and `training/classify.py` predictions
use: fp32 PyTorch); ONNX Runtime runs the `training/export.py` export (fp32, and int8 with its dynamic
quantisation) on the same tokenised texts, the tokenising counted in both. One JSON line per shape, batch and
runtime: texts per second (median of 5 timed rounds after a warm-up). Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import machine  # noqa: E402

TEXTS = os.path.join(ROOT, "data", "samples", "reviews.csv")


def classifier(folder: str, layers: int, hidden: int) -> None:
    """A BERT text classifier of this shape (random weights) over the sample reviews' characters, saved."""
    from transformers import BertConfig, BertForSequenceClassification

    from data import build_char_vocab, make_tokenizer
    from training.tasks.classify import TRAINING

    rows = TRAINING.read(TEXTS).rows
    tokenizer = make_tokenizer(build_char_vocab([t for t, _ in rows], min_freq=1))
    labels = sorted({y for _, y in rows})
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={y: i for i, y in enumerate(labels)},
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def timed(fn, rounds: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="4x256,12x768", help="LAYERSxHIDDEN, comma-separated")
    p.add_argument("--batches", default="1,32")
    a = p.parse_args()
    import onnxruntime as ort
    import torch

    from chat.classify import ClassifyPredictor
    from training.export import export_onnx
    from training.tasks.classify import TRAINING

    texts = [t for t, _ in TRAINING.read(TEXTS).rows]
    for shape in a.shapes.split(","):
        layers, hidden = (int(x) for x in shape.split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            folder, out = os.path.join(tmp, "model"), os.path.join(tmp, "onnx")
            classifier(folder, layers, hidden)
            export_onnx(folder, out, int8=True, say=lambda *_: None)
            ours = ClassifyPredictor.from_pretrained(folder)
            tokenizer = ours.tokenizer
            sessions = {
                name: ort.InferenceSession(os.path.join(out, f), providers=["CPUExecutionProvider"])
                for name, f in (("onnxruntime_fp32", "model.onnx"), ("onnxruntime_int8", "model.int8.onnx"))
            }
            for batch in (int(b) for b in a.batches.split(",")):
                chunk = texts[:batch]

                def run_ort(session, chunk=chunk):
                    enc = tokenizer(chunk, padding=True, truncation=True, max_length=256, return_tensors="np")
                    return session.run(["logits"], {i.name: enc[i.name] for i in session.get_inputs()})[0]

                runners = {"ours_pytorch": lambda chunk=chunk: ours.predict_batch(chunk, batch_size=batch)}
                runners.update({name: (lambda s=s: run_ort(s)) for name, s in sessions.items()})
                for name, fn in runners.items():
                    seconds = timed(fn)
                    row = {
                        "bench": "onnx_speed",
                        "shape": shape,
                        "batch": batch,
                        "runtime": name,
                        "texts_per_s": round(len(chunk) / seconds, 1),
                        "ms_per_batch": round(1000 * seconds, 2),
                        "threads": torch.get_num_threads(),
                        "machine": machine(),
                    }
                    print(json.dumps(row, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
