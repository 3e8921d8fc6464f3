"""Fine-tune GPT-2 (Chinese) on multi-turn dialogues and write a chat checkpoint folder.

    python training/chat.py --data data/samples/dialogs.txt --output checkpoints/chat

Sequences are `[CLS]u1[SEP]u2[SEP]...` (data.DialogueEncoder, also used by chat/); labels
are the input ids (padding -> -100) and the model shifts them. The base model is
`--model` (default uer/gpt2-chinese-cluecorpussmall, a Hub id or a local folder) or
`scratch`: a small GPT-2 with a character vocab built from the training data.
"""

from __future__ import annotations

if __package__ in (None, ""):
    # `python training/chat.py` puts training/ first on sys.path, where this file would
    # shadow the top-level `chat` package and the repo root is missing: use the root instead.
    import os as _os
    import sys as _sys

    _sys.path[0] = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))

import os
import sys
from dataclasses import dataclass, field

from data import DialogueEncoder, InputError, build_char_vocab, make_tokenizer, read_dialogues
from data.dialogue import DIALOGUE_FORMATS
from data.encoder import CHAT_SAMPLING, LOSS_ON
from training.args import LoraArguments, RunArguments, ScratchArguments, parse_args
from training.cli import run, say
from training.schedule import Rule

DEFAULT_MODEL = "uer/gpt2-chinese-cluecorpussmall"
LORA_TARGETS = ["c_attn", "c_proj"]


@dataclass
class ChatArguments(ScratchArguments):
    data: str = field(
        default=None, metadata={"help": "dialogue file: blank-line text, JSON Lines, LCCC JSON, TSV or chatterbot YAML"}
    )
    valid_data: str = field(
        default=None, metadata={"help": "validation dialogues (default: a seeded --valid-ratio split of --data)"}
    )
    format: str = field(default="auto", metadata={"help": "dialogue file format", "choices": list(DIALOGUE_FORMATS)})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "base GPT-2: a Hub id, a local folder, or 'scratch'"})
    loss_on: str = field(
        default="all",
        metadata={
            "help": "tokens that carry loss: all, replies (2nd speaker's turns), last (final turn)",
            "choices": list(LOSS_ON),
        },
    )
    max_len: int = field(
        default=256, metadata={"help": "longest sequence in tokens; longer dialogues drop their earliest turns"}
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.data:
            raise InputError("--data is required: a file of dialogues, e.g. --data data/samples/dialogs.txt")
        if self.max_len < 16:
            raise InputError(f"--max-len must be at least 16, got {self.max_len}")


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


def load_pretrained(name: str, **kw):
    from transformers import BertTokenizerFast, GPT2LMHeadModel

    from training.models import check_model_type

    check_model_type(name, ("gpt2",), "GPT-2 chat model", **kw)
    tokenizer = BertTokenizerFast.from_pretrained(name, **kw)
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise InputError(
            f"the tokenizer of {name} has no [CLS]/[SEP]; chat models here need a BERT-style Chinese vocab"
        )
    return GPT2LMHeadModel.from_pretrained(name, **kw), tokenizer


def build_scratch(args: ChatArguments, dialogues, tokenizer=None):
    from transformers import GPT2Config, GPT2LMHeadModel

    if tokenizer is None:
        tokenizer = make_tokenizer(build_char_vocab((u for d in dialogues for u in d), min_freq=args.min_freq))
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=args.max_len,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config), tokenizer


def chat_generation_config(tokenizer):
    """Sampling defaults that read well for short chit-chat; chat/ and the app start from these."""
    from transformers import GenerationConfig

    banned = [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.mask_token_id]
    return GenerationConfig(
        **CHAT_SAMPLING,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=[t for t in banned if t is not None],
        begin_suppress_tokens=[tokenizer.sep_token_id],  # a reply is never empty (issue #36)
    )


# Default amount of training (training/schedule.py). From scratch a model needs thousands of steps
# before replies stop being the commonest characters; 2,000 LCCC dialogues end in ~10 min on 2 cores.
SCRATCH_PATIENCE = 4  # evaluations without a better validation loss before a default scratch run stops
# 2,000 LCCC dialogues: 1,021 steps gave validation perplexity 207 and still falling; 3,000 steps is ~10 min here.
SCRATCH_RULE = Rule(min_steps=3000, min_passes=3, max_minutes=10, unit="dialogues")
PRETRAINED_RULE = Rule(min_steps=100, min_passes=2, max_minutes=30, unit="dialogues", max_passes=5)


def main(argv: list[str] | None = None, callbacks=()) -> int:
    args, lora, runa = parse_args(
        (ChatArguments, LoraArguments, RunArguments), argv, "python training/chat.py", __doc__.split("\n\n")[0]
    )
    from transformers import DataCollatorForSeq2Seq

    from training.models import SCRATCH, wrap_lora
    from training.runner import run_training
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

    train_file = _read(args.data, args.format, "train")
    valid_file = None
    if args.valid_data:
        valid_file = _read(args.valid_data, args.format, "valid")
        train, valid, valid_source = train_file.dialogues, valid_file.dialogues, args.valid_data
    elif train_file.other_splits.get("valid"):
        train, valid, valid_source = train_file.dialogues, train_file.other_splits["valid"], f"{args.data}#valid"
        say(f"valid: {len(valid)} dialogues from the file's 'valid' split")
    else:
        train, valid = split_holdout(train_file.dialogues, runa.valid_ratio, runa.seed)
        valid_source = f"{runa.valid_ratio:.0%} of {args.data} (seed {runa.seed})" if valid else None
    if not valid:
        say("note: no validation data; the last epoch is kept and --patience is ignored")

    plan, resume_from = open_output(runa, "chat", (args, lora))
    loaded, choice = pick_base(args.model, load_pretrained, runa, "GPT-2 chat model")
    if loaded is None:
        model, tokenizer = build_scratch(args, train, resumed_tokenizer(resume_from))
    else:
        model, tokenizer = loaded
        fit_max_len(args, model.config.n_positions, choice)
        tokenizer = extend_vocab(model, tokenizer, (u for d in train for u in d), choice, lora.lora, args.min_freq)
    scratch = choice.source == SCRATCH
    small = scratch_recipe(choice, model)
    default_lr(runa, small, lora.lora)
    if scratch and valid and not (runa.patience or runa.epochs or runa.max_steps):
        # 2,000 LCCC dialogues: validation perplexity was best at 7 of 24 passes (182), 396 at the end
        runa.patience = SCRATCH_PATIENCE

    encoder = DialogueEncoder(tokenizer, args.max_len)
    train_ds, train_stats = encode_all(encoder, train, args.loss_on)
    valid_ds, _ = encode_all(encoder, valid, args.loss_on)
    if not train_ds:
        raise InputError(f"no training sequence has a token to learn from with --loss-on {args.loss_on}")
    if train_stats["dialogues_shortened"] or train_stats["utterances_cut"]:
        say(
            f"note: {train_stats['dialogues_shortened']} dialogues lost early turns and "
            f"{train_stats['utterances_cut']} "
            f"utterances were cut to fit --max-len {args.max_len}"
        )
    train_tokens = sum(len(x["input_ids"]) for x in train_ds)
    say(f"base: {choice.name} | {len(train_ds)} train / {len(valid_ds)} valid sequences, {train_tokens} train tokens")

    if lora.lora:
        if scratch:
            say("warning: --lora on a scratch model trains small adapters over random weights; expect poor replies")
        model = wrap_lora(
            model, lora.lora_r, lora.lora_alpha, lora.lora_dropout, LORA_TARGETS, "CAUSAL_LM", fan_in_fan_out=True
        )
    total, trainable = model.num_parameters(), model.num_parameters(only_trainable=True)
    say(f"parameters: {total / 1e6:.2f} M, trainable {trainable / 1e6:.2f} M")

    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, pad_to_multiple_of=8 if runa.bf16 else None)
    result = run_training(
        model,
        tokenizer,
        train_ds,
        valid_ds or None,
        collator,
        runa,
        plan,
        resume_from,
        callbacks=callbacks,
        rule=SCRATCH_RULE if small else PRETRAINED_RULE,
        items=len(train),
    )
    code = stop_if_interrupted(result, plan, "training/chat.py", argv)
    if code is not None:
        return code
    samples = sample_replies(result.trainer.model, tokenizer)

    report = base_report(
        "chat", choice, result, plan, (args, lora, runa), model, tokenizer, train_tokens, total, trainable
    )
    report["data"] = {
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
    report["sequences"] = {"train": len(train_ds), "valid": len(valid_ds), "train_tokens": train_tokens, **train_stats}
    report["sample_replies"] = samples
    report["examples"] = opening_lines(valid or train)
    report["convergence"] = result.convergence
    config = model.config
    report["model"].update(
        n_layer=config.n_layer, n_embd=config.n_embd, n_head=config.n_head, n_positions=config.n_positions
    )
    best = result.best or {}
    card = dict(
        title=f"Chinese chit-chat GPT-2 ({os.path.basename(plan.final)})",
        pipeline_tag="text-generation",
        tags=["gpt2", "chinese", "chitchat", "dialogue"] + (["lora"] if lora.lora else []),
        metrics={k: best[k] for k in ("valid_loss", "valid_perplexity") if k in best},
        summary_zh="中文闲聊模型：输入格式为 `[CLS]第一句[SEP]第二句[SEP]...`，模型接着写出下一句，遇到 `[SEP]` 停止。",
        summary_en="A Chinese chit-chat model: the input is `[CLS]u1[SEP]u2[SEP]...` and the model writes the next "
        "turn, stopping at `[SEP]`.",
        usage=f"""from chat import ChatEngine  # this project; or plain transformers:
engine = ChatEngine.from_pretrained("{plan.final}")
print(engine.reply([], "你好"))

from transformers import pipeline  # the chat template in the tokenizer files builds the same prompt
generate = pipeline("text-generation", model="{plan.final}")
print(generate([{{"role": "user", "content": "你好"}}], do_sample=False)[0]["generated_text"][-1]["content"])""",
    )
    summary = (
        f"best epoch {best['epoch']}: valid loss {best['valid_loss']:.4f}, perplexity {best['valid_perplexity']:.2f}; "
        if best
        else ""
    )
    from chat.settings import MAX_HISTORY, MAX_MESSAGE_CHARS
    from data.chat_template import make_chat_ready

    make_chat_ready(tokenizer, MAX_HISTORY, MAX_MESSAGE_CHARS)  # apply_chat_template, pipelines, servers (issue #36)
    publish(plan, result, tokenizer, report, card, summary, chat_generation_config(tokenizer))
    if result.convergence:
        say(result.convergence)
    return 0


OPENERS = ("你好", "你平时喜欢做什么？", "周末有什么打算？")  # the same three for every run, so runs compare


def opening_lines(dialogues, limit: int = 5) -> list[list[str]]:
    """The first lines of a few short dialogues of the run's own data: the app's Try examples for it."""
    seen: dict = {}
    for d in dialogues:
        if d and len(d[0]) <= 30:
            seen.setdefault(d[0], None)
        if len(seen) == limit:
            break
    return [[line] for line in seen]


def sample_replies(model, tokenizer) -> list[dict]:
    """Greedy replies to three fixed openers, printed and kept in the report: quality at a glance."""
    from chat.engine import ChatEngine

    model.eval()
    engine = ChatEngine(model, tokenizer, chat_generation_config(tokenizer))
    rows = []
    for opener in OPENERS:
        reply = engine.reply([], opener, temperature=0, max_new_tokens=32)
        rows.append({"message": opener, "reply": reply})
        say(f"  {opener} -> {reply or '(empty)'}")
    return rows


if __name__ == "__main__":
    sys.exit(run(main))
