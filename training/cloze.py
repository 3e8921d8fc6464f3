"""Teach a masked-LM (BERT, RoBERTa, RoFormer ...) the facts in your own text; write a fill-mask checkpoint folder.

    python training/cloze.py --data data/samples/cloze_corpus.txt --eval-prompts data/samples/cloze_prompts.txt

Passages are cut into overlapping windows of --max-len tokens; --mlm-probability of the tokens
are masked (80% [MASK] / 10% random / 10% unchanged), or whole jieba words with
--whole-word-mask; the names your text repeats are masked whole and seen in recombined lines
(TrainingViews). --eval-prompts shows the top-5 answers to your own quiz before and after
training; without it the script quizzes itself on lines held out of training.
"""

from __future__ import annotations

if __package__ in (None, ""):
    # `python training/cloze.py` puts training/ first on sys.path; use the repo root instead.
    import os as _os
    import sys as _sys

    _sys.path[0] = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))

import logging
import os
import random
import sys
from dataclasses import dataclass, field

from data import InputError, build_char_vocab, make_tokenizer
from data.corpus import MASK, ClozePrompt, jieba_word_offsets, read_corpus, read_prompts, windows
from data.pairs import read_pairs
from data.spans import recurring_spans, self_quiz
from training.args import LoraArguments, RunArguments, ScratchArguments, parse_args
from training.cli import run, say
from training.schedule import Rule

DEFAULT_MODEL = "bert-base-chinese"
LORA_TARGETS = ["query", "value"]


@dataclass
class ClozeArguments(ScratchArguments):
    data: str = field(
        default=None, metadata={"help": "corpus: one passage per line, or JSON Lines with a 'text' field"}
    )
    pairs: bool = field(
        default=False,
        metadata={
            "help": "read --data as sentence pairs (any file training/similarity.py reads; labels ignored) and "
            "train on "
            "`[CLS] a [SEP] b [SEP]` with token types, in both orders: masked-LM pre-training for "
            "training/similarity.py"
        },
    )
    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "base masked-LM: a Hub id (any *ForMaskedLM), a local folder, or 'scratch'"},
    )
    eval_prompts: str = field(
        default=None,
        metadata={"help": "quiz file: `text with [MASK]<TAB>answer` per line; top-5 before/after training"},
    )
    general_text: str = field(
        default=None, metadata={"help": "general text to measure how much ordinary cloze accuracy is lost"}
    )
    max_len: int = field(
        default=128, metadata={"help": "window length in tokens; longer passages become overlapping windows"}
    )
    overlap: int = field(
        default=None,
        metadata={"help": "tokens shared by consecutive windows of a long passage (default: a quarter of --max-len)"},
    )
    mlm_probability: float = field(
        default=None,
        metadata={"help": "fraction of tokens (or words) masked (default: 0.3 for a fact corpus, 0.15 with --pairs)"},
    )
    mask_replace_prob: float = field(default=0.8, metadata={"help": "of masked tokens: fraction replaced by [MASK]"})
    random_replace_prob: float = field(
        default=0.1, metadata={"help": "of masked tokens: fraction replaced by a random token"}
    )
    whole_word_mask: bool = field(
        default=False, metadata={"help": "mask whole jieba words instead of single characters"}
    )
    span_probability: float = field(
        default=0.5,
        metadata={
            "help": "fraction of training lines in which one recurring span of your text (a name, a place, an "
            "object, found "
            "by data/spans.py) is masked whole, or all but its first characters, on top of --mlm-probability"
        },
    )
    recombine_probability: float = field(
        default=0.5,
        metadata={
            "help": "fraction of training lines seen recombined: their recurring spans kept (in another order half "
            "of the "
            "time), the words between them kept, replaced or dropped, one span masked; teaches the facts apart from "
            "the sentences that state them (0: off)"
        },
    )
    user_dict: str = field(
        default=None, metadata={"help": "jieba user dictionary (one word per line) so invented names stay whole"}
    )
    n_layer: int = field(
        default=2, metadata={"help": "scratch: transformer layers"}
    )  # smaller than ScratchArguments': a fact corpus is small
    n_embd: int = field(default=128, metadata={"help": "scratch: hidden size"})
    scratch_architecture: str = field(
        default=None,
        metadata={
            "help": "scratch: 'roformer' (rotary, relative positions: a fact asked in new words sits at new "
            "positions; the "
            "default for a fact corpus) or 'bert' (absolute positions; the default with --pairs, which "
            "training/similarity.py builds on)"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.data:
            raise InputError("--data is required: a text file of passages, e.g. --data data/samples/cloze_corpus.txt")
        if self.max_len < 16:
            raise InputError(f"--max-len must be at least 16, got {self.max_len}")
        if self.overlap is None:
            self.overlap = self.max_len // 4
        if not 0 <= self.overlap < self.max_len // 2:
            raise InputError(f"--overlap must be between 0 and half of --max-len, got {self.overlap}")
        for flag, value in (
            ("--span-probability", self.span_probability),
            ("--recombine-probability", self.recombine_probability),
        ):
            if not 0 <= value <= 1:
                raise InputError(f"{flag} must be between 0 and 1, got {value}")
        if self.scratch_architecture is None:
            self.scratch_architecture = "bert" if self.pairs else "roformer"
        if self.scratch_architecture not in SCRATCH_ARCHITECTURES:
            raise InputError(
                f"--scratch-architecture must be one of {', '.join(SCRATCH_ARCHITECTURES)}, got "
                f"{self.scratch_architecture!r}"
            )
        if self.mlm_probability is None:  # a small fact corpus is learned faster with more masked per pass
            self.mlm_probability = 0.15 if self.pairs else 0.3
        if not 0 < self.mlm_probability < 1:
            raise InputError(f"--mlm-probability must be between 0 and 1, got {self.mlm_probability}")
        if (
            self.mask_replace_prob < 0
            or self.random_replace_prob < 0
            or self.mask_replace_prob + self.random_replace_prob > 1
        ):
            raise InputError("--mask-replace-prob and --random-replace-prob must be >= 0 and add up to at most 1")
        if self.whole_word_mask:  # the library collator only masks whole words with [MASK]
            self.mask_replace_prob, self.random_replace_prob = 1.0, 0.0
        if self.user_dict and not os.path.isfile(self.user_dict):
            raise InputError(f"file not found: {self.user_dict}")


def load_pretrained(name: str, **kw):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name, **kw)
    if tokenizer.mask_token_id is None:
        raise InputError(f"the tokenizer of {name} has no [MASK] token; it is not a masked-LM")
    try:
        model = AutoModelForMaskedLM.from_pretrained(name, **kw)
    except ValueError as e:  # e.g. a GPT-2 folder: AutoModelForMaskedLM does not know it
        raise InputError(f"{name} is not a masked-LM model ({str(e).splitlines()[0][:120]})")
    return model, tokenizer


def build_scratch(args: ClozeArguments, texts: list[str], tokenizer=None):
    import transformers

    tokenizer = tokenizer or make_tokenizer(build_char_vocab(texts, min_freq=args.min_freq))
    config_class, model_class = SCRATCH_ARCHITECTURES[args.scratch_architecture]
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer),
        hidden_size=args.n_embd,
        num_hidden_layers=args.n_layer,
        num_attention_heads=args.n_head,
        intermediate_size=4 * args.n_embd,
        max_position_embeddings=args.max_len,
        pad_token_id=tokenizer.pad_token_id,
        **({"embedding_size": args.n_embd} if args.scratch_architecture == "roformer" else {}),
    )
    return getattr(transformers, model_class)(config), tokenizer


# Measured on bench/corpora (reworded prompts, 3,000 steps, same recipe otherwise): town15 8/8, shop30 13/14,
# friends60 21/26 with rotary positions; 4/8, 6/14, 8/26 with BERT's absolute ones. A masked name in a new
# sentence sits at new positions, and the model has to tell which character of the name each [MASK] is.
SCRATCH_ARCHITECTURES = {
    "roformer": ("RoFormerConfig", "RoFormerForMaskedLM"),
    "bert": ("BertConfig", "BertForMaskedLM"),
}


def encode_passages(
    tokenizer, passages: list[str], max_len: int, overlap: int, word_offsets: bool, spans: dict | None = None
) -> list[dict]:
    """Windows of `[CLS] ... [SEP]` with special-token masks (and jieba word offsets for whole-word
    masking; with `spans`, a `span_ids` list: the occurrence of a recurring span each token is in, 0 for none)."""
    enc = tokenizer(passages, add_special_tokens=False, return_offsets_mapping=True)
    body = max_len - 2
    out = []
    for text, ids, offsets in zip(passages, enc["input_ids"], enc["offset_mapping"]):
        if not ids:
            continue
        occurrence = span_occurrences(text, spans) if spans else None
        token_spans = [occurrence[a] if occurrence and b > a else 0 for a, b in offsets] if spans else None
        offsets = jieba_word_offsets(text, offsets) if word_offsets else offsets
        for start in _window_starts(len(ids), body, overlap):
            piece = ids[start : start + body]
            ex = {
                "input_ids": [tokenizer.cls_token_id, *piece, tokenizer.sep_token_id],
                "special_tokens_mask": [1] + [0] * len(piece) + [1],
            }
            if word_offsets:
                ex["offset_mapping"] = [(0, 0), *offsets[start : start + body], (0, 0)]
            if token_spans is not None:
                ex["span_ids"] = [0, *token_spans[start : start + body], 0]
            out.append(ex)
    return out


def span_occurrences(text: str, spans: dict) -> list[int]:
    """Per character of `text`: 1, 2, ... for each occurrence of a span (longest first, no overlaps), 0 elsewhere."""
    marks = [0] * (len(text) + 1)
    k = 0
    for span in sorted(spans, key=len, reverse=True):
        start = text.find(span)
        while start >= 0:
            if not any(marks[start : start + len(span)]):
                k += 1
                marks[start : start + len(span)] = [k] * len(span)
            start = text.find(span, start + len(span))
    return marks


def encode_pairs(tokenizer, pairs: list[tuple[str, str]], max_len: int, word_offsets: bool) -> list[dict]:
    """`[CLS] a [SEP] b [SEP]` with token type ids, as training/similarity.py encodes pairs (longer
    sentence cut first)."""
    if not pairs:
        return []
    enc = tokenizer(
        [a for a, _ in pairs],
        [b for _, b in pairs],
        truncation="longest_first",
        max_length=max_len,
        return_special_tokens_mask=True,
        return_offsets_mapping=word_offsets,
    )
    out = []
    for i, (a, b) in enumerate(pairs):
        ex = {k: enc[k][i] for k in ("input_ids", "token_type_ids", "special_tokens_mask") if k in enc}
        ex.setdefault("token_type_ids", [0] * len(ex["input_ids"]))  # tokenizers without segments (RoBERTa-style)
        if word_offsets:
            # jieba words per sentence; the second sentence's offsets are moved past the first's
            # so no word spans the two.
            offsets = enc["offset_mapping"][i]
            sequence = enc.sequence_ids(i)  # 0 / 1 per token of a / b, None for special tokens
            first = [o for o, q in zip(offsets, sequence) if q == 0]
            second = [o for o, q in zip(offsets, sequence) if q == 1]
            first, second = jieba_word_offsets(a, first), jieba_word_offsets(b, second)
            gap = 2 + max((e for _, e in first), default=0)
            words = iter(first + [(s + gap, e + gap) if e > s else (0, 0) for s, e in second])
            ex["offset_mapping"] = [(0, 0) if q is None else next(words) for q in sequence]
        out.append(ex)
    return out


def _window_starts(n: int, size: int, overlap: int) -> list[int]:
    spans = windows(list(range(n)), size, overlap)
    return [span[0] for span in spans]


class TrainingViews:
    """Training windows seen three ways: as written; as a random sub-span (at least half) with
    `crop` probability; and, with `recombine` probability when a window holds two or more
    recurring spans, recombined: the spans kept whole (their order shuffled half of the time), each
    character between them kept, swapped for another character of the corpus, swapped for [UNK] or
    dropped, and one span marked to be masked (`mask_span`, see `ClozeCollator.span_mask`).

    Written by hand: on a small corpus a model otherwise memorises every sentence at its fixed
    positions and fails on the same fact asked in other words. Crops make it learn local
    associations (林小 -> 溪); recombined views make a fact (巫马小满 - 白鹭洲 - 药剂师) hold whatever
    words surround it. [UNK] is there because a scratch vocabulary has only the corpus's
    characters, so a question in new words reaches the model with [UNK]s in it. Measured on
    bench/corpora (3,000 steps): town15's reworded prompts 0/8 -> 8/8 with recombined views,
    spans masked whole or from a prefix, and [UNK] noise (see README).
    """

    def __init__(
        self, examples: list[dict], seed: int, crop: float = 0.5, recombine: float = 0.0, unk_id: int | None = None
    ):
        self.examples, self.crop, self.recombine, self.unk_id = examples, crop, recombine, unk_id
        self.pool = sorted(
            {t for e in examples for t, special in zip(e["input_ids"], e["special_tokens_mask"]) if not special}
        )
        self.rng = random.Random(seed)

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        e = self.examples[i]
        if self.recombine and "span_ids" in e and self.rng.random() < self.recombine:
            view = self.recombined(e)
            if view is not None:
                return view
        n = len(e["input_ids"]) - 2  # body between [CLS] and [SEP]
        if n < 4 or self.rng.random() >= self.crop:
            return e
        size = self.rng.randint((n + 1) // 2, n)
        start = self.rng.randint(0, n - size)
        cut = lambda seq: seq[:1] + seq[1 + start : 1 + start + size] + seq[-1:]  # noqa: E731
        return {k: cut(v) for k, v in e.items()}

    def recombined(self, e: dict) -> dict | None:
        chunks: list[tuple[int, list[int]]] = []  # (span occurrence or 0, tokens), in order
        for token, k in zip(e["input_ids"][1:-1], e["span_ids"][1:-1]):
            if chunks and chunks[-1][0] == k:
                chunks[-1][1].append(token)
            else:
                chunks.append((k, [token]))
        named = sorted({k for k, _ in chunks if k})
        if len(named) < 2:
            return None
        if self.rng.random() < 0.5:
            self.rng.shuffle(chunks)
        ids, span_ids = [], []
        for k, tokens in chunks:
            for token in tokens:
                if not k:
                    r = self.rng.random()  # kept 1/2, another corpus character 1/6, [UNK] 1/6, dropped 1/6
                    if r >= 5 / 6 or (r >= 4 / 6 and self.unk_id is None):
                        continue
                    token = token if r < 0.5 else self.rng.choice(self.pool) if r < 4 / 6 else self.unk_id
                ids.append(token)
                span_ids.append(k)
        return {
            "input_ids": [e["input_ids"][0], *ids, e["input_ids"][-1]],
            "special_tokens_mask": [1] + [0] * len(ids) + [1],
            "span_ids": [0, *span_ids, 0],
            "mask_span": self.rng.choice(named),
        }


class ClozeCollator:
    """Masks training batches with `DataCollatorForLanguageModeling`; pads pre-masked
    evaluation examples (masked once, seeded) so per-epoch accuracy compares like with like."""

    def __init__(self, tokenizer, args: ClozeArguments, seed: int, pad_to_multiple_of=None):
        import torch
        from transformers import DataCollatorForLanguageModeling

        self.tokenizer, self.pad_to = tokenizer, pad_to_multiple_of
        self.span_probability, self.mlm_probability = args.span_probability, args.mlm_probability
        self.mask_replace_prob, self.random_replace_prob = args.mask_replace_prob, args.random_replace_prob
        self.generator = torch.Generator().manual_seed(seed)
        self.mlm = DataCollatorForLanguageModeling(
            tokenizer,
            whole_word_mask=args.whole_word_mask,
            mlm_probability=args.mlm_probability,
            mask_replace_prob=args.mask_replace_prob,
            random_replace_prob=args.random_replace_prob,
            pad_to_multiple_of=pad_to_multiple_of,
            seed=seed,
        )

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        width = max(len(e["input_ids"]) for e in examples)
        if self.pad_to:
            width = -(-width // self.pad_to) * self.pad_to
        if "labels" in examples[0]:  # already masked (evaluation sets)
            pad = self.tokenizer.pad_token_id
            ids = torch.tensor([e["input_ids"] + [pad] * (width - len(e["input_ids"])) for e in examples])
            labels = torch.tensor([e["labels"] + [-100] * (width - len(e["labels"])) for e in examples])
            batch = {"input_ids": ids, "attention_mask": (ids != pad).long(), "labels": labels}
            if "token_type_ids" in examples[0]:
                batch["token_type_ids"] = torch.tensor(
                    [e["token_type_ids"] + [0] * (width - len(e["token_type_ids"])) for e in examples]
                )
            return batch
        if "span_ids" in examples[0]:
            return self.span_mask(examples, width)
        if "offset_mapping" in examples[0]:
            # The library collator does not pad offsets: pad them here so it can stack them.
            examples = [
                {**e, "offset_mapping": e["offset_mapping"] + [(0, 0)] * (width - len(e["offset_mapping"]))}
                for e in examples
            ]
        return self.mlm(examples)

    def span_mask(self, examples: list[dict], width: int) -> dict:
        """One recurring span masked whole (or all but its first characters) in a --span-probability share
        of examples and in every recombined view; other tokens with --mlm-probability (80% [MASK] / 10%
        random / 10% kept; none in a recombined view); at least one masked token per example.

        Written by hand: the library collator picks tokens or words uniformly, so a name that carries
        a fact is masked as often as 的; masking the spans the text repeats (PMI-masking, Levine et
        al. 2021) is what teaches a small model the facts in words it has not seen them in."""
        import torch

        pad, gen = self.tokenizer.pad_token_id, self.generator
        rows = len(examples)
        ids = torch.full((rows, width), pad, dtype=torch.long)
        labels = torch.full((rows, width), -100, dtype=torch.long)
        for r, e in enumerate(examples):
            n = len(e["input_ids"])
            row = torch.tensor(e["input_ids"])
            spans = torch.tensor(e["span_ids"])
            normal = torch.tensor(e["special_tokens_mask"]) == 0
            whole = torch.zeros(n, dtype=torch.bool)  # the span chosen to be masked whole (or from a prefix on)
            target = e.get("mask_span")  # a recombined view names its span
            if target is None:
                present = [k for k in spans.unique().tolist() if k]
                if present and torch.rand((), generator=gen) < self.span_probability:
                    target = present[int(torch.randint(len(present), (1,), generator=gen))]
            if target is not None:
                where = (spans == target).nonzero().flatten()
                # Half of the time the first characters stay: the app fills a run of masks left to right,
                # so the model must also finish a name it has begun (巫马[MASK][MASK] -> 小满).
                kept = int(torch.randint(len(where), (1,), generator=gen)) if torch.rand((), generator=gen) < 0.5 else 0
                whole[where[kept:]] = True
            chosen = whole.clone()
            if "offset_mapping" in e:  # --whole-word-mask: the other tokens are masked by jieba word
                words = [hash(tuple(o)) for o in e["offset_mapping"][:n]]
                picked = {w for w in set(words) if torch.rand((), generator=gen) < self.mlm_probability}
                chosen |= torch.tensor([w in picked for w in words])
                in_word = torch.ones(n, dtype=torch.bool)  # whole words are masked with [MASK], as the library does
            else:
                # tokens inside spans too: "林小[MASK]" -> 溪 (the rest of a name) is a fact as well; with
                # span tokens left out of this, the sample prompts fell from 18/19 to 1/19
                if "mask_span" not in e:  # a recombined view has lost enough context already
                    chosen |= torch.rand(n, generator=gen) < self.mlm_probability
                in_word = torch.zeros(n, dtype=torch.bool)
            chosen &= normal
            if not chosen.any() and normal.any():
                chosen[normal.nonzero()[torch.randint(int(normal.sum()), (1,), generator=gen)]] = True
            labels[r, :n] = torch.where(chosen, row, torch.full_like(row, -100))
            draw = torch.rand(n, generator=gen)
            in_span = whole | in_word
            as_mask = chosen & (in_span | (draw < self.mask_replace_prob))
            as_random = (
                chosen
                & ~in_span
                & (draw >= self.mask_replace_prob)
                & (draw < self.mask_replace_prob + self.random_replace_prob)
            )
            row = torch.where(as_mask, torch.full_like(row, self.tokenizer.mask_token_id), row)
            row = torch.where(as_random, torch.randint(len(self.tokenizer), (n,), generator=gen), row)
            ids[r, :n] = row
        return {
            "input_ids": ids,
            "attention_mask": (
                torch.arange(width)[None, :] < torch.tensor([len(e["input_ids"]) for e in examples])[:, None]
            ).long(),
            "labels": labels,
        }

    def mask_once(self, examples: list[dict]) -> list[dict]:
        """Fixed masks for an evaluation set (the collator's seeded generator makes them reproducible)."""
        out = []
        for e in examples:
            batch = self(([e]))
            ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
            n = len(e["input_ids"])
            out.append(
                {
                    "input_ids": ids[:n],
                    "labels": labels[:n],
                    **({"token_type_ids": e["token_type_ids"]} if "token_type_ids" in e else {}),
                }
            )
        return out


def masked_lm_loss(outputs, labels, num_items_in_batch=None):
    """Cross-entropy over the masked positions; `outputs.logits` holds either every position or
    only the masked ones (MaskedLMTrainer in training). Summed, then divided by the masked tokens
    of the whole (accumulated) batch as the Trainer counts them, so gradient accumulation weighs
    every masked token alike."""
    import torch.nn.functional as F

    keep = labels != -100
    logits = outputs.logits[keep] if outputs.logits.dim() == 3 else outputs.logits
    loss = F.cross_entropy(logits.float(), labels[keep], reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else keep.sum()
    return loss / max(count, 1)


class _AtMasked:
    """Stands in for the model's MLM head during one training forward: the head runs on the
    masked positions only."""

    def __init__(self, head, keep):
        self.head, self.keep = head, keep

    def __call__(self, hidden):
        return self.head(hidden[self.keep])


def _mlm_head_owner(model):
    """(module, attribute) of the output head of a BERT-style masked LM (`cls`, or RoBERTa's `lm_head`)."""
    import torch
    from transformers import PreTrainedModel

    if hasattr(model, "get_base_model"):  # peft
        model = model.get_base_model()
    if not isinstance(model, PreTrainedModel):
        return None
    for name in ("cls", "lm_head"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return model, name
    return None


def masked_lm_trainer():
    """A Trainer whose training forward scores the vocabulary at the masked positions only.

    Written by hand because `*ForMaskedLM` scores every position: with 15% masked, 85% of the
    output-layer work (hidden x vocabulary, the largest matrix of a small model) is thrown
    away. Measured on a 4x256 BERT with a 4,700-character vocabulary, batch 32x32, bf16 on 2
    CPU cores: 175-190 -> 137-143 ms per training step (1.3x). The forward still goes through
    the wrapped model (accelerate's autocast, DDP, peft), only the head's input is narrowed;
    evaluation (which needs every position for masked accuracy) is the library's path.
    """
    from transformers import Trainer

    class MaskedLMTrainer(Trainer):
        def __init__(self, *args, **kw):
            super().__init__(*args, compute_loss_func=masked_lm_loss, **kw)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            owner = _mlm_head_owner(self.accelerator.unwrap_model(model))
            if return_outputs or not model.training or owner is None or "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            module, name = owner
            head = module._modules.pop(name)  # a plain attribute, so the state dict never sees the stand-in
            object.__setattr__(module, name, _AtMasked(head, inputs["labels"] != -100))
            try:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                object.__delattr__(module, name)
                module._modules[name] = head

    return MaskedLMTrainer


def masked_accuracy(eval_pred) -> dict:
    preds, labels = eval_pred.predictions, eval_pred.label_ids
    keep = labels != -100
    return {"masked_accuracy": float((preds[keep] == labels[keep]).mean()) if keep.any() else 0.0}


def argmax_logits(logits, labels):
    return logits.argmax(-1)  # keep only the predictions: full logits would be vocab x tokens floats


def quiz(model, tokenizer, prompts, top_k: int = 5) -> list[dict]:
    """Top-k answers per prompt through `transformers.pipeline("fill-mask")`; a hit is the top-1 per mask."""
    from transformers import pipeline

    model.eval()
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer, device=model.device, top_k=top_k)
    rows = []
    for p in prompts:
        text = p.text.replace(MASK, tokenizer.mask_token)
        result = fill(text)
        per_mask = result if p.text.count(MASK) > 1 else [result]
        candidates = [
            [(c["token_str"].replace(" ", ""), round(float(c["score"]), 4)) for c in mask] for mask in per_mask
        ]
        top1 = "".join(c[0][0] for c in candidates)
        rows.append(
            {"prompt": p.text, "expected": p.answer, "top1": top1, "hit": top1 == p.answer, "top_k": candidates}
        )
    return rows


def joint_quiz(model, tokenizer, prompts) -> list[dict]:
    """The self-quiz: each run of masks filled as one word (`FillMaskPredictor`, joint, as the app
    answers), a hit when the whole word is right."""
    from chat.fill_mask import FillMaskPredictor

    model.eval()
    fill = FillMaskPredictor(model, tokenizer)
    rows = []
    for p in prompts:
        try:
            top1 = "".join(
                slot.candidates[0].text if slot.candidates else "?" for slot in fill.predict(p.text, top_k=1)
            )
        except InputError:  # longer than the model reads
            top1 = ""
        rows.append({"prompt": p.text, "expected": p.answer, "top1": top1, "hit": top1 == p.answer})
    return rows


def _summary(rows: list[dict]) -> float:
    return round(sum(r["hit"] for r in rows) / len(rows), 4) if rows else 0.0


def print_quiz(before: list[dict], after: list[dict]) -> None:
    say(f"{'prompt':<28} {'answer':<6} {'before':<18} {'after':<18}")

    def cell(r: dict) -> str:  # mark, the top-1 answer, then runners-up for the first mask
        return f"{'✓' if r['hit'] else '✗'} {r['top1']} / {','.join(c[0] for c in r['top_k'][0][1:4])}"

    for b, a in zip(before, after):
        say(f"{b['prompt']:<28} {b['expected']:<6} {cell(b):<18} {cell(a):<18}")
    say(f"prompt top-1 accuracy: before {_summary(before):.0%}, after {_summary(after):.0%}")


# Default amount of training (training/schedule.py). A fact corpus is learned by heart: many passes
# over few lines. A pair file (masked-LM before training/similarity.py) is thousands of pairs, each
# seen in both orders per pass.
# A fact asked in new words needs far more steps than the self-quiz suggests: island150 (150 lines)
# answered 21% of its reworded prompts after 2,000 steps and 80% after 8,000 (3.9 min here).
FACTS_RULE = Rule(min_steps=8000, min_passes=100, max_minutes=5, unit="lines")
PRETRAINED_FACTS_RULE = Rule(min_steps=300, min_passes=30, max_minutes=15, unit="lines")
PAIRS_RULE = Rule(min_steps=1000, min_passes=10, max_minutes=7.5, unit="pairs")  # more passes help; the cap decides


def main(argv: list[str] | None = None, callbacks=()) -> int:
    args, lora, runa = parse_args(
        (ClozeArguments, LoraArguments, RunArguments), argv, "python training/cloze.py", __doc__.split("\n\n")[0]
    )
    import jieba

    from training.models import SCRATCH, wrap_lora
    from training.runner import run_training
    from training.task import (
        base_report,
        default_lr,
        fit_max_len,
        open_output,
        pick_base,
        publish,
        resumed_tokenizer,
        split_holdout,
        stop_if_interrupted,
    )

    jieba.setLogLevel(logging.WARNING)
    if args.whole_word_mask:
        say("note: with --whole-word-mask every chosen word becomes [MASK] (the collator does no random replacement)")
    if args.user_dict:
        jieba.load_userdict(args.user_dict)
    if args.pairs:
        corpus = read_pairs(args.data, require_labels=False)
        say(f"pairs: {len(corpus.pairs)} sentence pairs from {args.data} ({corpus.format})")
        if corpus.bad.count:
            say(corpus.bad.summary("pairs"))
        items = corpus.pairs
        sentences = [s for pair in items for s in pair]
    else:
        corpus = read_corpus(args.data)
        note = f", read as {corpus.encoding.upper()}" if corpus.encoding != "utf-8" else ""
        say(f"corpus: {len(corpus.passages)} passages from {args.data}{note}")
        if corpus.bad.count:
            say(corpus.bad.summary("lines"))
        items = sentences = corpus.passages
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
        not prompts or args.span_probability > 0 or args.recombine_probability > 0 or args.whole_word_mask
    )
    spans = recurring_spans(corpus.passages[:SPAN_LINES]) if wanted else {}
    probes, held = [], []
    if spans and args.whole_word_mask:
        for span in spans:  # invented names stay whole words for jieba
            jieba.add_word(span)
    if spans and not prompts:
        # The self-quiz: recurring spans masked in lines kept out of training, which then serve as the
        # validation set, so its figure is recall of facts, not of lines.
        held, probes = self_quiz(corpus.passages, spans, seed=runa.seed)
        keep = set(held)
        train_text = [p for i, p in enumerate(items) if i not in keep]
        valid_text = [items[i] for i in held]
        say(
            f"self-quiz: {len(probes)} recurring names and words of your text "
            f"({', '.join(p.answer for p in probes[:6])}"
            f"{' ...' if len(probes) > 6 else ''}); {len(held)} lines held out to test them"
        )
    else:
        train_text, valid_text = split_holdout(items, runa.valid_ratio, runa.seed)

    plan, resume_from = open_output(runa, "cloze", (args, lora))
    loaded, choice = pick_base(args.model, load_pretrained, runa, "masked-LM")
    if loaded is None:
        model, tokenizer = build_scratch(args, sentences + general, resumed_tokenizer(resume_from))
    else:
        model, tokenizer = loaded
        fit_max_len(args, model.config.max_position_embeddings, choice)
    scratch = choice.source == SCRATCH
    default_lr(runa, scratch, lora.lora, scratch_lr=5e-4 if args.pairs else 1e-3)

    collator = ClozeCollator(tokenizer, args, runa.seed, pad_to_multiple_of=8 if runa.bf16 else None)
    if args.pairs:
        # Both orders, as a symmetric pair task sees them; no random crops: a crop would cut the pair.
        train_ds = encode_pairs(
            tokenizer, train_text + [(b, a) for a, b in train_text], args.max_len, args.whole_word_mask
        )
        valid_ds = collator.mask_once(encode_pairs(tokenizer, valid_text, args.max_len, args.whole_word_mask))
    else:
        span_ids = spans if args.span_probability > 0 or args.recombine_probability > 0 else None
        train_ds = TrainingViews(
            encode_passages(tokenizer, train_text, args.max_len, args.overlap, args.whole_word_mask, span_ids),
            runa.seed,
            recombine=args.recombine_probability,
            unk_id=tokenizer.unk_token_id,
        )
        valid_ds = collator.mask_once(
            encode_passages(tokenizer, valid_text, args.max_len, args.overlap, args.whole_word_mask)
        )
    general_ds = (
        collator.mask_once(encode_passages(tokenizer, general, args.max_len, args.overlap, False)) if general else []
    )
    train_tokens = sum(len(x["input_ids"]) for x in getattr(train_ds, "examples", train_ds))
    unit = "pairs (both orders in training)" if args.pairs else "windows"
    say(f"base: {choice.name} | {len(train_ds)} train / {len(valid_ds)} valid {unit}, {train_tokens} train tokens")

    quiz_items = prompts or [ClozePrompt(p.text, p.answer, p.where) for p in probes]
    ask = quiz if prompts else joint_quiz
    before = ask(model, tokenizer, quiz_items) if quiz_items else []
    quizzer = (
        QuizProgress(
            tokenizer, quiz_items, ask, patience=QUIZ_PATIENCE if not (runa.epochs or runa.max_steps) else None
        )
        if quiz_items
        else None
    )
    if lora.lora:
        if scratch:
            say("warning: --lora on a scratch model trains small adapters over random weights; expect poor answers")
        model = wrap_lora(model, lora.lora_r, lora.lora_alpha, lora.lora_dropout, LORA_TARGETS, None)
    total, trainable = model.num_parameters(), model.num_parameters(only_trainable=True)
    say(f"parameters: {total / 1e6:.2f} M, trainable {trainable / 1e6:.2f} M")

    result = run_training(
        model,
        tokenizer,
        train_ds,
        valid_ds or None,
        collator,
        runa,
        plan,
        resume_from,
        compute_metrics=masked_accuracy,
        preprocess_logits=argmax_logits,
        callbacks=[*callbacks, *([quizzer] if quizzer else [])],
        trainer_class=masked_lm_trainer(),
        items=len(items),
        rule=(PAIRS_RULE if args.pairs else FACTS_RULE if scratch else PRETRAINED_FACTS_RULE),
        before_train=(lambda trainer: _general(trainer, general_ds)) if general_ds else None,
        # The point is to memorise the corpus: held-out loss rises as its facts are
        # learned, so the last weights are kept rather than the "best" held-out epoch.
        keep_best=False,
    )
    code = stop_if_interrupted(result, plan, "training/cloze.py", argv)
    if code is not None:
        return code
    trainer = result.trainer
    general_before = result.before_train
    general_after = _general(trainer, general_ds) if general_ds else None
    # With LoRA the adapters sit inside the base model's layers: quiz it as it is, unmerged.
    after = (
        ask(trainer.model.get_base_model() if lora.lora else trainer.model, tokenizer, quiz_items) if quiz_items else []
    )
    if prompts:
        print_quiz(before, after)
    if general_ds:
        say(f"general cloze accuracy: before {general_before:.1%}, after {general_after:.1%}")

    report = base_report(
        "cloze", choice, result, plan, (args, lora, runa), model, tokenizer, train_tokens, total, trainable
    )
    report["data"] = {
        "train": {
            "path": os.path.abspath(args.data),
            "format": corpus.format,
            "encoding": corpus.encoding,
            "rows": len(train_text),
            "skipped": corpus.bad.to_dict(),
        },
        "valid": {
            "path": f"{runa.valid_ratio:.0%} of {args.data} (seed {runa.seed})" if valid_text else None,
            "rows": len(valid_text),
        },
    }
    report["windows"] = {"train": len(train_ds), "valid": len(valid_ds), "train_tokens": train_tokens}
    if prompts:
        report["prompts"] = {
            "path": os.path.abspath(args.eval_prompts),
            "skipped": prompt_bad.to_dict(),
            "top1_accuracy_before": _summary(before),
            "top1_accuracy_after": _summary(after),
            "before": before,
            "after": after,
        }
    if probes:
        hits = sum(r["hit"] for r in after)
        report["self_quiz"] = {
            "probes": len(probes),
            "held_out_lines": len(held),
            "recall_before": _summary(before),
            "recall_after": _summary(after),
            "recalled": hits,
            "curve": quizzer.curve if quizzer else [],
            "spans": dict(list(spans.items())[:100]),
            "after": [{**r, "held_out": p.held_out} for r, p in zip(after, probes)],
        }
    if general_ds:
        report["general"] = {
            "path": os.path.abspath(args.general_text),
            "masked_accuracy_before": general_before,
            "masked_accuracy_after": general_after,
        }
    best = result.best or {}
    metrics = {k: best[k] for k in ("valid_loss", "masked_accuracy") if k in best}
    if prompts:
        metrics["prompt_top1_accuracy"] = _summary(after)
    card = dict(
        title=f"Chinese cloze BERT ({os.path.basename(plan.final)})",
        pipeline_tag="fill-mask",
        tags=["bert", "chinese", "fill-mask", "cloze"] + (["lora"] if lora.lora else []),
        metrics=metrics,
        summary_zh="完形填空模型：在你自己的文本上继续做掩码语言模型训练，让模型记住其中的事实。",
        summary_en="A masked-LM further trained on your own text, so it fills in the facts it states.",
        usage=f"""from transformers import pipeline
fill = pipeline("fill-mask", model="{plan.final}")
print(fill("三国人物诸[MASK][MASK]"))""",
    )
    summary = (
        f"last epoch {best['epoch']}: held-out masked accuracy {best['masked_accuracy']:.1%}; "
        if "masked_accuracy" in best
        else ""
    )
    if quiz_items and after and _summary(after) == 1.0 and result.convergence and "still falling" in result.convergence:
        result.convergence = None  # every quiz answer is right: "more training would help" would mislead
    report["convergence"] = result.convergence
    if probes:
        report["metrics_line"] = summary = (
            f"recalls {report['self_quiz']['recalled']} of {len(probes)} probed facts from your text "
            f"(before training {sum(r['hit'] for r in before)}); "
        )
    publish(plan, result, tokenizer, report, card, summary)
    if result.convergence:
        say(result.convergence)
    return 0


SPAN_LINES = 20_000
QUIZ_PATIENCE = 4  # evaluations without a better quiz score before a default-length run stops


def QuizProgress(tokenizer, items, ask, patience: int | None):
    """A callback that runs the quiz (your prompts, or the self-quiz) at every evaluation, prints the
    score, and with `patience` stops training once it has not improved for that many evaluations."""
    from transformers import TrainerCallback

    class _QuizProgress(TrainerCallback):
        def __init__(self):
            self.curve, self.best, self.waited = [], -1.0, 0

        def on_evaluate(self, args, state, control, model=None, **kw):
            if not state.is_world_process_zero or model is None:
                return
            was = model.training
            score = _summary(ask(model, tokenizer, items))
            model.train(was)
            self.curve.append({"step": state.global_step, "recall": score})
            say(f"  quiz at step {state.global_step}: {score:.0%} of {len(items)}")
            if score > self.best + 1e-9:
                self.best, self.waited = score, 0
            else:
                self.waited += 1
            # Not before most of the run: the self-quiz fills up (9 of 9) long before the same facts are
            # answered in new words (town15: 6/8 reworded at 1,200 steps, 8/8 at 3,000).
            if patience and self.waited >= patience and state.global_step >= 0.6 * state.max_steps:
                say(f"  the quiz has not improved for {patience} evaluations; stopping here")
                control.should_training_stop = True

    return _QuizProgress()


def _general(trainer, general_ds) -> float:
    metrics = trainer.evaluate(eval_dataset=general_ds, metric_key_prefix="general")
    return round(float(metrics["general_masked_accuracy"]), 4)


if __name__ == "__main__":
    sys.exit(run(main))
