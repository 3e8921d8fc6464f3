"""GPT-2 (Chinese) on the user's own prose: the write task's training recipe (training/write.py runs it).

The text (paragraphs joined by the paragraph token, data/prose.py) is tokenized as one stream and cut into blocks
of --max-len tokens (overlapping by half for training, side by side for the held-out part); labels are the input
ids, which the model shifts. The last --valid-ratio of the text (or --dev) is held out, and the report sets the
model's perplexity there beside an interpolated Kneser-Ney n-gram model's over the same tokens.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tokenizers import AddedToken
from transformers import (
    DataCollatorForLanguageModeling,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    TrainerCallback,
)

from data import InputError
from data.chat_template import make_decoder_chinese
from data.prose import PARAGRAPH, ProseFile, read_prose
from training.cli import say
from training.pipeline import Data, Run
from training.runner import TrainingSetup
from training.sampling import GroupedTrainer
from training.schedule import Rule
from training.tasks.chat.recipe import ChatRecipe
from training.tasks.write import TRAINING
from training.tasks.write.ngram import SoftTargets, best_ngram

# Sampling that read well on the project's own stories and essays (bench/prose/write, bench/write.py): lower
# temperatures looped on the commonest phrases of a small text, higher ones drifted off its vocabulary
WRITE_SAMPLING = dict(
    do_sample=True, temperature=0.8, top_k=40, top_p=0.92, repetition_penalty=1.15, no_repeat_ngram_size=4
)
MAX_NEW_TOKENS = 120
MIN_HELD_CHARS = 200  # a held-out part shorter than this measures nothing
# Building the n-gram teacher's ten models took 55 s and 580 MB for 358,000 tokens (2 cores, AVX2 EPYC)
TEACHER_MAX_TOKENS = 1_000_000


def write_generation_config(tokenizer) -> GenerationConfig:
    """The checkpoint's generation defaults: sampling that reads well, never a special token ([SEP] included: a
    writer does not stop by itself, max_new_tokens ends it)."""
    banned = [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.mask_token_id]
    banned.append(tokenizer.sep_token_id)
    return GenerationConfig(
        **WRITE_SAMPLING,
        max_new_tokens=MAX_NEW_TOKENS,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=[t for t in banned if t is not None],
    )


def add_paragraph_token(tokenizer, model=None) -> int:
    """The paragraph break as a token of its own (matched before BERT's normalizer, which would drop a newline);
    the model gets an embedding row for it. Returns its id."""
    if PARAGRAPH not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(PARAGRAPH, normalized=False, single_word=False)])
        if model is not None:
            model.resize_token_embeddings(len(tokenizer))
    return tokenizer.convert_tokens_to_ids(PARAGRAPH)


def split_tail(prose: ProseFile, ratio: float) -> tuple[str, str]:
    """(training text, held-out text): the last `ratio` of the paragraphs' characters, at a paragraph boundary."""
    if ratio <= 0:
        return prose.text, ""
    want = max(MIN_HELD_CHARS, prose.chars * ratio)
    held, size = [], 0
    for p in reversed(prose.paragraphs[1:]):
        if size >= want:
            break
        held.insert(0, p)
        size += len(p)
    kept = prose.paragraphs[: len(prose.paragraphs) - len(held)]
    return PARAGRAPH.join(kept), PARAGRAPH.join(held)


def block_starts(n: int, size: int, stride: int) -> list[int]:
    """Where the blocks of `size` tokens every `stride` start in a text of n tokens; a tail of at least 16 tokens
    is a block of its own (the last `size` tokens)."""
    starts = list(range(0, max(n - size, 0) + 1, stride))
    if n - ((len(starts) - 1) * stride + size) >= 16:
        starts.append(n - size)
    return starts


def blocks(ids: list[int], size: int, stride: int) -> list[list[int]]:
    """Blocks of `size` tokens every `stride` (block_starts); blocks of fewer than 2 tokens are left out."""
    return [b for b in (ids[s : s + size] for s in block_starts(len(ids), size, stride)) if len(b) >= 2]


class WithTextPositions:
    """The causal-LM collator, and where each of the batch's tokens stands in the training text
    (`text_positions`), which ScratchWriterTrainer looks the n-gram teacher's distributions up by."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, features: list[dict]) -> dict:
        batch = self.collator([{"input_ids": f["input_ids"]} for f in features])
        if any("start" not in f for f in features):  # held-out blocks: measured on the next token alone
            return batch
        starts = torch.tensor([f["start"] for f in features])
        batch["text_positions"] = starts[:, None] + torch.arange(batch["input_ids"].shape[1])[None, :]
        return batch


class AverageWeights(TrainerCallback):
    """Keeps an exponential moving average of the weights after every optimizer step (ScratchWriterTrainer)."""

    def __init__(self, trainer: ScratchWriterTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.update_average(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer.end_average(loaded_best=state.best_model_checkpoint is not None and args.load_best_model_at_end)


class ScratchWriterTrainer(GroupedTrainer):
    """The Trainer of a writer trained from scratch: an n-gram teacher in the loss, and the weights averaged.

    The loss is, per token, (1 - share) x the cross-entropy of the next token plus share x the cross-entropy
    against a Kneser-Ney model's distribution of it (SoftTargets, counted on the other folds of the text).
    Evaluation is the plain next-token loss, so held-out perplexity means what it always does.

    The weights evaluated and saved are an exponential moving average of the trained ones (decay `decay`, less
    over the first steps: 1 - 2 / (t + 2), about the last half of the steps so far); the optimizer goes on with
    its own. A checkpoint holds the average, so the best checkpoint the Trainer loads at the end is the best
    average; a resumed run trains on from the average (with the optimizer state it saved).

    Written by hand: transformers has neither a loss against a distribution per token nor weight averaging. Why
    both: from scratch on a book, a GPT-2 learns it by heart before it learns which characters follow which as
    well as counting does. On 《故事新编》 measured on 《朝花夕拾》, default run (docs/benchmarks.md): held-out
    perplexity 305.5 without either, 262.0 with the teacher, 254.4 with the average too; Kneser-Ney: 256.5.
    """

    teacher: SoftTargets | None = None
    share: float = 0.0
    decay: float = 0.0

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.average: list[torch.Tensor] | None = None
        if self.decay:
            self.add_callback(AverageWeights(self))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        positions = inputs.pop("text_positions", None)
        if positions is None or self.teacher is None or not model.training or return_outputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        logits = model(**inputs).logits[:, :-1]
        target = labels[:, 1:]
        keep = target != -100
        logq = F.log_softmax(logits[keep].float(), dim=-1)
        hard = F.nll_loss(logq, target[keep], reduction="sum")
        soft = self.teacher(positions[:, :-1][keep].cpu()).to(logq.device)
        soft = -(soft * logq).sum()
        count = num_items_in_batch if num_items_in_batch is not None else keep.sum()
        return ((1 - self.share) * hard + self.share * soft) / max(count, 1)

    def _weights(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @torch.no_grad()
    def update_average(self, step: int) -> None:
        if self.average is None:
            self.average = [p.detach().clone() for p in self._weights()]
            return
        decay = min(self.decay, 1 - 2 / (step + 2))  # early on, about the last half of the steps so far
        torch._foreach_lerp_(self.average, self._weights(), 1 - decay)

    @torch.no_grad()
    def _swap(self) -> None:
        for p, a in zip(self._weights(), self.average):
            kept = p.detach().clone()
            p.copy_(a)
            a.copy_(kept)

    @contextmanager
    def averaged(self):
        """The averaged weights in the model for the block (the trained ones back after it)."""
        if self.average is None:
            yield
            return
        self._swap()
        try:
            yield
        finally:
            self._swap()

    def evaluate(self, *args, **kw):
        with self.averaged():
            return super().evaluate(*args, **kw)

    def save_model(self, *args, **kw):
        with self.averaged():
            return super().save_model(*args, **kw)

    @torch.no_grad()
    def end_average(self, loaded_best: bool) -> None:
        """At the end of training the model keeps the best average the Trainer loaded, else the last average."""
        if self.average is not None and not loaded_best:
            for p, a in zip(self._weights(), self.average):
                p.copy_(a)
        self.average = None


def scratch_writer_trainer(teacher: SoftTargets | None, share: float, decay: float) -> type:
    """ScratchWriterTrainer bound to this run's teacher and average (the runner builds the Trainer from a class)."""
    return type("ScratchWriterTrainer", (ScratchWriterTrainer,), {"teacher": teacher, "share": share, "decay": decay})


@dataclass
class WriteCarry:
    """What the write recipe keeps between its steps."""

    prose: ProseFile | None = None
    held: str = ""  # the held-out text
    train_ids: list[int] = field(default_factory=list)
    dev_blocks: list[list[int]] = field(default_factory=list)
    closing: str | None = None
    weak: bool = False


class WriteRecipe(ChatRecipe):
    cuts_at_max_len = False  # long text is cut into windows, nothing is lost
    training = TRAINING
    carry = WriteCarry
    what = "GPT-2 writer"
    # From scratch a writer needs thousands of steps; it overfits a short text long before: patience keeps the
    # best held-out perplexity. A pretrained base needs a few passes.
    scratch_rule = Rule(min_steps=2000, min_passes=3, max_minutes=15, unit="characters")
    pretrained_rule = Rule(min_steps=100, min_passes=2, max_minutes=30, unit="characters", max_passes=5)
    scratch_patience = 3

    def read(self, run: Run) -> Data:
        args, options, carry = run.args, run.options, run.carry
        prose = read_prose(args.data)
        note = f", read as {prose.encoding.upper()}" if prose.encoding != "utf-8" else ""
        say(f"text: {args.data} ({prose.format}{note})")
        for line in prose.describe():
            say(line)
        if prose.bad.count:
            say(prose.bad.summary("files"))
        if args.dev:
            train, held, source = prose.text, read_prose(args.dev).text, os.path.abspath(args.dev)
        else:
            train, held = split_tail(prose, options.valid_ratio)
            source = f"the last {len(held):,} characters of {args.data}" if held else None
        if not held:
            say("note: no held-out text; the last epoch is kept and nothing measures the model")
        carry.prose, carry.held = prose, held
        report = {
            "train": {
                "path": os.path.abspath(args.data),
                "format": prose.format,
                "encoding": prose.encoding,
                "characters": len(train),
                "paragraphs": len(prose.paragraphs),
                "headings": prose.headings,
                "joined_lines": prose.joined_lines,
                "skipped": prose.bad.to_dict(),
            },
            "valid": {"path": source, "characters": len(held)},
        }
        return Data([train], [held] if held else [], len(train), [train, held], report)

    def scratch_tokenizer(self, run: Run):
        tokenizer = super().scratch_tokenizer(run)
        add_paragraph_token(tokenizer)
        return tokenizer

    def use_base(self, run: Run, model, tokenizer) -> None:
        super().use_base(run, model, tokenizer)
        add_paragraph_token(run.tokenizer, run.model)

    def scratch_model(self, run: Run, tokenizer):
        args, p = run.args, run.args.dropout
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=args.max_len,
            n_embd=args.n_embd,
            n_layer=args.n_layer,
            n_head=args.n_head,
            resid_pdrop=p,
            embd_pdrop=p,
            # No dropout on the attention weights: with it torch's CPU attention leaves its fused kernel for the
            # plain one (4x256, 16x256 tokens, 2 cores: 1.35 -> 1.1 s a step), and a time-capped run gets more steps.
            attn_pdrop=0.0,
            # GPT-2's own tanh GELU as one kernel (gelu_new is five element-wise ops in Python): the same function
            activation_function="gelu_pytorch_tanh",
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        return GPT2LMHeadModel(config)

    def default_patience(self, run: Run) -> int:
        if run.scratch and run.data.valid and not run.options.patience:
            return self.scratch_patience
        return run.options.patience

    def encode(self, run: Run) -> TrainingSetup:
        carry, tokenizer, size = run.carry, run.tokenizer, run.max_len
        carry.train_ids = tokenizer(run.data.train[0], add_special_tokens=False)["input_ids"]
        held_ids = tokenizer(carry.held, add_special_tokens=False)["input_ids"] if carry.held else []
        if len(carry.train_ids) < 16:
            raise InputError(f"{run.args.data} holds too little text to train on ({len(carry.train_ids)} tokens)")
        # overlapping by half: a small text gives more to learn
        starts = block_starts(len(carry.train_ids), size, max(1, size // 2))
        train = [(s, carry.train_ids[s : s + size]) for s in starts if len(carry.train_ids[s : s + size]) >= 2]
        carry.dev_blocks = blocks(held_ids, size, size)
        unk = tokenizer.unk_token_id
        unknown = sum(t == unk for t in carry.train_ids) / len(carry.train_ids)
        if unknown > 0.01:
            say(f"warning: {unknown:.1%} of the text's tokens are [UNK] (characters the base does not know)")
        run.train_tokens = sum(len(b) for _, b in train)
        say(
            f"base: {run.choice.name} | {len(carry.train_ids):,} tokens -> {len(train):,} train blocks of {size} "
            f"(overlapping by half) / {len(carry.dev_blocks):,} held-out blocks"
        )
        dev = [{"input_ids": b} for b in carry.dev_blocks]
        collator = DataCollatorForLanguageModeling(
            tokenizer, mlm=False, pad_to_multiple_of=8 if run.options.bf16 else None
        )
        share = run.args.ngram_teacher if run.scratch else 0.0
        decay = run.args.average_weights if run.scratch else 0.0
        teacher, n = None, len(carry.train_ids)
        if share and n > TEACHER_MAX_TOKENS:
            say(
                f"n-gram teacher: off for a text of {n:,} tokens (counting more than {TEACHER_MAX_TOKENS:,} would take "
                "minutes and gigabytes before the first step)"
            )
            share = 0.0
        if share:
            began = time.monotonic()
            # ten folds while counting is cheap (15 s for 78,000 tokens), five above: each teacher sees 80% then
            teacher = SoftTargets(carry.train_ids, len(tokenizer), folds=10 if n <= 200_000 else 5)
            say(
                f"n-gram teacher: {share:.0%} of the loss is a Kneser-Ney model's next-token distribution, counted "
                f"on the other {teacher.folds - 1} of {teacher.folds} parts of the text "
                f"({time.monotonic() - began:.0f} s; --ngram-teacher 0 turns it off)"
            )
        if decay:
            say(f"the weights evaluated and saved: a moving average (decay {decay}; --average-weights 0 turns it off)")
        trainer = scratch_writer_trainer(teacher, share, decay) if share or decay else GroupedTrainer
        if teacher is None:  # no teacher: no text positions to look its distributions up by
            return TrainingSetup([{"input_ids": b} for _, b in train], dev or None, collator, trainer_class=trainer)
        rows = [{"input_ids": b, "start": s} for s, b in train]
        return TrainingSetup(rows, dev or None, WithTextPositions(collator), trainer_class=trainer)

    def evaluate(self, run: Run, result, report: dict):
        carry, tokenizer, final = run.carry, run.tokenizer, run.output.final
        make_decoder_chinese(tokenizer)  # pipelines and decode() write Chinese without spaces, a line break per ¶
        config = write_generation_config(tokenizer)
        best = result.best or {}
        report["convergence"] = result.convergence
        if carry.dev_blocks and "valid_loss" in best:
            self.measure(run, best, report)
        report["samples"] = self.samples(run, result, config)
        report["examples"] = [[s["opening"]] for s in report["samples"]]
        card = dict(
            title=f"Chinese writer GPT-2 ({os.path.basename(final)})",
            pipeline_tag="text-generation",
            tags=["gpt2", "chinese", "text-generation"] + (["lora"] if run.lora.lora else []),
            metrics={k: report[k] for k in ("held_out_perplexity", "ngram_perplexity") if report.get(k) is not None},
            summary_zh="续写模型：在你自己的文字上训练的 GPT-2，接着一个开头往下写（段落之间换行）。",
            summary_en="A GPT-2 trained on your own prose: it continues an opening in its style (a line break "
            "between paragraphs).",
            samples=report["samples"],
            usage=f"""from transformers import pipeline
write = pipeline("text-generation", model="{final}")
print(write("那天早上，", max_new_tokens=80)[0]["generated_text"])""",
        )
        summary = (
            f"held-out perplexity {report['held_out_perplexity']:.1f}; " if "held_out_perplexity" in report else ""
        )
        return card, summary, config

    def measure(self, run: Run, best: dict, report: dict) -> None:
        """Held-out perplexity beside the best Kneser-Ney n-gram's over the same tokens (orders 3 and 5)."""
        carry = run.carry
        ppl = math.exp(best["valid_loss"])
        ngram = best_ngram(carry.train_ids, carry.dev_blocks, len(run.tokenizer))
        gain = 100 * (ngram["best"] - ppl) / ngram["best"]
        if gain > 0:
            line = (
                f"held-out perplexity {ppl:.1f}: better than counting n-grams (Kneser-Ney, order "
                f"{ngram['best_order']}: {ngram['best']:.1f}) by {gain:.0f}%"
            )
        else:
            line = (
                f"warning: held-out perplexity {ppl:.1f} is not yet better than counting n-grams (Kneser-Ney, order "
                f"{ngram['best_order']}: {ngram['best']:.1f}): more text, more time or a pretrained base "
                "(--model uer/gpt2-chinese-cluecorpussmall) would help"
            )
        carry.closing, carry.weak = line, gain <= 0
        report.update(
            held_out_perplexity=round(ppl, 2),
            ngram_perplexity=ngram["best"],
            ngram=ngram,
            better_than_ngram_percent=round(gain, 1),
            warning=line if gain <= 0 else None,
            metrics_line=line,
        )

    def samples(self, run: Run, result, config, count: int = 3) -> list[dict]:
        """Three continuations of openings of the held-out text (else of the training text), seeded."""
        from chat.writer import WriterEngine

        model = result.trainer.model
        model.eval()
        engine = WriterEngine(model, run.tokenizer, config)
        source = [p for p in (run.carry.held or run.data.train[0]).split(PARAGRAPH) if len(p) >= 12]
        picks = source[:: max(1, len(source) // count)][:count]
        rows = []
        for i, paragraph in enumerate(picks):
            opening = paragraph[: min(24, len(paragraph) // 2)]
            text = engine.reply([], opening, seed=i, max_new_tokens=80)
            rows.append({"opening": opening, "continuation": text})
            say(f"  {opening} -> {text[:60].replace(PARAGRAPH, ' / ')}…")
        return rows

    def after_publish(self, run: Run, result, report: dict) -> None:
        if result.convergence and not run.carry.weak:
            say(result.convergence)
        if run.carry.closing:
            say(run.carry.closing)
