"""A masked-LM (BERT, RoBERTa, RoFormer ...) taught the facts of your own text: the cloze task's training
recipe (training/cloze.py runs it; training/similarity.py runs it with --pairs as its first stage).

Passages are cut into overlapping windows of --max-len tokens; --mlm-probability of the tokens are
masked (80% [MASK] / 10% random / 10% unchanged), or whole jieba words with --whole-word-mask; the names
your text repeats are masked whole and seen in recombined lines (TrainingViews). --eval-prompts shows
the top-5 answers to your own quiz before and after training; without it the recipe quizzes the model
on lines held out of training.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from typing import Callable

import jieba
import transformers
from transformers import AutoModelForMaskedLM, AutoTokenizer

from data import InputError
from data.corpus import MASK, ClozePrompt, read_corpus, read_prompts
from data.errors import BadRows
from data.pairs import read_pairs
from data.spans import recurring_spans, self_quiz
from data.textio import read_text
from training.cli import say
from training.pipeline import Data, Recipe, Run
from training.runner import TrainingSetup
from training.schedule import Rule
from training.steps import resume_command
from training.tasks.cloze import TRAINING
from training.tasks.cloze.masking import ClozeCollator, TrainingViews, encode_pairs, encode_passages
from training.tasks.cloze.mlm import (
    QUIZ_PATIENCE,
    MaskedLMTrainer,
    QuizProgress,
    argmax_logits,
    facts_learned,
    facts_line,
    general_accuracy,
    hit_rate,
    joint_quiz,
    masked_accuracy,
    print_quiz,
    quiz,
)
from training.tasks.cloze.options import SCRATCH_ARCHITECTURES

SPAN_LINES = 20_000


# Default amount of training (training/schedule.py). A fact corpus is learned by heart: many passes
# over few lines. A pair file (masked-LM before training/similarity.py) is thousands of pairs, each
# seen in both orders per pass.
# A fact asked in new words needs far more steps than the self-quiz suggests: island150 (150 lines)
# answered 21% of its reworded prompts after 2,000 steps and 80% after 8,000 (3.9 min here).
# Sized by learning, not by the clock (issue #35): next to another program the steps take longer, and a
# plan cut to 5 minutes there learned 0 of 12 reworded prompts; so the steps stay, the self-quiz may end
# the run, and 3x the quiet time is the ceiling.
FACTS_RULE = Rule(min_steps=8000, min_passes=100, max_minutes=5, unit="lines", ceiling=3)
PRETRAINED_FACTS_RULE = Rule(min_steps=300, min_passes=30, max_minutes=15, unit="lines")
# More passes help the masked-LM stage for as long as it has (6,000 LCQMC pairs: masked accuracy still
# rising at 10 passes, and with it the pair task's): the cap decides.
PAIRS_RULE = Rule(min_steps=1000, min_passes=40, max_minutes=7.5, unit="pairs")


def probe_prompts(probes, tokenizer) -> list[ClozePrompt]:
    """The self-quiz's probes as prompts for this tokenizer: a probe has one [MASK] per character, and a
    Latin or digit span gets as many as it has word pieces (Q-19: q, -, 1, ##9 in a character vocab;
    q, -, 19 in bert-base-chinese's)."""
    return [
        ClozePrompt(
            p.text.replace(MASK * len(p.answer), MASK * len(tokenizer.tokenize(p.answer)), 1), p.answer, p.where
        )
        for p in probes
    ]


def read_training_text(args):
    """(the file as read, the items to split into train and valid, their sentences) of --data: a corpus of
    passages, or with --pairs a pair file (labels ignored)."""
    if args.pairs:
        corpus = read_pairs(args.data, args.format, require_labels=False)
        say(f"pairs: {len(corpus.pairs)} sentence pairs from {args.data} ({corpus.format})")
        if corpus.bad.count:
            say(corpus.bad.summary("pairs"))
        return corpus, corpus.pairs, [s for pair in corpus.pairs for s in pair]
    corpus = read_corpus(args.data)
    note = f", read as {corpus.encoding.upper()}" if corpus.encoding != "utf-8" else ""
    say(f"corpus: {len(corpus.passages)} passages from {args.data}{note}")
    if corpus.bad.count:
        say(corpus.bad.summary("lines"))
    return corpus, corpus.passages, corpus.passages


@dataclass
class ClozeCarry:
    """What the cloze recipe keeps between its steps."""

    prompts: list = field(default_factory=list)  # --eval-prompts' quiz, read
    prompt_bad: BadRows | None = None  # its skipped lines
    general: list = field(default_factory=list)  # --general-text's passages
    spans: dict = field(default_factory=dict)  # recurring spans of the text (data/spans.py)
    probes: list = field(default_factory=list)  # the self-quiz's probes, without --eval-prompts
    held: list = field(default_factory=list)  # the lines held out for the self-quiz
    quiz_items: list = field(default_factory=list)  # what is quizzed: the prompts, else the probes
    ask: Callable | None = None  # how: quiz (prompts) or joint_quiz (probes)
    before: list = field(default_factory=list)  # the quiz's answers before training
    quizzer: QuizProgress | None = None  # the callback quizzing while training
    general_ds: list = field(default_factory=list)  # --general-text, masked once
    windows: dict = field(default_factory=dict)  # the report's "windows": counts after encoding


class ClozeRecipe(Recipe):
    cuts_at_max_len = False  # long text is cut into windows, nothing is lost
    training = TRAINING
    carry = ClozeCarry
    what = "masked-LM"
    lora_targets = ("query", "value")

    def read(self, run: Run) -> Data:
        args, options = run.args, run.options
        jieba.setLogLevel(logging.WARNING)
        if args.whole_word_mask:
            say(
                "note: with --whole-word-mask every chosen word becomes [MASK] "
                "(the collator does no random replacement)"
            )
        if args.user_dict:
            # the text read_text checked (UTF-8 or GB18030; a pipe or binary file is one line), not the path:
            # jieba insists on UTF-8 and raises its own ValueError
            jieba.load_userdict(io.StringIO(read_text(args.user_dict)[0]))
        corpus, items, sentences = read_training_text(args)
        prompts, prompt_bad = read_prompts(args.eval_prompts) if args.eval_prompts else ([], None)
        if prompt_bad and prompt_bad.count:
            say(prompt_bad.summary("prompts"))
        general = read_corpus(args.general_text).passages if args.general_text else []
        if sum(len(p) for p in sentences) < 20:
            raise InputError(
                f"{args.data} has only {sum(len(p) for p in sentences)} characters; a cloze corpus needs at least a "
                "few sentences"
            )
        # Only when something uses them (the self-quiz, span masking, jieba's dictionary), and from the first
        # SPAN_LINES lines: counting every 1-7 character n-gram of a large corpus would cost gigabytes.
        wanted = not args.pairs and (
            not prompts
            or args.span_probability > 0
            or args.recombine_probability > 0
            or args.bag_probability > 0
            or args.whole_word_mask
        )
        spans = recurring_spans(corpus.passages[:SPAN_LINES]) if wanted else {}
        probes, held = [], []
        if spans and args.whole_word_mask:
            for span in spans:  # invented names stay whole words for jieba
                jieba.add_word(span)
        if spans and not prompts:
            # The self-quiz: recurring spans masked in lines kept out of training, which then serve as the
            # validation set, so its figure is recall of facts, not of lines.
            held, probes = self_quiz(corpus.passages, spans, seed=options.seed)
            keep = set(held)
            train_text = [p for i, p in enumerate(items) if i not in keep]
            valid_text = [items[i] for i in held]
            say(
                f"self-quiz: {len(probes)} recurring names and words of your text "
                f"({', '.join(p.answer for p in probes[:6])}"
                f"{' ...' if len(probes) > 6 else ''}); {len(held)} lines held out to test them"
            )
        else:
            train_text, valid_text = self.holdout(run, items)
        if held:
            valid_source = f"{len(held)} lines of {args.data} held out for the self-quiz"
        else:
            valid_source = f"{options.valid_ratio:.0%} of {args.data} (seed {options.seed})" if valid_text else None
        report = {
            "train": {
                "path": os.path.abspath(args.data),
                "format": corpus.format,
                "encoding": corpus.encoding,
                "rows": len(train_text),
                "skipped": corpus.bad.to_dict(),
            },
            "valid": {"path": valid_source, "rows": len(valid_text)},
        }
        carry = run.carry
        carry.prompts, carry.prompt_bad, carry.general = prompts, prompt_bad, general
        carry.spans, carry.probes, carry.held = spans, probes, held
        return Data(train_text, valid_text, len(items), sentences + general, report)

    def load_pretrained(self, name: str, **kw):
        kw = {**kw, "trust_remote_code": False}  # never a model's own code, not even on a "y" typed at a prompt
        tokenizer = AutoTokenizer.from_pretrained(name, **kw)
        if tokenizer.mask_token_id is None:
            raise InputError(f"the tokenizer of {name} has no [MASK] token; it is not a masked-LM")
        try:
            model = AutoModelForMaskedLM.from_pretrained(name, **kw)
        except ValueError as e:  # e.g. a GPT-2 folder: AutoModelForMaskedLM does not know it
            raise InputError(f"{name} is not a masked-LM model ({str(e).splitlines()[0][:120]})")
        return model, tokenizer

    def scratch_model(self, run: Run, tokenizer):
        args = run.args
        config_class, model_class = SCRATCH_ARCHITECTURES[args.scratch_architecture]
        config = getattr(transformers, config_class)(
            vocab_size=len(tokenizer),
            hidden_size=args.n_embd,
            num_hidden_layers=args.n_layer,
            num_attention_heads=args.n_head,
            intermediate_size=4 * args.n_embd,
            max_position_embeddings=args.max_len,
            pad_token_id=tokenizer.pad_token_id,
            hidden_dropout_prob=args.dropout,
            attention_probs_dropout_prob=args.dropout,
            **({"embedding_size": args.n_embd} if args.scratch_architecture == "roformer" else {}),
        )
        return getattr(transformers, model_class)(config)

    def default_lr(self, run: Run) -> float:
        if run.small:
            return 5e-4 if run.args.pairs else 1e-3
        return super().default_lr(run)

    def rule(self, run: Run) -> Rule:
        return PAIRS_RULE if run.args.pairs else FACTS_RULE if run.small else PRETRAINED_FACTS_RULE

    def encode(self, run: Run) -> TrainingSetup:
        args, options, tokenizer, data, carry = run.args, run.options, run.tokenizer, run.data, run.carry
        collator = ClozeCollator(tokenizer, args, options.seed, pad_to_multiple_of=8 if options.bf16 else None)
        max_len, overlap, wwm = run.max_len, args.overlap, args.whole_word_mask
        if args.pairs:
            # Both orders, as a symmetric pair task sees them; no random crops: a crop would cut the pair.
            train_ds = encode_pairs(tokenizer, data.train + [(b, a) for a, b in data.train], max_len, wwm)
            valid_ds = collator.mask_once(encode_pairs(tokenizer, data.valid, max_len, wwm))
        else:
            spans = carry.spans
            span_ids = (
                spans
                if args.span_probability > 0 or args.recombine_probability > 0 or args.bag_probability > 0
                else None
            )
            train_ds = TrainingViews(
                encode_passages(tokenizer, data.train, max_len, overlap, wwm, span_ids),
                options.seed,
                recombine=args.recombine_probability,
                unk_id=tokenizer.unk_token_id,
                bag=args.bag_probability,
            )
            valid_ds = collator.mask_once(encode_passages(tokenizer, data.valid, max_len, overlap, wwm))
        general = carry.general
        general_ds = collator.mask_once(encode_passages(tokenizer, general, max_len, overlap, False)) if general else []
        run.train_tokens = sum(len(x["input_ids"]) for x in getattr(train_ds, "examples", train_ds))
        unit = "pairs (both orders in training)" if args.pairs else "windows"
        say(
            f"base: {run.choice.name} | {len(train_ds)} train / {len(valid_ds)} valid {unit}, "
            f"{run.train_tokens} train tokens"
        )
        quiz_items = carry.prompts or probe_prompts(carry.probes, tokenizer)
        ask = quiz if carry.prompts else joint_quiz
        quizzer = None
        if quiz_items:
            patience = QUIZ_PATIENCE if not (options.epochs or options.max_steps) else None
            quizzer = QuizProgress(tokenizer, quiz_items, ask, patience=patience)
        carry.quiz_items, carry.ask, carry.quizzer, carry.general_ds = quiz_items, ask, quizzer, general_ds
        carry.before = ask(run.model, tokenizer, quiz_items) if quiz_items else []
        carry.windows = {"train": len(train_ds), "valid": len(valid_ds), "train_tokens": run.train_tokens}
        return TrainingSetup(
            train_ds,
            valid_ds or None,
            collator,
            compute_metrics=masked_accuracy,
            preprocess_logits=argmax_logits,
            callbacks=[quizzer] if quizzer else [],
            before_train=(lambda trainer: general_accuracy(trainer, general_ds)) if general_ds else None,
            # The point is to memorise the corpus: held-out loss rises as its facts are learned, so the
            # last weights are kept rather than the "best" held-out epoch.
            keep_best=False,
            trainer_class=MaskedLMTrainer,
        )

    def evaluate(self, run: Run, result, report: dict):
        carry, trainer = run.carry, result.trainer
        general_after = general_accuracy(trainer, carry.general_ds) if carry.general_ds else None
        # With LoRA the adapters sit inside the base model's layers: quiz it as it is, unmerged.
        quizzed = trainer.model.get_base_model() if run.lora.lora else trainer.model
        after = carry.ask(quizzed, run.tokenizer, carry.quiz_items) if carry.quiz_items else []
        report["windows"] = carry.windows
        self.report_quizzes(run, report, after, (result.before_train, general_after))
        best = result.best or {}
        summary = (
            f"last epoch {best['epoch']}: held-out masked accuracy {best['masked_accuracy']:.1%}; "
            if "masked_accuracy" in best
            else ""
        )
        if after and hit_rate(after) == 1.0 and result.convergence and "still falling" in result.convergence:
            result.convergence = None  # every quiz answer is right: "more training would help" would mislead
        report["convergence"] = result.convergence
        if carry.probes:
            report["metrics_line"] = summary = (
                f"recalls {report['self_quiz']['recalled']} of {len(carry.probes)} probed facts from your text "
                f"(before training {sum(r['hit'] for r in carry.before)}); "
            )
        self.note_ceiling(run, result, report)
        return self.card(run, best, after), summary, None

    def report_quizzes(self, run: Run, report: dict, after: list, general: tuple) -> None:
        """The report's "prompts" (--eval-prompts), "self_quiz" and "general" (--general-text), said as well."""
        args, carry = run.args, run.carry
        before, probes = carry.before, carry.probes
        if carry.prompts:
            print_quiz(before, after)
            report["prompts"] = {
                "path": os.path.abspath(args.eval_prompts),
                "skipped": carry.prompt_bad.to_dict(),
                "top1_accuracy_before": hit_rate(before),
                "top1_accuracy_after": hit_rate(after),
                "before": before,
                "after": after,
            }
        if probes:
            report["self_quiz"] = {
                "probes": len(probes),
                "held_out_lines": len(carry.held),
                "recall_before": hit_rate(before),
                "recall_after": hit_rate(after),
                "recalled": sum(r["hit"] for r in after),
                "curve": carry.quizzer.curve if carry.quizzer else [],
                "spans": dict(list(carry.spans.items())[:100]),
                "after": [{**r, "held_out": p.held_out} for r, p in zip(after, probes)],
                "facts": facts_learned(after),
            }
        if carry.general_ds:
            general_before, general_after = general
            say(f"general cloze accuracy: before {general_before:.1%}, after {general_after:.1%}")
            report["general"] = {
                "path": os.path.abspath(args.general_text),
                "masked_accuracy_before": general_before,
                "masked_accuracy_after": general_after,
            }

    def note_ceiling(self, run: Run, result, report: dict) -> None:
        """A run the default ceiling stopped (a busy or slow machine, not a failed run): what it knows and how to go
        on (the plan extends)."""
        ceiling = (result.schedule or {}).get("ceiling_s")
        if not (ceiling and result.time_capped):  # stopped at the ceiling, or re-planned down to end there
            return
        quizzer, probes = run.carry.quizzer, run.carry.probes
        curve = [c["recall"] for c in (quizzer.curve if quizzer else [])]
        improving = bool(curve) and curve[-1] >= max(curve) and (len(curve) < 2 or curve[-1] > curve[0])
        knows = f"it recalls {report['self_quiz']['recalled']} of {len(probes)} facts of your text" if probes else ""
        result.convergence = (
            f"note: the {ceiling / 60:g}-minute ceiling ended training at step {result.global_step:,} of "
            f"{result.schedule.get('wanted_steps') or result.global_step:,} (this machine was slower than "
            f"planned; busy?){'; ' + knows if knows else ''}{' and was still improving' if improving else ''}. "
            f"To train on: {resume_command(self.script, run.argv)}"
        )
        report["convergence"] = result.convergence

    def card(self, run: Run, best: dict, after: list) -> dict:
        metrics = {k: best[k] for k in ("valid_loss", "masked_accuracy") if k in best}
        if run.carry.prompts:
            metrics["prompt_top1_accuracy"] = hit_rate(after)
        return dict(
            title=f"Chinese cloze BERT ({os.path.basename(run.output.final)})",
            pipeline_tag="fill-mask",
            tags=["bert", "chinese", "fill-mask", "cloze"] + (["lora"] if run.lora.lora else []),
            metrics=metrics,
            summary_zh="完形填空模型：在你自己的文本上继续做掩码语言模型训练，让模型记住其中的事实。",
            summary_en="A masked-LM further trained on your own text, so it fills in the facts it states.",
            usage=f"""from transformers import pipeline
fill = pipeline("fill-mask", model="{run.output.final}")
print(fill("三国人物诸[MASK][MASK]"))""",
        )

    def after_publish(self, run: Run, result, report: dict) -> None:
        if "self_quiz" in report:
            say(facts_line(report["self_quiz"]["facts"]))
        super().after_publish(run, result, report)
