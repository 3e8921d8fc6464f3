"""Sentence-pair similarity ("do these two sentences mean the same?", or a 0-5 score) on BERT/ERNIE or a
model from scratch: the similarity task's training recipe (training/similarity.py runs it).

Pairs are encoded `[CLS] a [SEP] b [SEP]` with token types. From scratch, a masked-LM stage on the pair
text runs first (training/tasks/cloze with --pairs, through the same pipeline); then the pair
task. Probabilities are calibrated on the dev pairs and, for two classes, the decision threshold is
tuned there; the report sets the model beside what needs no model (majority class, character overlap).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch
from accelerate import PartialState
from transformers import (
    DataCollatorWithPadding,
)

from data import InputError
from data.pairs import PairFile, read_pairs
from data.textio import write_atomic
from training.cli import say
from training.pipeline import Data, Run
from training.runner import TrainingSetup, predict_in_order
from training.schedule import Rule
from training.steps import input_files
from training.tasks.sequence import SequenceClassifierRecipe
from training.tasks.similarity import TRAINING
from training.tasks.similarity.metrics import (
    MIN_CALIBRATION_ROWS,
    baseline_line,
    classification_metrics,
    fit_temperature,
    logistic_baseline,
    majority_class,
    regression_metrics,
    tune_threshold,
)
from training.tasks.similarity.pairs import encode, example_pairs, predict_pairs, sentence_groups
from training.tasks.similarity.stage import masked_lm_stage

# Of the time cap, for the masked-LM stage of a scratch run. The pair stage peaks within 1-2 passes
# (it overfits after); what moves dev accuracy is how well the encoder knows the pair text. 6,000
# LCQMC pairs, 4x256, same pair stage: masked accuracy 51% (7 min) -> dev 65.8%; 71% (10.6 min) -> 70.1%.
MLM_SHARE = 0.7
PAIR_STAGE_END_MINUTES = 0.3
MIN_PAIRS = 10  # fewer cannot both train and leave a pair to check it on


@dataclass
class PairCarry:
    """What the similarity recipe keeps between its steps."""

    started: float = 0.0  # time.monotonic() when it started: the pair stage gets what the time cap has left
    file: PairFile | None = None  # the training file as read
    problem: str = "classification"  # or "regression" (the --task option, or the labels')
    train_labels: list = field(default_factory=list)
    dev_labels: list = field(default_factory=list)
    metric: str = "accuracy"
    num_labels: int = 2
    id2label: dict = field(default_factory=dict)
    predict_file: PairFile | None = None  # --predict, read before training
    predictions_to: str | None = None  # where its rows go (checked before training)
    mlm_stage: dict | None = None  # the report's "mlm_stage"
    pair_minutes: float | None = None  # the pair stage's share of the time cap, after the masked-LM stage
    dev_ds: list = field(default_factory=list)
    predictions: list | None = None
    warning: str | None = None  # the baseline line, when the model is no better than what needs no model
    closing: str | None = None  # the last line said


class SimilarityRecipe(SequenceClassifierRecipe):
    training = TRAINING
    carry = PairCarry
    what = "sentence-pair model"
    scratch_lr = 1e-4  # at 5e-4 and 1e-3 a scratch BERT sat at chance on LCQMC (bench/similarity.py)
    # Default amount of training (training/schedule.py): from scratch, the pair stage shares the cap with
    # the masked-LM stage; patience keeps the best epoch. A pretrained base needs a few passes.
    scratch_rule = Rule(min_steps=600, min_passes=6, max_minutes=15, unit="pairs")
    pretrained_rule = Rule(min_steps=100, min_passes=3, max_minutes=30, unit="pairs", max_passes=5)

    def read(self, run: Run) -> Data:
        run.carry.started = time.monotonic()
        args = run.args
        train_file = read_pairs(args.train, args.format, args.task)
        problem = train_file.task
        say(f"train: {len(train_file.pairs)} pairs from {args.train} ({train_file.format}, {problem})")
        if train_file.bad.count:
            say(train_file.bad.summary("pairs"))
        if problem == "classification":
            counts = train_file.class_counts()
            if len(counts) < 2:
                raise InputError(
                    f"{args.train} has only one class ({train_file.label_names[next(iter(counts))]}); a classifier "
                    "needs examples of at least two"
                )
        if len(train_file.pairs) < MIN_PAIRS:
            raise InputError(
                f"{args.train} has only {len(train_file.pairs)} usable sentence pair(s); a similarity model needs at "
                f"least {MIN_PAIRS} (hundreds to learn well)"
            )
        if args.dev:
            dev_file = read_pairs(args.dev, args.format, problem, train_file.label_names, scale=train_file.scale)
            if dev_file.bad.count:
                say(dev_file.bad.summary("dev pairs"))
            train_pairs, train_labels = train_file.pairs, train_file.labels
            dev_pairs, dev_labels = dev_file.pairs, dev_file.labels
        else:
            # Pairs that share a sentence stay on one side: otherwise a dev pair (anchor, near-miss)
            # is judged by a model that memorised (anchor, paraphrase) = same, and dev accuracy
            # fell well below chance on the sample pairs.
            rows = list(zip(train_file.pairs, train_file.labels))
            train_rows, dev_rows = self.holdout(run, rows, groups=sentence_groups(train_file.pairs))
            train_pairs, train_labels = [p for p, _ in train_rows], [y for _, y in train_rows]
            dev_pairs, dev_labels = [p for p, _ in dev_rows], [y for _, y in dev_rows]
            if not dev_pairs:
                say("note: no dev pairs; the last epoch is kept and no decision threshold is tuned")
        # Read --predict now: a bad file should stop the run before training, not after it.
        predict_file = read_pairs(args.predict, args.format, require_labels=False) if args.predict else None
        if predict_file and predict_file.bad.count:
            say(predict_file.bad.summary("pairs to predict"))
        if problem == "regression":
            train_labels, dev_labels = [float(y) for y in train_labels], [float(y) for y in dev_labels]
        options = run.options
        dev_source = (
            os.path.abspath(args.dev)
            if args.dev
            else f"{options.valid_ratio:.0%} of {args.train} (seed {options.seed})"
            if dev_pairs
            else None
        )
        num_labels = len(train_file.label_names) if problem == "classification" else 1
        report = {
            "train": {
                "path": os.path.abspath(args.train),
                "format": train_file.format,
                "encoding": train_file.encoding,
                "rows": len(train_pairs),
                "skipped": train_file.bad.to_dict(),
                "both_orders": args.symmetric if args.symmetric is not None else num_labels <= 2,
            },
            "valid": {"path": dev_source, "rows": len(dev_pairs)},
        }
        carry = run.carry
        carry.file, carry.problem, carry.predict_file, carry.num_labels = train_file, problem, predict_file, num_labels
        carry.train_labels, carry.dev_labels = train_labels, dev_labels
        carry.metric = args.metric or ("accuracy" if problem == "classification" else "spearman")
        carry.id2label = dict(enumerate(train_file.label_names)) if problem == "classification" else {0: "score"}
        texts = [s for p in train_file.pairs for s in p]
        return Data(train_pairs, dev_pairs, len(train_pairs), texts, report)

    def label_counts(self, run: Run) -> dict[str, int] | None:
        if run.carry.problem != "classification":
            return None
        names = run.carry.file.label_names
        return {names[int(k)]: n for k, n in Counter(run.carry.train_labels).items()}

    def head(self, run: Run) -> dict:
        """The classification (or regression) head's config fields."""
        carry = run.carry
        return dict(
            num_labels=carry.num_labels,
            id2label=carry.id2label,
            label2id={v: k for k, v in carry.id2label.items()},
            problem_type="single_label_classification" if carry.problem == "classification" else "regression",
        )

    def build(self, run: Run) -> None:
        if (
            run.args.predict and run.output is not None
        ):  # checked now: a bad --output-file must stop the run before it trains, not after
            run.carry.predictions_to = run.output.place_output_file(
                "--output-file",
                run.args.output_file or os.path.join(run.output.final, "predictions.jsonl"),
                input_files(run.options, (run.args, run.lora)),
            )
        super().build(run)

    def prepare_base(self, run: Run, loaded):
        """A masked-LM stage first for a scratch model: from scratch a pair classifier sat at chance on LCQMC (loss
        0.693); masked-LM on the same pairs first, as the pair task encodes them, is what made it learn
        (bench/similarity.py). The pair stage then gets what the time cap has left (`max_minutes`)."""
        if loaded is not None or run.resume_from or run.args.no_mlm_stage:
            return loaded
        options = run.options
        max_minutes = options.max_minutes or self.scratch_rule.max_minutes
        stage, run.carry.mlm_stage = masked_lm_stage(run, max_minutes * MLM_SHARE)
        # the stage trained without dropout; the pair task overfits within a few passes and gets BERT's usual 0.1
        loaded = self.loader(run)(stage, dropout=0.1)
        if options.epochs is None and options.max_steps is None:
            # what is left of the cap since the start, less the pair stage's own end (calibration, saving): the
            # default run on 6,000 LCQMC pairs ended 6 s over 15 min when only the MLM stage was counted
            left = max_minutes - (time.monotonic() - run.carry.started) / 60 - PAIR_STAGE_END_MINUTES
            run.carry.pair_minutes = round(max(0.5, left), 1)
        state = PartialState()
        state.wait_for_everyone()  # every process has loaded it
        if state.is_main_process:
            shutil.rmtree(stage, ignore_errors=True)  # it must not end up inside the checkpoint
        return loaded

    def max_minutes(self, run: Run) -> float | None:
        return run.carry.pair_minutes or run.options.max_minutes

    def encode(self, run: Run) -> TrainingSetup:
        data, carry = run.data, run.carry
        train_labels, dev_labels = carry.train_labels, carry.dev_labels
        symmetric = data.report["train"]["both_orders"]
        if symmetric:
            # "Same meaning" does not depend on the order: (b, a) is a second, free training example.
            fit_pairs = data.train + [(b, a) for a, b in data.train]
            fit_labels = train_labels + train_labels
        else:
            fit_pairs, fit_labels = data.train, train_labels
        train_ds = encode(run.tokenizer, fit_pairs, fit_labels, run.max_len)
        dev_ds = encode(run.tokenizer, data.valid, dev_labels, run.max_len)
        run.train_tokens = sum(len(r["input_ids"]) for r in train_ds)
        say(
            f"base: {run.choice.name} | {len(train_ds)} train{' (both orders)' if symmetric else ''} / "
            f"{len(dev_ds)} dev pairs, {run.train_tokens} train tokens"
        )
        carry.dev_ds = dev_ds
        metric = carry.metric
        collator = DataCollatorWithPadding(run.tokenizer, pad_to_multiple_of=8 if run.options.bf16 else None)
        return TrainingSetup(
            train_ds,
            dev_ds or None,
            collator,
            metric=metric,
            greater_is_better=metric != "loss",
            compute_metrics=classification_metrics if carry.problem == "classification" else regression_metrics,
        )

    def evaluate(self, run: Run, result, report: dict):
        data, carry = run.data, run.carry
        dev_ds, train_labels, dev_labels = carry.dev_ds, carry.train_labels, carry.dev_labels
        problem, num_labels, metric, label_names = carry.problem, carry.num_labels, carry.metric, carry.file.label_names
        trainer = result.trainer
        final = trainer.model.get_base_model() if run.lora.lora else trainer.model  # config holder; saving merges
        threshold = dev_acc = temperature = None
        if problem == "classification" and dev_ds and len(dev_ds) >= MIN_CALIBRATION_ROWS:
            # probabilities that mean what they say (chat/similarity.py divides the logits by it; a plain
            # transformers pipeline does not, its labels are the same and its probabilities sharper)
            logits = predict_in_order(trainer, dev_ds)
            temperature = fit_temperature(logits, np.asarray(dev_labels))
            final.config.calibration_temperature = temperature
            say(f"probabilities calibrated on dev: temperature {temperature:g}")
            if num_labels == 2:
                p_same = (torch.tensor(logits).double() / temperature).softmax(-1)[:, 1].numpy()
                threshold, dev_acc = tune_threshold(p_same, np.asarray(dev_labels))
                say(f"decision threshold on p(same) tuned on dev: {threshold:.3f} (dev accuracy {dev_acc:.1%})")
                final.config.decision_threshold = threshold
        top, majority = majority_class(dev_labels) if problem == "classification" and dev_labels else (None, None)
        warning = closing = overlap = None
        # judged by what the saved model gives: the tuned threshold if any
        if majority is not None and "accuracy" in (result.best or {}):
            if num_labels == 2 and len(set(train_labels)) == 2:
                overlap = logistic_baseline(
                    SimpleNamespace(pairs=data.train, labels=train_labels),
                    SimpleNamespace(pairs=data.valid, labels=dev_labels),
                )
            accuracy = dev_acc if dev_acc is not None else result.best["accuracy"]
            closing, weak = baseline_line(accuracy, majority, label_names[top], overlap)
            warning = closing if weak else None
        counts = carry.file.class_counts() if problem == "classification" else {}
        report.update(
            {
                "problem": problem,
                "labels": label_names,
                "metric": metric,
                "decision_threshold": threshold,
                "calibration_temperature": temperature,
                "dev_accuracy_at_threshold": None if dev_acc is None else round(dev_acc, 4),
                "class_counts": {label_names[k]: v for k, v in sorted(counts.items())} if counts else None,
                "majority_baseline": round(majority, 4) if majority is not None else None,
                "char_overlap_baseline": round(overlap, 4) if overlap is not None else None,
                "warning": warning,
                "mlm_stage": carry.mlm_stage,
                "convergence": result.convergence,
                "examples": example_pairs(data.valid or data.train, dev_labels if data.valid else train_labels),
            }
        )
        best = result.best or {}
        final_folder = run.output.final
        card = dict(
            title=f"Chinese sentence similarity ({os.path.basename(final_folder)})",
            pipeline_tag="text-classification",
            tags=["bert", "chinese", "sentence-similarity", problem] + (["lora"] if run.lora.lora else []),
            metrics={k: round(best[k], 4) for k in ("accuracy", "f1", "pearson", "spearman") if k in best},
            summary_zh="语义相似度模型：输入两句话，判断它们意思是否相同（或给出 0–5 的相似度分数）。",
            summary_en="Sentence-pair model: are the two sentences the same in meaning (or a 0-5 similarity score)?",
            usage=f"""from transformers import pipeline
judge = pipeline("text-classification", model="{final_folder}", top_k=None)
print(judge({{"text": "花呗怎么还款", "text_pair": "花呗如何还钱"}}))""",
        )
        summary = f"best epoch {best['epoch']}: {metric} {best[metric]:.4f}; " if metric in best else ""
        if carry.predict_file:
            carry.predictions = predict_pairs(
                trainer, run.tokenizer, carry.predict_file, run.max_len, problem, label_names, threshold, temperature
            )
            if carry.predictions_to.startswith(run.output.work + os.sep):
                self.write_predictions(run)  # into the checkpoint before it is published
        carry.warning, carry.closing = warning, closing
        return card, summary, None

    def write_predictions(self, run: Run) -> None:
        """--predict's rows as JSON Lines, written under a temporary name and renamed (never half a file)."""
        out = run.carry.predictions_to
        os.makedirs(os.path.dirname(out), exist_ok=True)
        write_atomic(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in run.carry.predictions))

    def after_publish(self, run: Run, result, report: dict) -> None:
        predictions = run.carry.predictions
        if predictions is not None:
            out = run.carry.predictions_to
            if out.startswith(run.output.work + os.sep):
                out = os.path.join(run.output.final, os.path.basename(out))
            else:
                self.write_predictions(run)
            say(f"{len(predictions)} predictions written to {out}")
        if result.convergence and not run.carry.warning:
            say(result.convergence)
        if run.carry.closing:
            say(run.carry.closing)  # last, so it is what the person reads
