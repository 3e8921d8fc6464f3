"""Text classification on BERT/ERNIE or a model from scratch: the classify task's training recipe
(training/classify.py runs it).

Texts are encoded `[CLS] text [SEP]`; the head's `id2label` holds the file's own label strings. Dev texts are
the user's --dev file or a stratified split. After training the report sets the model beside what needs no
model: the commonest class, and character n-gram TF-IDF + logistic regression fitted on the same split.
"""

from __future__ import annotations

import functools
import os
import random
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import DataCollatorWithPadding

from data import InputError
from data.labelled import LabelledFile, read_labelled
from training.cli import say
from training.pipeline import Data, Run
from training.runner import TrainingSetup, predict_in_order
from training.sampling import GroupedTrainer
from training.schedule import Rule
from training.tasks.classify import TRAINING
from training.tasks.classify.metrics import (
    accuracy_and_f1,
    baseline_line,
    confusion,
    macro_f1,
    most_confused,
    per_class,
    plot_confusion,
    tfidf_baseline,
)
from training.tasks.sequence import SequenceClassifierRecipe

MIN_TEXTS = 10  # fewer cannot both train and leave a text to check it on
# A file this small holds out at least SMALL_SHARE of each class: 5% of 150 tickets was 8 dev texts, too few to
# tell a model from the baseline
SMALL_FILE, SMALL_SHARE = 1000, 0.1
IMBALANCE = 1.5  # --class-weights auto weighs the loss when the largest class has this many times the smallest


def label_order(labels) -> list[str]:
    """The classes in a stable order: by value when every label is a number ("0", "1", "10"), else by text."""
    names = set(labels)
    try:
        return sorted(names, key=float)
    except ValueError:
        return sorted(names)


def stratified_split(ids: list[int], ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of (train, dev): the same share of every class held out (at least one of a class with 3 or more
    texts), seeded; file order kept on both sides."""
    if ratio <= 0:
        return list(range(len(ids))), []
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(ids):
        by_class.setdefault(y, []).append(i)
    rng, held = random.Random(seed), set()
    for y in sorted(by_class):
        members = by_class[y]
        if len(members) < 3:
            continue
        rng.shuffle(members)
        held.update(members[: max(1, round(len(members) * ratio))])
    return [i for i in range(len(ids)) if i not in held], sorted(held)


def class_weights(counts: list[int], mode: str) -> list[float] | None:
    """Loss weights by class: balanced is N / (K x count) (each class weighs the same in total); auto its square
    root when the classes are imbalanced, a milder push that costs less overall accuracy; None: unweighted."""
    if mode == "none" or min(counts) == 0:
        return None
    if mode == "auto" and max(counts) < IMBALANCE * min(counts):
        return None
    total, k = sum(counts), len(counts)
    weights = [total / (k * c) for c in counts]
    return [w**0.5 for w in weights] if mode == "auto" else weights


class WeightedTrainer(GroupedTrainer):
    """The Trainer with a class-weighted cross-entropy (transformers' models take no class weights)."""

    def __init__(self, *args, class_weights: list[float], **kwargs):
        super().__init__(*args, **kwargs)
        self.class_weights = torch.tensor(class_weights, dtype=torch.float32)
        self.model_accepts_loss_kwargs = False  # a mean per batch: the Trainer scales it for accumulation

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits.float()
        loss = torch.nn.functional.cross_entropy(logits, labels, weight=self.class_weights.to(logits.device))
        return (loss, outputs) if return_outputs else loss


@dataclass
class ClassifyCarry:
    """What the classify recipe keeps between its steps."""

    file: LabelledFile | None = None  # the training file as read
    names: list[str] = field(default_factory=list)  # the label strings, by class id
    weights: list[float] | None = None  # the loss's class weights (None: unweighted)
    dev_ds: list = field(default_factory=list)
    warning: str | None = None  # the baseline line, when the model learned too little
    closing: str | None = None  # the last line said


class ClassifyRecipe(SequenceClassifierRecipe):
    training = TRAINING
    carry = ClassifyCarry
    what = "text classifier"

    def label_counts(self, run: Run) -> dict[str, int]:
        counts = Counter(y for _, y in run.data.train)
        return {run.carry.names[k]: n for k, n in counts.items()}

    # waimai_10k from scratch (4x256, 2 cores): at 1e-3 dev accuracy was 71% after a pass (majority 67%), at 3e-4 89%
    scratch_lr = 3e-4
    # From scratch the classifier learns which characters go with which label within a few passes and then
    # overfits: patience keeps the best epoch. A pretrained base needs a few passes.
    scratch_rule = Rule(min_steps=1000, min_passes=10, max_minutes=15, unit="texts")
    pretrained_rule = Rule(min_steps=100, min_passes=2, max_minutes=30, unit="texts", max_passes=4)

    def read(self, run: Run) -> Data:
        args, options, carry = run.args, run.options, run.carry
        found = read_labelled(args.data, args.format, args.text_column, args.label_column)
        note = f", read as {found.encoding.upper()}" if found.encoding != "utf-8" else ""
        say(f"train: {len(found.texts):,} texts from {args.data} ({found.format}{note})")
        for line in found.describe():
            say(line)
        if found.bad.count:
            say(found.bad.summary("rows"))
        names = label_order(found.labels)
        if len(names) < 2:
            raise InputError(
                f"{args.data} has only one class ({names[0]!r}); a classifier needs texts of at least two classes"
            )
        if len(found.texts) < MIN_TEXTS:
            raise InputError(
                f"{args.data} has only {len(found.texts)} usable texts; a classifier needs at least {MIN_TEXTS} "
                "(dozens per class to learn well)"
            )
        index = {name: i for i, name in enumerate(names)}
        rows = [(t, index[y]) for t, y in zip(found.texts, found.labels)]
        if args.dev:
            train, valid, dev_source = rows, self.read_dev(args, index), os.path.abspath(args.dev)
        else:
            ratio = options.valid_ratio
            if 0 < ratio < SMALL_SHARE and len(rows) < SMALL_FILE:
                ratio = SMALL_SHARE
                say(f"note: {len(rows)} texts: {ratio:.0%} of each class is held out to measure the model")
            kept, held = stratified_split([y for _, y in rows], ratio, options.seed)
            train, valid = [rows[i] for i in kept], [rows[i] for i in held]
            share = f"{ratio:.0%} of each class of {args.data} (seed {options.seed})"
            dev_source = share if held else None
        if not valid:
            say("note: no dev texts; the last epoch is kept and nothing measures the model")
        counts = Counter(y for _, y in train)
        carry.file, carry.names = found, names
        carry.weights = class_weights([counts.get(i, 0) for i in range(len(names))], args.class_weights)
        if carry.weights:
            shown = ", ".join(f"{names[i]} {w:.2f}" for i, w in enumerate(carry.weights[:8]))
            say(f"classes are imbalanced: the loss weighs them ({shown}; --class-weights none to turn it off)")
        report = {
            "train": {
                "path": os.path.abspath(args.data),
                "format": found.format,
                "encoding": found.encoding,
                "columns": list(found.columns) if found.columns else None,
                "rows": len(train),
                "skipped": found.bad.to_dict(),
                "rare_labels": found.rare(),
            },
            "valid": {"path": dev_source, "rows": len(valid)},
        }
        return Data(train, valid, len(train), [t for t, _ in train], report)

    def read_dev(self, args, index: dict) -> list:
        dev = read_labelled(args.dev, args.format, args.text_column, args.label_column)
        unknown = [y for y in dev.labels if y not in index]
        for y in sorted(set(unknown))[:5]:
            dev.bad.add(os.path.basename(args.dev), f"label {y!r} is not one of the training file's labels")
        if dev.bad.count:
            say(dev.bad.summary("dev rows"))
        say(f"dev: {len(dev.texts) - len(unknown):,} texts from {args.dev}")
        return [(t, index[y]) for t, y in zip(dev.texts, dev.labels) if y in index]

    def head(self, run: Run) -> dict:
        names = run.carry.names
        return dict(
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)},
            problem_type="single_label_classification",
        )

    def encode(self, run: Run) -> TrainingSetup:
        data, carry, tokenizer = run.data, run.carry, run.tokenizer

        def rows(items):
            enc = tokenizer([t for t, _ in items], truncation=True, max_length=run.max_len)
            return [{**{k: enc[k][i] for k in enc}, "labels": y} for i, (_, y) in enumerate(items)]

        train_ds, carry.dev_ds = rows(data.train), rows(data.valid)
        run.train_tokens = sum(len(r["input_ids"]) for r in train_ds)
        cut = sum(len(r["input_ids"]) >= run.max_len for r in train_ds)
        say(
            f"base: {run.choice.name} | {len(train_ds):,} train / {len(carry.dev_ds):,} dev texts, "
            f"{run.train_tokens:,} train tokens" + (f"; {cut:,} texts cut to --max-len {run.max_len}" if cut else "")
        )
        trainer = functools.partial(WeightedTrainer, class_weights=carry.weights) if carry.weights else GroupedTrainer
        return TrainingSetup(
            train_ds,
            carry.dev_ds or None,
            DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if run.options.bf16 else None),
            metric="accuracy",
            greater_is_better=True,
            compute_metrics=accuracy_and_f1,
            trainer_class=trainer,
        )

    def evaluate(self, run: Run, result, report: dict):
        carry, names, data = run.carry, run.carry.names, run.data
        model = result.trainer.model
        # a plain pipeline(..., truncation=True) then cuts any text to what the model reads
        run.tokenizer.model_max_length = int(getattr(model.config, "max_position_embeddings", 512))
        report["labels"] = names
        report["class_counts"] = {names[k]: v for k, v in sorted(Counter(y for _, y in data.train).items())}
        report["class_weights"] = carry.weights
        if carry.dev_ds:
            self.measure(run, result, report)
        report["convergence"] = result.convergence
        report["examples"] = [[t] for t, _ in (data.valid or data.train)[:8]]
        best = result.best or {}
        summary = f"best epoch {best['epoch']}: dev accuracy {best['accuracy']:.1%}; " if "accuracy" in best else ""
        final = run.output.final
        shown = "、".join(names[:8]) + (" 等" if len(names) > 8 else "")
        card = dict(
            title=f"Chinese text classifier ({os.path.basename(final)})",
            pipeline_tag="text-classification",
            tags=["bert", "chinese", "text-classification"] + (["lora"] if run.lora.lora else []),
            metrics={k: round(report[k], 4) for k in ("dev_accuracy", "macro_f1") if report.get(k) is not None},
            summary_zh=f"文本分类模型：把一段文字分到你的类别里（{shown}）。",
            summary_en=f"A text classifier into your own {len(names)} classes ({', '.join(names[:8])}).",
            usage=f"""from transformers import pipeline
classify = pipeline("text-classification", model="{final}", truncation=True)
print(classify("送餐很快，味道也不错", top_k=3))""",
        )
        return card, summary, None

    def measure(self, run: Run, result, report: dict) -> None:
        """Dev figures of the kept model, the confusion picture, and the two things that need no model."""
        carry, names, data = run.carry, run.carry.names, run.data
        k, dev_labels = len(names), [y for _, y in data.valid]
        preds = np.asarray(predict_in_order(result.trainer, carry.dev_ds)).argmax(-1)
        accuracy = float((preds == np.asarray(dev_labels)).mean())
        matrix = confusion(preds, dev_labels, k)
        table = per_class(preds, dev_labels, k)
        top, top_count = Counter(dev_labels).most_common(1)[0]
        majority = top_count / len(dev_labels)
        baseline = tfidf_baseline(
            [t for t, _ in data.train], [y for _, y in data.train], [t for t, _ in data.valid], dev_labels
        )
        line, weak = baseline_line(accuracy, baseline, majority)
        carry.closing, carry.warning = line, line if weak else None
        plot_confusion(matrix, names, os.path.join(run.output.work, "confusion.png"), "dev: true x predicted")
        report.update(
            dev_accuracy=round(accuracy, 4),
            macro_f1=round(macro_f1(preds, dev_labels, k), 4),
            per_class={names[c]: {m: round(v, 4) for m, v in row.items()} for c, row in enumerate(table)},
            confusion=matrix,
            most_confused=most_confused(matrix, names),
            majority_class=names[top],
            majority_baseline=round(majority, 4),
            tfidf_baseline=None if baseline is None else round(baseline, 4),
            warning=carry.warning,
            metrics_line=line,
        )

    def after_publish(self, run: Run, result, report: dict) -> None:
        for row in report.get("most_confused") or []:
            say(f"  confused: {row['count']} dev texts of {row['true']!r} taken for {row['predicted']!r}")
        if result.convergence and not run.carry.warning:
            say(result.convergence)
        if run.carry.closing:
            say(run.carry.closing)  # last, so it is what the person reads
