"""What a cloze run trains on: windows of the corpus (or pairs) as token ids, the views of each
line (TrainingViews) and the masking collator (ClozeCollator). Used by training/cloze.py."""

from __future__ import annotations

import random

from data.corpus import jieba_word_offsets, windows


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


BAG_KEEP = 0.35  # share of the pieces of text around the span that a bag-of-words view keeps


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
        self,
        examples: list[dict],
        seed: int,
        crop: float = 0.5,
        recombine: float = 0.0,
        unk_id: int | None = None,
        bag: float = 0.0,
    ):
        self.examples, self.crop, self.recombine, self.unk_id, self.bag = examples, crop, recombine, unk_id, bag
        self.pool = sorted(
            {t for e in examples for t, special in zip(e["input_ids"], e["special_tokens_mask"]) if not special}
        )
        self.rng = random.Random(seed)
        self.drawn: list[dict] | None = None

    def __len__(self):
        return len(self.examples)

    def draw(self) -> list[int]:
        """One view of every window for the coming pass, drawn now; returns their lengths, so the batches can
        be grouped by the lengths the model will see (training/sampling.py) rather than by views drawn for the
        count and thrown away: grouped that way, a bag-of-words view (a third of a window) sat in a batch of
        whole windows and the batches were a third padding."""
        self.drawn = [self.view(i) for i in range(len(self.examples))]
        return [len(v["input_ids"]) for v in self.drawn]

    def __getitem__(self, i: int) -> dict:
        return self.drawn[i] if self.drawn is not None else self.view(i)

    def view(self, i: int) -> dict:
        e = self.examples[i]
        if self.bag and "span_ids" in e and self.rng.random() < self.bag:
            view = self.bagged(e)
            if view is not None:
                return view
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

    def bagged(self, e: dict) -> dict | None:
        """A bag-of-words view: one recurring span of the window kept whole, the text around it cut
        into pieces of 1-3 characters of which about a third are kept, everything shuffled, the span
        masked. Prose states each fact in new words every time, so what predicts the name is a few
        words of its lines (猫, 收养, 名叫), not a sentence: this teaches each of them alone."""
        pieces: list[tuple[int, list[int]]] = []
        for token, k in zip(e["input_ids"][1:-1], e["span_ids"][1:-1]):
            if pieces and pieces[-1][0] == k and (k or len(pieces[-1][1]) < self.rng.randint(1, 3)):
                pieces[-1][1].append(token)
            else:
                pieces.append((k, [token]))
        named = sorted({k for k, _ in pieces if k})
        if not named:
            return None
        target = self.rng.choice(named)
        kept = [(k, t) for k, t in pieces if k == target or self.rng.random() < BAG_KEEP]
        if len(kept) < 2:
            return None
        self.rng.shuffle(kept)
        ids = [token for _, tokens in kept for token in tokens]
        span_ids = [k for k, tokens in kept for _ in tokens]
        return {
            "input_ids": [e["input_ids"][0], *ids, e["input_ids"][-1]],
            "special_tokens_mask": [1] + [0] * len(ids) + [1],
            "span_ids": [0, *span_ids, 0],
            "mask_span": target,
        }

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

    def __init__(self, tokenizer, args, seed: int, pad_to_multiple_of=None):
        import torch
        from transformers import DataCollatorForLanguageModeling

        self.tokenizer, self.pad_to = tokenizer, pad_to_multiple_of
        self.span_probability, self.mlm_probability = args.span_probability, args.mlm_probability
        self.mask_replace_prob, self.random_replace_prob = args.mask_replace_prob, args.random_replace_prob
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = random.Random(seed)  # the per-row choices of span_mask
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

        pad, gen, pick = self.tokenizer.pad_token_id, self.generator, self.rng
        rows, lengths = len(examples), [len(e["input_ids"]) for e in examples]
        # The whole batch as tensors at once (per-row torch calls took ~4 ms of a 25 ms cloze step): the per-row
        # choices (which span, from which character) are a few Python draws each.
        ids = torch.tensor([e["input_ids"] + [pad] * (width - n) for e, n in zip(examples, lengths)])
        normal = torch.tensor(
            [[m == 0 for m in e["special_tokens_mask"]] + [False] * (width - n) for e, n in zip(examples, lengths)]
        )
        whole = torch.zeros((rows, width), dtype=torch.bool)  # the span masked whole (or from a prefix on)
        in_word = torch.zeros((rows, width), dtype=torch.bool)
        chosen = torch.zeros((rows, width), dtype=torch.bool)
        plain = torch.tensor([["mask_span" not in e and "offset_mapping" not in e] for e in examples])
        for r, e in enumerate(examples):
            target = e.get("mask_span")  # a recombined view names its span
            if target is None:
                present = sorted(set(e["span_ids"]) - {0})
                if present and pick.random() < self.span_probability:
                    target = present[pick.randrange(len(present))]
            if target is not None:
                where = [i for i, k in enumerate(e["span_ids"]) if k == target]
                # Half of the time the first characters stay: the app fills a run of masks left to right,
                # so the model must also finish a name it has begun (巫马[MASK][MASK] -> 小满).
                kept = pick.randrange(len(where)) if pick.random() < 0.5 else 0
                whole[r, where[kept:]] = True
            if "offset_mapping" in e:  # --whole-word-mask: the other tokens are masked by jieba word
                words = [hash(tuple(o)) for o in e["offset_mapping"][: lengths[r]]]
                picked = {w for w in set(words) if pick.random() < self.mlm_probability}
                chosen[r, : lengths[r]] = torch.tensor([w in picked for w in words])
                in_word[r] = True  # whole words are masked with [MASK], as the library does
        # tokens inside spans too: "林小[MASK]" -> 溪 (the rest of a name) is a fact as well; with span tokens left
        # out of this, the sample prompts fell from 18/19 to 1/19. None in a recombined view: it has lost enough
        # context already.
        chosen |= whole | (plain & (torch.rand((rows, width), generator=gen) < self.mlm_probability))
        chosen &= normal
        for r in (~chosen.any(1) & normal.any(1)).nonzero().flatten().tolist():  # at least one a row
            options = normal[r].nonzero().flatten().tolist()
            chosen[r, options[pick.randrange(len(options))]] = True
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        draw = torch.rand((rows, width), generator=gen)
        in_span = whole | in_word
        as_mask = chosen & (in_span | (draw < self.mask_replace_prob))
        as_random = (
            chosen
            & ~in_span
            & (draw >= self.mask_replace_prob)
            & (draw < self.mask_replace_prob + self.random_replace_prob)
        )
        ids = torch.where(as_mask, torch.full_like(ids, self.tokenizer.mask_token_id), ids)
        ids = torch.where(as_random, torch.randint(len(self.tokenizer), (rows, width), generator=gen), ids)
        return {
            "input_ids": ids,
            "attention_mask": (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long(),
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
