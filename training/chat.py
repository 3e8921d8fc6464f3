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
import random
import sys
from dataclasses import asdict, dataclass, field

from data import BadRows, DialogueEncoder, InputError, build_char_vocab, make_tokenizer, read_dialogues
from data.dialogue import DIALOGUE_FORMATS
from data.encoder import LOSS_ON
from training.args import LoraArguments, RunArguments, parse_args
from training.cli import EXIT_INTERRUPTED, run, say

DEFAULT_MODEL = "uer/gpt2-chinese-cluecorpussmall"
LORA_TARGETS = ["c_attn", "c_proj"]


@dataclass
class ChatArguments:
    data: str = field(default=None, metadata={"help": "dialogue file: blank-line text, JSON Lines, LCCC JSON, TSV or chatterbot YAML"})
    valid_data: str = field(default=None, metadata={"help": "validation dialogues (default: a seeded --valid-ratio split of --data)"})
    format: str = field(default="auto", metadata={"help": "dialogue file format", "choices": list(DIALOGUE_FORMATS)})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "base GPT-2: a Hub id, a local folder, or 'scratch'"})
    loss_on: str = field(default="all", metadata={"help": "tokens that carry loss: all, replies (2nd speaker's turns), last (final turn)", "choices": list(LOSS_ON)})
    max_len: int = field(default=256, metadata={"help": "longest sequence in tokens; longer dialogues drop their earliest turns"})
    min_freq: int = field(default=1, metadata={"help": "scratch: keep characters seen at least this often"})
    n_layer: int = field(default=4, metadata={"help": "scratch: transformer layers"})
    n_embd: int = field(default=256, metadata={"help": "scratch: hidden size"})
    n_head: int = field(default=4, metadata={"help": "scratch: attention heads"})

    def __post_init__(self):
        if not self.data:
            raise InputError("--data is required: a file of dialogues, e.g. --data data/samples/dialogs.txt")
        if self.max_len < 16:
            raise InputError(f"--max-len must be at least 16, got {self.max_len}")
        if self.min_freq < 1:
            raise InputError(f"--min-freq must be at least 1, got {self.min_freq}")
        if min(self.n_layer, self.n_embd, self.n_head) < 1 or self.n_embd % self.n_head:
            raise InputError(f"--n-embd ({self.n_embd}) must be a positive multiple of --n-head ({self.n_head}), with --n-layer >= 1")


def _read(path: str, fmt: str, what: str):
    f = read_dialogues(path, fmt)
    note = f", read as {f.encoding.upper()}" if f.encoding != "utf-8" else ""
    say(f"{what}: {len(f.dialogues)} dialogues from {path} ({f.format}{note})")
    if f.bad.count:
        say(f.bad.summary("dialogues"))
    return f


def split_dialogues(dialogues: list, ratio: float, seed: int):
    """Seeded train/valid split; at least one validation dialogue when ratio > 0 and there are 2+."""
    if ratio <= 0 or len(dialogues) < 2:
        return dialogues, []
    order = list(range(len(dialogues)))
    random.Random(seed).shuffle(order)
    n_valid = min(len(dialogues) - 1, max(1, round(len(dialogues) * ratio)))
    valid_idx = set(order[:n_valid])
    return [d for i, d in enumerate(dialogues) if i not in valid_idx], [dialogues[i] for i in sorted(valid_idx)]


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
        raise InputError(f"the tokenizer of {name} has no [CLS]/[SEP]; chat models here need a BERT-style Chinese vocab")
    return GPT2LMHeadModel.from_pretrained(name, **kw), tokenizer


def build_scratch(args: ChatArguments, dialogues, tokenizer=None):
    from transformers import GPT2Config, GPT2LMHeadModel

    if tokenizer is None:
        tokenizer = make_tokenizer(build_char_vocab((u for d in dialogues for u in d), min_freq=args.min_freq))
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=args.max_len, n_embd=args.n_embd, n_layer=args.n_layer,
                        n_head=args.n_head, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config), tokenizer


def chat_generation_config(tokenizer):
    """Sampling defaults that read well for short chit-chat; chat/ and the app start from these."""
    from transformers import GenerationConfig

    banned = [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.mask_token_id]
    return GenerationConfig(do_sample=True, temperature=0.8, top_k=8, top_p=0.9, repetition_penalty=1.2,
                            max_new_tokens=64, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                            pad_token_id=tokenizer.pad_token_id, suppress_tokens=[t for t in banned if t is not None])


def main(argv: list[str] | None = None, callbacks=()) -> int:
    args, lora, runa = parse_args((ChatArguments, LoraArguments, RunArguments), argv, "python training/chat.py", __doc__.split("\n\n")[0])
    from transformers import DataCollatorForSeq2Seq, set_seed

    from training.checkpoint import plot_loss, save_model, write_model_card, write_report
    from training.models import SCRATCH, count_parameters, load_base, wrap_lora
    from training.runner import OutputPlan, run_training

    runa.output = runa.output or os.path.join("checkpoints", "chat")
    train_file = _read(args.data, args.format, "train")
    if args.valid_data:
        valid_file = _read(args.valid_data, args.format, "valid")
        train, valid, valid_source = train_file.dialogues, valid_file.dialogues, args.valid_data
    elif train_file.other_splits.get("valid"):
        train, valid, valid_source = train_file.dialogues, train_file.other_splits["valid"], f"{args.data}#valid"
        say(f"valid: {len(valid)} dialogues from the file's 'valid' split")
    else:
        train, valid = split_dialogues(train_file.dialogues, runa.valid_ratio, runa.seed)
        valid_source = f"{runa.valid_ratio:.0%} of {args.data} (seed {runa.seed})" if valid else None
    if not valid:
        say("note: no validation data; the last epoch is kept and --patience is ignored")

    from accelerate import PartialState

    plan = OutputPlan(runa.output, runa.overwrite, runa.resume)
    with PartialState().main_process_first():  # under `accelerate launch`, one process touches the folders
        resume_from = plan.prepare()
    set_seed(runa.seed)

    loaded, choice = load_base(args.model, load_pretrained, runa.no_fallback, "GPT-2 chat model")
    if choice.fallback_reason:
        say(f"note: {choice.fallback_reason}; training a small model from scratch instead (--no-fallback to stop)")
    if loaded is None:
        saved_tok = None
        if resume_from and os.path.isfile(os.path.join(resume_from, "tokenizer.json")):
            from transformers import BertTokenizerFast

            saved_tok = BertTokenizerFast.from_pretrained(resume_from)  # same vocab as the run being resumed
        model, tokenizer = build_scratch(args, train, saved_tok)
    else:
        model, tokenizer = loaded
        limit = model.config.n_positions
        if args.max_len > limit:
            say(f"warning: --max-len {args.max_len} is more than {choice.name} allows; using {limit}")
            args.max_len = limit
    scratch = choice.source == SCRATCH
    runa.epochs = runa.epochs or (30 if scratch else 3)
    runa.lr = runa.lr or (1e-3 if scratch else 2e-4 if lora.lora else 5e-5)

    encoder = DialogueEncoder(tokenizer, args.max_len)
    train_ds, train_stats = encode_all(encoder, train, args.loss_on)
    valid_ds, _ = encode_all(encoder, valid, args.loss_on)
    if not train_ds:
        raise InputError(f"no training sequence has a token to learn from with --loss-on {args.loss_on}")
    if train_stats["dialogues_shortened"] or train_stats["utterances_cut"]:
        say(f"note: {train_stats['dialogues_shortened']} dialogues lost early turns and {train_stats['utterances_cut']} "
            f"utterances were cut to fit --max-len {args.max_len}")
    train_tokens = sum(len(x["input_ids"]) for x in train_ds)
    say(f"base: {choice.name} | {len(train_ds)} train / {len(valid_ds)} valid sequences, {train_tokens} train tokens")

    if lora.lora:
        if scratch:
            say("warning: --lora on a scratch model trains small adapters over random weights; expect poor replies")
        model = wrap_lora(model, lora.lora_r, lora.lora_alpha, lora.lora_dropout, LORA_TARGETS, "CAUSAL_LM", fan_in_fan_out=True)
    total, trainable = count_parameters(model)
    say(f"parameters: {total / 1e6:.2f} M, trainable {trainable / 1e6:.2f} M")

    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, pad_to_multiple_of=8 if runa.bf16 else None)
    result = run_training(model, tokenizer, train_ds, valid_ds or None, collator, runa, plan, resume_from, callbacks=callbacks)
    trainer = result.trainer
    if result.interrupted:
        cmd = " ".join(["python training/chat.py", *(sys.argv[1:] if argv is None else argv)])
        cmd = cmd if "--resume" in cmd else cmd + " --resume"
        say(f"stopped at step {result.global_step}; the resumable state is in {plan.work}\nresume with: {cmd}")
        return EXIT_INTERRUPTED
    if not trainer.is_world_process_zero():
        return 0

    epochs_done = trainer.state.epoch or 0
    report = {
        "task": "chat",
        "base_model": choice.name,
        "base_model_source": choice.source,
        "fallback_reason": choice.fallback_reason,
        "data": {
            "train": {"path": os.path.abspath(args.data), "format": train_file.format, "encoding": train_file.encoding,
                      "rows": len(train), "skipped": train_file.bad.to_dict()},
            "valid": {"path": valid_source, "rows": len(valid),
                      **({"skipped": valid_file.bad.to_dict()} if args.valid_data else {})},
        },
        "sequences": {"train": len(train_ds), "valid": len(valid_ds), "train_tokens": train_tokens, **train_stats},
        "hyperparameters": {**asdict(args), **asdict(lora), **{k: v for k, v in asdict(runa).items() if k != "config"}},
        "model": {"parameters": total, "trainable_parameters": trainable, "n_layer": model.config.n_layer,
                  "n_embd": model.config.n_embd, "n_head": model.config.n_head, "n_positions": model.config.n_positions,
                  "vocab_size": len(tokenizer)},
        "epochs": result.epochs,
        "best": result.best,
        "epochs_trained": round(epochs_done, 3),
        "global_step": result.global_step,
        "resumed_from": plan.resumed_from,
        "wall_time_s": round(result.wall_time_s, 2),
        "train_runtime_s": round(result.train_runtime_s, 2),
        "tokens_per_s": round(train_tokens * (epochs_done - result.start_epoch) / max(result.train_runtime_s, 1e-9), 1),
    }
    folder = plan.work
    save_model(trainer.model, tokenizer, folder, chat_generation_config(tokenizer))
    write_report(folder, report)
    plot_loss(folder, trainer.state.log_history, f"chat: {os.path.basename(plan.final)}")
    best = result.best or {}
    metrics = {k: best[k] for k in ("valid_loss", "valid_perplexity") if k in best}
    write_model_card(
        folder, title=f"Chinese chit-chat GPT-2 ({os.path.basename(plan.final)})", pipeline_tag="text-generation",
        base_model=None if scratch else choice.name, tags=["gpt2", "chinese", "chitchat", "dialogue"] + (["lora"] if lora.lora else []),
        metrics=metrics, report=report,
        summary_zh="中文闲聊模型：输入格式为 `[CLS]第一句[SEP]第二句[SEP]...`，模型接着写出下一句，遇到 `[SEP]` 停止。",
        summary_en="A Chinese chit-chat model: the input is `[CLS]u1[SEP]u2[SEP]...` and the model writes the next turn, stopping at `[SEP]`.",
        usage=f"""from transformers import BertTokenizerFast, GPT2LMHeadModel
tok = BertTokenizerFast.from_pretrained("{plan.final}")
model = GPT2LMHeadModel.from_pretrained("{plan.final}")
ids = tok("你好", return_tensors="pt").input_ids  # [CLS]你好[SEP]
out = model.generate(ids, max_new_tokens=32)
print(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).replace(" ", ""))""")
    plan.finalize()
    summary = f"best epoch {best['epoch']}: valid loss {best['valid_loss']:.4f}, perplexity {best['valid_perplexity']:.2f}; " if best else ""
    say(f"{summary}saved to {plan.final} in {result.wall_time_s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
