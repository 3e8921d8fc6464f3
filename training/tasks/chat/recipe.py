"""GPT-2 (Chinese) on multi-turn dialogues: the chat task's training recipe (training/chat.py runs it).

Sequences are `[CLS]u1[SEP]u2[SEP]...` (data.DialogueEncoder, also used by chat/); labels are the input
ids (padding -> -100) and the model shifts them. The base model is `--model` (default
uer/gpt2-chinese-cluecorpussmall, a Hub id or a local folder) or `scratch`: a small GPT-2 with a
character vocab built from the training data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from transformers import BertTokenizerFast, DataCollatorForSeq2Seq, GenerationConfig, GPT2Config, GPT2LMHeadModel

from chat.engine import ChatEngine
from chat.settings import MAX_HISTORY, MAX_MESSAGE_CHARS
from data import DialogueEncoder, InputError, read_dialogues
from data.chat_template import make_chat_ready
from data.encoder import CHAT_SAMPLING
from training.cli import say
from training.models import check_model_type
from training.pipeline import Data, Recipe, Run
from training.runner import TrainingSetup
from training.schedule import Rule
from training.tasks.chat import TRAINING


def _read(path: str, fmt: str, what: str):
    f = read_dialogues(path, fmt)
    note = f", read as {f.encoding.upper()}" if f.encoding != "utf-8" else ""
    say(f"{what}: {len(f.dialogues)} dialogues from {path} ({f.format}{note})")
    if f.bad.count:
        say(f.bad.summary("dialogues"))
    return f


def encode_all(encoder: DialogueEncoder, dialogues: list[list[str]], loss_on: str):
    """Encode every dialogue; one batched tokenizer call for all utterances (fast tokenizer)."""
    flat = encoder.tokenize([u for d in dialogues for u in d])
    out, pos, dropped, cut = [], 0, 0, 0
    for d in dialogues:
        enc = encoder.encode_ids(flat[pos : pos + len(d)], loss_on)
        pos += len(d)
        dropped += enc.dropped_turns > 0
        cut += enc.cut_turns
        if any(label != -100 for label in enc.labels):
            out.append({"input_ids": enc.input_ids, "labels": enc.labels})
    return out, {"dialogues_shortened": dropped, "utterances_cut": cut}


def chat_generation_config(tokenizer) -> GenerationConfig:
    """Sampling defaults that read well for short chit-chat; chat/ and the app start from these."""
    banned = [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.mask_token_id]
    return GenerationConfig(
        **CHAT_SAMPLING,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=[t for t in banned if t is not None],
        begin_suppress_tokens=[tokenizer.sep_token_id],  # a reply is never empty (issue #36)
    )


OPENERS = ("你好", "你平时喜欢做什么？", "周末有什么打算？")  # the same three for every run, so runs compare


def sample_replies(model, tokenizer) -> list[dict]:
    """Greedy replies to three fixed openers, printed and kept in the report: quality at a glance."""
    model.eval()
    engine = ChatEngine(model, tokenizer, chat_generation_config(tokenizer))
    rows = []
    for opener in OPENERS:
        reply = engine.reply([], opener, temperature=0, max_new_tokens=32)
        rows.append({"message": opener, "reply": reply})
        say(f"  {opener} -> {reply or '(empty)'}")
    return rows


def opening_lines(dialogues, limit: int = 5) -> list[list[str]]:
    """The first lines of a few short dialogues of the run's own data: the app's Try examples for it."""
    seen: dict = {}
    for d in dialogues:
        if d and len(d[0]) <= 30:
            seen.setdefault(d[0], None)
        if len(seen) == limit:
            break
    return [[line] for line in seen]


@dataclass
class ChatCarry:
    sequences: dict = field(default_factory=dict)  # the report's "sequences": counts after encoding


class ChatRecipe(Recipe):
    training = TRAINING
    carry = ChatCarry
    what = "GPT-2 chat model"
    lora_targets = ("c_attn", "c_proj")
    lora_task_type = "CAUSAL_LM"
    lora_fan_in_fan_out = True  # GPT-2's Conv1D layers
    # From scratch a model needs thousands of steps before replies stop being the commonest characters.
    # 2,000 LCCC dialogues: 1,021 steps gave validation perplexity 207 and still falling; 3,000 steps is
    # ~10 min on 2 cores.
    scratch_rule = Rule(min_steps=3000, min_passes=3, max_minutes=10, unit="dialogues")
    pretrained_rule = Rule(min_steps=100, min_passes=2, max_minutes=30, unit="dialogues", max_passes=5)
    report_model_fields = ("n_layer", "n_embd", "n_head", "n_positions")
    # evaluations without a better validation loss before a default scratch run stops: on 2,000 LCCC
    # dialogues validation perplexity was best at 7 of 24 passes (182), 396 at the end
    scratch_patience = 4

    def read(self, run: Run) -> Data:
        args, options = run.args, run.options
        train_file = _read(args.data, args.format, "train")
        valid_file = None
        if args.valid_data:
            valid_file = _read(args.valid_data, args.format, "valid")
            train, valid, valid_source = train_file.dialogues, valid_file.dialogues, args.valid_data
        elif train_file.other_splits.get("valid"):
            train, valid, valid_source = train_file.dialogues, train_file.other_splits["valid"], f"{args.data}#valid"
            say(f"valid: {len(valid)} dialogues from the file's 'valid' split")
        else:
            train, valid = self.holdout(run, train_file.dialogues)
            valid_source = f"{options.valid_ratio:.0%} of {args.data} (seed {options.seed})" if valid else None
        if not valid:
            say("note: no validation data; the last epoch is kept and --patience is ignored")
        report = {
            "train": {
                "path": os.path.abspath(args.data),
                "format": train_file.format,
                "encoding": train_file.encoding,
                "rows": len(train),
                "skipped": train_file.bad.to_dict(),
            },
            "valid": {
                "path": valid_source,
                "rows": len(valid),
                **({"skipped": valid_file.bad.to_dict()} if valid_file else {}),
            },
        }
        return Data(train, valid, len(train), [u for d in train for u in d], report)

    def load_pretrained(self, name: str, **kw):
        check_model_type(name, ("gpt2",), "GPT-2 chat model", **kw)
        tokenizer = BertTokenizerFast.from_pretrained(name, **kw)
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise InputError(
                f"the tokenizer of {name} has no [CLS]/[SEP]; chat models here need a BERT-style Chinese vocab"
            )
        return GPT2LMHeadModel.from_pretrained(name, **kw), tokenizer

    def scratch_model(self, run: Run, tokenizer):
        args = run.args
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=args.max_len,
            n_embd=args.n_embd,
            n_layer=args.n_layer,
            n_head=args.n_head,
            activation_function="gelu_pytorch_tanh",  # gelu_new's function as one kernel (write's recipe: why)
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        return GPT2LMHeadModel(config)

    def positions(self, model) -> int:
        return model.config.n_positions

    def default_patience(self, run: Run) -> int:
        options = run.options
        if run.scratch and run.data.valid and not (options.patience or options.epochs or options.max_steps):
            return self.scratch_patience
        return options.patience

    def encode(self, run: Run) -> TrainingSetup:
        encoder = DialogueEncoder(run.tokenizer, run.max_len)
        loss_on = run.args.loss_on
        train_ds, stats = encode_all(encoder, run.data.train, loss_on)
        valid_ds, _ = encode_all(encoder, run.data.valid, loss_on)
        if not train_ds:
            raise InputError(f"no training sequence has a token to learn from with --loss-on {loss_on}")
        if stats["dialogues_shortened"] or stats["utterances_cut"]:
            say(
                f"note: {stats['dialogues_shortened']} dialogues lost early turns and {stats['utterances_cut']} "
                f"utterances were cut to fit --max-len {run.max_len}"
            )
        run.train_tokens = sum(len(x["input_ids"]) for x in train_ds)
        run.carry.sequences = {"train": len(train_ds), "valid": len(valid_ds), "train_tokens": run.train_tokens}
        run.carry.sequences.update(stats)
        say(
            f"base: {run.choice.name} | {len(train_ds)} train / {len(valid_ds)} valid sequences, "
            f"{run.train_tokens} train tokens"
        )
        pad = 8 if run.options.bf16 else None
        collator = DataCollatorForSeq2Seq(run.tokenizer, label_pad_token_id=-100, pad_to_multiple_of=pad)
        return TrainingSetup(train_ds, valid_ds or None, collator)

    def evaluate(self, run: Run, result, report: dict):
        tokenizer, final = run.tokenizer, run.output.final
        report["sequences"] = run.carry.sequences
        report["sample_replies"] = sample_replies(result.trainer.model, tokenizer)
        report["examples"] = opening_lines(run.data.valid or run.data.train)
        report["convergence"] = result.convergence
        best = result.best or {}
        card = dict(
            title=f"Chinese chit-chat GPT-2 ({os.path.basename(final)})",
            pipeline_tag="text-generation",
            tags=["gpt2", "chinese", "chitchat", "dialogue"] + (["lora"] if run.lora.lora else []),
            metrics={k: best[k] for k in ("valid_loss", "valid_perplexity") if k in best},
            summary_zh="中文闲聊模型：输入格式为 `[CLS]第一句[SEP]第二句[SEP]...`，"
            "模型接着写出下一句，遇到 `[SEP]` 停止。",
            summary_en="A Chinese chit-chat model: the input is `[CLS]u1[SEP]u2[SEP]...` and the model writes the next "
            "turn, stopping at `[SEP]`.",
            usage=f"""from chat import ChatEngine  # this project; or plain transformers:
engine = ChatEngine.from_pretrained("{final}")
print(engine.reply([], "你好"))

from transformers import pipeline  # the chat template in the tokenizer files builds the same prompt
generate = pipeline("text-generation", model="{final}")
print(generate([{{"role": "user", "content": "你好"}}], do_sample=False)[0]["generated_text"][-1]["content"])""",
        )
        summary = (
            f"best epoch {best['epoch']}: valid loss {best['valid_loss']:.4f}, "
            f"perplexity {best['valid_perplexity']:.2f}; "
            if best
            else ""
        )
        make_chat_ready(tokenizer, MAX_HISTORY, MAX_MESSAGE_CHARS)  # apply_chat_template, pipelines (issue #36)
        return card, summary, chat_generation_config(tokenizer)
