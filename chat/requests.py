"""One reply in the batcher (chat/batching.py) and what `generate` would do for it alone: its logits processors, the
scores of its row, the token it chooses (argmax, or a draw from its own generator)."""

from __future__ import annotations

import copy
import queue
import threading

import torch


class Request:
    """One reply in the batcher. Read `tokens` (ids, then None at the end; an exception if it failed)."""

    def __init__(self, prompt: list[int], config, seed: int | None, processors, eos: set[int], limit: int):
        self.prompt, self.config, self.processors, self.eos = prompt, config, processors, eos
        self.seq = list(prompt)  # prompt + generated; the last one is not in the cache yet
        self.new: list[int] = []
        self.limit = limit  # most new tokens
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.tokens: queue.Queue = queue.Queue()
        self.cancelled = threading.Event()
        self.done = threading.Event()  # set once the loop holds nothing of it any more
        self.finished = False  # ended by [SEP] or its limit (not cancelled, not failed)
        self.group_key = group_key(config)
        self.kept = False  # its keys and values went to the prefix cache

    def cancel(self) -> None:
        self.cancelled.set()


def group_key(config) -> str | None:
    """Requests with equal keys get the same logits processors, so their rows can be processed together.
    None (alone) where the processors depend on the prompt's length (min_length, min_new_tokens) or where
    left-padding a row with the pad token could change them (the pad token is not suppressed)."""
    suppressed = set(config.suppress_tokens or [])
    if config.min_length or config.min_new_tokens or config.pad_token_id not in suppressed:
        return None
    return config.to_json_string(use_diff=False)


def logits_processors(model, config, prompt: list[int]):
    """The logits processors (and warpers) `generate` would build for this config and prompt."""
    from transformers import LogitsProcessorList

    config = copy.deepcopy(config)
    # generate's begin-suppression counts the prompt's length; rows of a batch differ in it, so
    # `row_scores` applies it to each row's first token instead
    config.begin_suppress_tokens = None
    ids = torch.tensor([prompt], device=model.device)
    model._prepare_special_tokens(config, True, device=model.device)
    config.max_length = len(prompt) + (config.max_new_tokens or 20)
    return model._get_logits_processor(
        generation_config=config,
        input_ids_seq_length=len(prompt),
        encoder_input_ids=ids,
        prefix_allowed_tokens_fn=None,
        logits_processor=LogitsProcessorList(),
        device=model.device,
        model_kwargs={},
    )


def row_scores(group: list[Request], logits: torch.Tensor) -> torch.Tensor:
    """generate's logits processing: the first row's processors (all rows have the same settings) over
    the rows' ids, left-padded with the pad token, which they suppress anyway."""
    first = group[0]
    width = max(len(r.seq) for r in group)
    pad = first.config.pad_token_id or 0
    ids = torch.tensor([[pad] * (width - len(r.seq)) + r.seq for r in group], device=logits.device)
    scores = logits.to(dtype=torch.float32, copy=True)
    begin = first.config.begin_suppress_tokens
    if begin:  # before the other processors, where generate applies it
        for j, r in enumerate(group):
            if not r.new:  # the reply's first token
                scores[j, begin] = -float("inf")
    return first.processors(ids, scores)


def sample(r: Request, scores: torch.Tensor) -> int:
    """generate's choice from one row's scores: argmax, or a draw from the request's own generator."""
    if not r.config.do_sample:
        return int(scores.argmax(-1)[0])
    probs = torch.nn.functional.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, num_samples=1, generator=r.generator)[0, 0])
