"""Fine-tune BERT/ERNIE on sentence pairs: "do these two sentences mean the same?".

    python training/similarity.py --train data/samples/pairs.tsv

Pairs are encoded as `[CLS] a [SEP] b [SEP]` with token type ids (the longer sentence is
truncated first). Integer or word labels train a classifier (2 classes for LCQMC/AFQMC);
0..5 scores (STS-B) train a regressor. The best epoch by --metric is kept; for two classes
a decision threshold tuned on dev is stored in the model's config.
"""

from __future__ import annotations

if __package__ in (None, ""):
    # `python training/similarity.py` puts training/ first on sys.path; use the repo root instead.
    import os as _os
    import sys as _sys

    _sys.path[0] = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))

import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from data import InputError, build_char_vocab, make_tokenizer
from data.pairs import PAIR_FORMATS, TASKS, read_pairs
from training.args import LoraArguments, RunArguments, ScratchArguments, parse_args
from training.cli import run, say
from training.pair_metrics import (
    MIN_CALIBRATION_ROWS,
    baseline_line,
    classification_metrics,
    fit_temperature,
    logistic_baseline,
    majority_class,
    regression_metrics,
    tune_threshold,
)
from training.schedule import Rule

DEFAULT_MODEL = "bert-base-chinese"
LORA_TARGETS = ["query", "value"]


@dataclass
class SimilarityArguments(ScratchArguments):
    train: str = field(
        default=None,
        metadata={"help": "training pairs: TSV s1<TAB>s2<TAB>label, AFQMC JSON Lines, or CSV with a header"},
    )
    dev: str = field(default=None, metadata={"help": "dev pairs (default: a seeded --valid-ratio split of --train)"})
    format: str = field(default="auto", metadata={"help": "pair file format", "choices": list(PAIR_FORMATS)})
    task: str = field(
        default="auto",
        metadata={"help": "classification or regression (auto: from the labels)", "choices": list(TASKS)},
    )
    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "base: a Hub id or folder (BERT, ERNIE, our cloze checkpoint) or 'scratch'"},
    )
    max_len: int = field(default=64, metadata={"help": "tokens per pair; the longer sentence is cut first"})
    metric: str = field(
        default=None, metadata={"help": "metric that picks the best epoch (default: accuracy, or spearman for scores)"}
    )
    symmetric: bool | None = field(
        default=None,
        metadata={
            "help": "also train on every pair in the other order (b, a); default: on for two classes or scores, "
            "off for 3+ "
            "classes (entailment-style labels are not symmetric)"
        },
    )
    predict: str = field(default=None, metadata={"help": "after training, score the pairs in this file"})
    output_file: str = field(
        default=None, metadata={"help": "where --predict writes JSON Lines (default: <output>/predictions.jsonl)"}
    )
    no_mlm_stage: bool = field(
        default=False,
        metadata={
            "help": "from scratch, skip the masked-LM stage on the pair text (training/cloze.py --pairs) that runs "
            "first by default"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.train:
            raise InputError("--train is required: a file of sentence pairs, e.g. --train data/samples/pairs.tsv")
        if self.max_len < 8:
            raise InputError(f"--max-len must be at least 8, got {self.max_len}")
        if self.metric not in (None, "accuracy", "f1", "pearson", "spearman", "loss"):
            raise InputError(f"--metric must be accuracy, f1, pearson, spearman or loss, got {self.metric}")


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


# Default amount of training (training/schedule.py): from scratch, the pair stage shares the cap with
# the masked-LM stage; patience keeps the best epoch. A pretrained base needs a few passes.
SCRATCH_RULE = Rule(min_steps=600, min_passes=6, max_minutes=15, unit="pairs")
PRETRAINED_RULE = Rule(min_steps=100, min_passes=3, max_minutes=30, unit="pairs", max_passes=5)


def example_pairs(pairs, labels, limit: int = 8) -> list[list[str]]:
    """A few short pairs of the run's own data, the labels taking turns: the app's Try examples for it."""
    by_label: dict = {}
    for (a, b), y in zip(pairs, labels):
        if len(a) + len(b) <= 60:
            by_label.setdefault(y, []).append([a, b])
    turns = [x for group in itertools.zip_longest(*by_label.values()) for x in group if x is not None]
    return turns[:limit]


def main(argv: list[str] | None = None, callbacks=()) -> int:
    started = time.monotonic()
    args, lora, runa = parse_args(
        (SimilarityArguments, LoraArguments, RunArguments),
        argv,
        "python training/similarity.py",
        __doc__.split("\n\n")[0],
    )
    import torch
    from transformers import DataCollatorWithPadding

    from training.models import SCRATCH, wrap_lora
    from training.runner import predict_in_order, run_training
    from training.task import (
        base_report,
        default_lr,
        extend_vocab,
        fit_max_len,
        open_output,
        pick_base,
        publish,
        resumed_tokenizer,
        scratch_recipe,
        split_holdout,
        stop_if_interrupted,
    )

    train_file = read_pairs(args.train, args.format, args.task)
    task = train_file.task
    say(f"train: {len(train_file.pairs)} pairs from {args.train} ({train_file.format}, {task})")
    if train_file.bad.count:
        say(train_file.bad.summary("pairs"))
    if task == "classification":
        counts = train_file.class_counts()
        if len(counts) < 2:
            raise InputError(
                f"{args.train} has only one class ({train_file.label_names[next(iter(counts))]}); a classifier "
                "needs examples of at least two"
            )
    if args.dev:
        dev_file = read_pairs(args.dev, args.format, task, train_file.label_names)
        if dev_file.bad.count:
            say(dev_file.bad.summary("dev pairs"))
        train_pairs, train_labels = train_file.pairs, train_file.labels
        dev_pairs, dev_labels = dev_file.pairs, dev_file.labels
    else:
        # Pairs that share a sentence stay on one side: otherwise a dev pair (anchor, near-miss)
        # is judged by a model that memorised (anchor, paraphrase) = same, and dev accuracy
        # fell well below chance on the sample pairs.
        train_rows, dev_rows = split_holdout(
            list(zip(train_file.pairs, train_file.labels)),
            runa.valid_ratio,
            runa.seed,
            groups=sentence_groups(train_file.pairs),
        )
        train_pairs, train_labels = [p for p, _ in train_rows], [y for _, y in train_rows]
        dev_pairs, dev_labels = [p for p, _ in dev_rows], [y for _, y in dev_rows]
        if not dev_pairs:
            say("note: no dev pairs; the last epoch is kept and no decision threshold is tuned")
    # Read --predict now: a bad file should stop the run before training, not after it.
    predict_file = read_pairs(args.predict, args.format, require_labels=False) if args.predict else None
    if predict_file and predict_file.bad.count:
        say(predict_file.bad.summary("pairs to predict"))
    metric = args.metric or ("accuracy" if task == "classification" else "spearman")
    num_labels = len(train_file.label_names) if task == "classification" else 1
    id2label = dict(enumerate(train_file.label_names)) if task == "classification" else {0: "score"}

    def load_pretrained(name: str, dropout: float | None = None, **kw):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        kw = {**kw, "trust_remote_code": False}  # never a model's own code, not even on a "y" typed at a prompt
        tokenizer = AutoTokenizer.from_pretrained(name, **kw)
        if dropout is not None:  # BERT-family config names
            kw = {**kw, "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                name,
                num_labels=num_labels,
                id2label=id2label,
                label2id={v: k for k, v in id2label.items()},
                problem_type="single_label_classification" if task == "classification" else "regression",
                ignore_mismatched_sizes=True,
                **kw,
            )
        except ValueError as e:  # e.g. a GPT-2 folder
            raise InputError(f"{name} cannot be used as a sentence-pair encoder ({str(e).splitlines()[0][:120]})")
        return model, tokenizer

    plan, resume_from = open_output(runa, "similarity", (args, lora))
    loaded, choice = pick_base(args.model, load_pretrained, runa, "sentence-pair model")
    cap_minutes = runa.max_minutes or SCRATCH_RULE.max_minutes
    mlm_stage = None
    if loaded is None and not resume_from and not args.no_mlm_stage:
        # From scratch a pair classifier sat at chance on LCQMC (loss 0.693); masked-LM on the same
        # pairs first, as the pair task encodes them, is what made it learn (bench/similarity.py).
        mlm_stage, mlm_report = masked_lm_stage(args, runa, plan, cap_minutes * MLM_SHARE)
        # the stage trained without dropout (training/cloze.py --pairs); the pair task overfits within a few
        # passes and gets BERT's usual 0.1 back
        loaded = load_pretrained(mlm_stage, dropout=0.1)
        if runa.epochs is None and runa.max_steps is None:  # the pair stage gets what the cap has left
            # what is left of the cap since the start, less the pair stage's own end (calibration, saving):
            # the default run on 6,000 LCQMC pairs ended 6 s over 15 min when only the MLM stage was counted
            left = cap_minutes - (time.monotonic() - started) / 60 - PAIR_STAGE_END_MINUTES
            runa.max_minutes = round(max(0.5, left), 1)
    if loaded is None:
        from transformers import BertConfig, BertForSequenceClassification

        tokenizer = resumed_tokenizer(resume_from) or make_tokenizer(
            build_char_vocab((s for p in train_file.pairs for s in p), min_freq=args.min_freq)
        )
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=args.n_embd,
            num_hidden_layers=args.n_layer,
            num_attention_heads=args.n_head,
            intermediate_size=4 * args.n_embd,
            max_position_embeddings=max(args.max_len, 64),
            num_labels=num_labels,
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            problem_type="single_label_classification" if task == "classification" else "regression",
            pad_token_id=tokenizer.pad_token_id,
        )
        if resume_from and os.path.isfile(os.path.join(resume_from, "config.json")):
            # the interrupted run's own shape: after the masked-LM stage it has that model's positions
            config = BertConfig.from_pretrained(resume_from)
        model = BertForSequenceClassification(config)
    else:
        model, tokenizer = loaded
        fit_max_len(args, getattr(model.config, "max_position_embeddings", args.max_len), choice)
        sentences = (s for p in train_file.pairs for s in p)
        tokenizer = extend_vocab(model, tokenizer, sentences, choice, lora.lora, args.min_freq)
    if mlm_stage:
        import shutil

        from accelerate import PartialState

        state = PartialState()
        state.wait_for_everyone()  # every process has loaded it
        if state.is_main_process:
            shutil.rmtree(mlm_stage, ignore_errors=True)  # it must not end up inside the checkpoint
    scratch = choice.source == SCRATCH
    # lr 1e-4 from scratch: at 5e-4 and 1e-3 a scratch BERT sat at chance on LCQMC (bench/similarity.py)
    small = scratch_recipe(choice, model)
    default_lr(runa, small, lora.lora, scratch_lr=1e-4)
    if scratch and not runa.patience:
        runa.patience = 3  # small scratch models overfit pairs within a few passes; keep the best and stop
    if task == "regression":
        train_labels, dev_labels = [float(y) for y in train_labels], [float(y) for y in dev_labels]

    symmetric = args.symmetric if args.symmetric is not None else num_labels <= 2
    if symmetric:
        # "Same meaning" does not depend on the order: (b, a) is a second, free training example.
        fit_pairs, fit_labels = train_pairs + [(b, a) for a, b in train_pairs], train_labels + train_labels
    else:
        fit_pairs, fit_labels = train_pairs, train_labels
    train_ds = encode(tokenizer, fit_pairs, fit_labels, args.max_len)
    dev_ds = encode(tokenizer, dev_pairs, dev_labels, args.max_len)
    train_tokens = sum(len(r["input_ids"]) for r in train_ds)
    say(
        f"base: {choice.name} | {len(train_ds)} train{' (both orders)' if symmetric else ''} / {len(dev_ds)} dev "
        f"pairs, {train_tokens} train tokens"
    )
    if lora.lora:
        model = wrap_lora(
            model, lora.lora_r, lora.lora_alpha, lora.lora_dropout, LORA_TARGETS, "SEQ_CLS"
        )  # peft keeps the head trainable
    total, trainable = model.num_parameters(), model.num_parameters(only_trainable=True)

    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if runa.bf16 else None)
    result = run_training(
        model,
        tokenizer,
        train_ds,
        dev_ds or None,
        collator,
        runa,
        plan,
        resume_from,
        metric=metric,
        greater_is_better=metric != "loss",
        compute_metrics=classification_metrics if task == "classification" else regression_metrics,
        callbacks=callbacks,
        rule=SCRATCH_RULE if small else PRETRAINED_RULE,
        items=len(train_pairs),
    )
    code = stop_if_interrupted(result, plan, "training/similarity.py", argv)
    if code is not None:
        return code
    trainer = result.trainer
    final = trainer.model.get_base_model() if lora.lora else trainer.model  # config holder; saving merges LoRA
    threshold = dev_acc = temperature = None
    if task == "classification" and dev_ds and len(dev_ds) >= MIN_CALIBRATION_ROWS:
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
    top, majority = majority_class(dev_labels) if task == "classification" and dev_labels else (None, None)
    warning = closing = overlap = None
    if majority is not None and "accuracy" in (
        result.best or {}
    ):  # judged by what the saved model gives: tuned threshold if any
        if num_labels == 2 and len(set(train_labels)) == 2:
            overlap = logistic_baseline(
                SimpleNamespace(pairs=train_pairs, labels=train_labels),
                SimpleNamespace(pairs=dev_pairs, labels=dev_labels),
            )
        closing, weak = baseline_line(
            dev_acc if dev_acc is not None else result.best["accuracy"], majority, train_file.label_names[top], overlap
        )
        warning = closing if weak else None
    counts = train_file.class_counts() if task == "classification" else {}
    report = base_report(
        "similarity", choice, result, plan, (args, lora, runa), final, tokenizer, train_tokens, total, trainable
    )
    report["data"] = {
        "train": {
            "path": os.path.abspath(args.train),
            "format": train_file.format,
            "encoding": train_file.encoding,
            "rows": len(train_pairs),
            "skipped": train_file.bad.to_dict(),
            "both_orders": symmetric,
        },
        "valid": {
            "path": os.path.abspath(args.dev)
            if args.dev
            else f"{runa.valid_ratio:.0%} of {args.train} (seed {runa.seed})"
            if dev_pairs
            else None,
            "rows": len(dev_pairs),
        },
    }
    report.update(
        {
            "problem": task,
            "labels": train_file.label_names,
            "metric": metric,
            "decision_threshold": threshold,
            "calibration_temperature": temperature,
            "dev_accuracy_at_threshold": None if dev_acc is None else round(dev_acc, 4),
            "class_counts": {train_file.label_names[k]: v for k, v in sorted(counts.items())} if counts else None,
            "majority_baseline": round(majority, 4) if majority is not None else None,
            "char_overlap_baseline": round(overlap, 4) if overlap is not None else None,
            "warning": warning,
            "mlm_stage": mlm_report if mlm_stage else None,
            "convergence": result.convergence,
            "examples": example_pairs(dev_pairs or train_pairs, dev_labels if dev_pairs else train_labels),
        }
    )
    best = result.best or {}
    card = dict(
        title=f"Chinese sentence similarity ({os.path.basename(plan.final)})",
        pipeline_tag="text-classification",
        tags=["bert", "chinese", "sentence-similarity", task] + (["lora"] if lora.lora else []),
        metrics={k: round(best[k], 4) for k in ("accuracy", "f1", "pearson", "spearman") if k in best},
        summary_zh="语义相似度模型：输入两句话，判断它们意思是否相同（或给出 0–5 的相似度分数）。",
        summary_en="Sentence-pair model: are the two sentences the same in meaning (or a 0-5 similarity score)?",
        usage=f"""from transformers import pipeline
judge = pipeline("text-classification", model="{plan.final}", top_k=None)
print(judge({{"text": "花呗怎么还款", "text_pair": "花呗如何还钱"}}))""",
    )
    summary = f"best epoch {best['epoch']}: {metric} {best[metric]:.4f}; " if metric in best else ""
    predictions = (
        predict_pairs(
            trainer, tokenizer, predict_file, args.max_len, task, train_file.label_names, threshold, temperature
        )
        if predict_file
        else None
    )
    publish(plan, result, tokenizer, report, card, summary)
    if predictions is not None:
        out = args.output_file or os.path.join(plan.final, "predictions.jsonl")
        with open(out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in predictions)
        say(f"{len(predictions)} predictions written to {out}")
    if result.convergence and not warning:
        say(result.convergence)
    if closing:
        say(closing)  # last, so it is what the person reads
    return 0


# Of the time cap, for the masked-LM stage of a scratch run. The pair stage peaks within 1-2 passes
# (it overfits after); what moves dev accuracy is how well the encoder knows the pair text. 6,000
# LCQMC pairs, 4x256, same pair stage: masked accuracy 51% (7 min) -> dev 65.8%; 71% (10.6 min) -> 70.1%.
MLM_SHARE = 0.7
# The masked-LM stage steps twice the pair stage's batch at a learning rate ~sqrt(2) its scratch default,
# without dropout (training/cloze.py --pairs): on 2 cores 1.4x the pairs per second of batch 16 with
# dropout, and more masked accuracy per pass (6,000 LCQMC pairs, 10 passes: 67.0% vs 63.4%).
MLM_BATCH_FACTOR = 2
MLM_LR = 7e-4
PAIR_STAGE_END_MINUTES = 0.3


def masked_lm_stage(args, runa, plan, minutes: float) -> tuple[str, dict]:
    """training/cloze.py --pairs on the training pairs, in the run's working folder; returns (folder, report)."""
    from training import cloze as cloze_script

    folder = os.path.join(plan.work, "mlm_stage")
    say(
        f"stage 1 of 2: masked-LM on the pair text (training/cloze.py --pairs, up to {minutes:.1f} min; "
        "--no-mlm-stage skips it)"
    )
    argv = [
        "--data",
        args.train,
        "--pairs",
        "--model",
        "scratch",
        "--output",
        folder,
        "--overwrite",
        "--valid-ratio",
        "0.01",
        "--max-len",
        str(args.max_len),
        "--min-freq",
        str(args.min_freq),
        "--n-layer",
        str(args.n_layer),
        "--n-embd",
        str(args.n_embd),
        "--n-head",
        str(args.n_head),
        "--batch-size",
        str(MLM_BATCH_FACTOR * runa.batch_size),
        "--lr",
        f"{MLM_LR:g}",
        "--seed",
        str(runa.seed),
        "--max-minutes",
        f"{minutes:g}",
        # an explicit amount of training applies to both stages
        *(["--epochs", f"{runa.epochs:g}"] if runa.epochs else []),
        *(["--max-steps", str(runa.max_steps)] if runa.max_steps else []),
        *(["--format", args.format] if args.format != "auto" else []),
        *(["--bf16", "force"] if runa.bf16 else []),
    ]  # already checked for this device
    try:
        code = cloze_script.main(argv)
    except KeyboardInterrupt:
        code = 130
    if code == 130:
        raise KeyboardInterrupt
    if code:
        raise InputError(f"the masked-LM stage failed (exit {code}); --no-mlm-stage trains the pairs directly")
    from accelerate import PartialState

    PartialState().wait_for_everyone()  # the main process has written the stage's folder
    with open(os.path.join(folder, "training_report.json"), encoding="utf-8") as f:
        report = json.load(f)
    best = report.get("best") or {}
    say(f"stage 2 of 2: the pair task on the masked-LM model (masked accuracy {best.get('masked_accuracy', 0):.1%})")
    return folder, {
        "minutes": round(report["wall_time_s"] / 60, 2),
        "wall_time_s": report["wall_time_s"],
        "steps": report["global_step"],
        "masked_accuracy": best.get("masked_accuracy"),
        **{k: report["hyperparameters"].get(k) for k in ("batch_size", "lr", "dropout", "mlm_probability")},
    }


def predict_pairs(
    trainer, tokenizer, file, max_len: int, task: str, label_names, threshold, temperature: float | None = None
) -> list[dict]:
    """Score --predict pairs with the trained model (labels in the file are ignored)."""
    import torch

    from training.runner import predict_in_order

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


if __name__ == "__main__":
    sys.exit(run(main))
