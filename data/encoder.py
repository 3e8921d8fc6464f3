"""The one encoder of a dialogue into token ids: `[CLS]u1[SEP]u2[SEP]...`.

Training (`training/chat.py`) and serving (`chat/`) both call this class, so the layout a
model was trained on is the layout it is prompted with.
"""

from __future__ import annotations

from dataclasses import dataclass

LOSS_ON = ("all", "replies", "last")
# Sampling that reads well for short chit-chat: training/chat.py writes it into each checkpoint's
# generation_config.json, chat/ uses it for a folder without one, and the app's sliders start here.
CHAT_SAMPLING = dict(do_sample=True, temperature=0.8, top_k=8, top_p=0.9, repetition_penalty=1.2, max_new_tokens=64)


@dataclass
class EncodedDialogue:
    input_ids: list[int]
    labels: list[int]
    dropped_turns: int  # earliest turns left out to fit max_len
    cut_turns: int  # utterances shortened because one alone did not fit


class DialogueEncoder:
    """Turns utterances into `[CLS]u1[SEP]u2[SEP]...` ids within `max_len` tokens."""

    def __init__(self, tokenizer, max_len: int):
        if max_len < 8:
            raise ValueError(f"max_len must be at least 8 tokens, got {max_len}")
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id
        if self.cls_id is None or self.sep_id is None:
            raise ValueError("the tokenizer has no [CLS]/[SEP] tokens; a BERT-style vocab is required")

    def tokenize(self, utterances: list[str]) -> list[list[int]]:
        """Token ids of each utterance, without special tokens (one batched call: fast tokenizer)."""
        if not utterances:
            return []
        return self.tokenizer(list(utterances), add_special_tokens=False)["input_ids"]

    def encode(self, utterances: list[str], loss_on: str = "all") -> EncodedDialogue:
        return self.encode_ids(self.tokenize(utterances), loss_on)

    def encode_ids(self, turns: list[list[int]], loss_on: str = "all") -> EncodedDialogue:
        """Training example: ids plus labels (-100 where no loss is taken; the model shifts them).

        loss_on: "all" every token (GPT2-chitchat), "replies" only the second speaker's turns
        (u2, u4, ... — the side the bot plays in chat/), "last" only the final utterance.
        """
        if loss_on not in LOSS_ON:
            raise ValueError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
        first, turns, cut = self._fit(turns, min_turns=2, keep="head")
        ids, labels = [self.cls_id], [-100]
        last = len(turns) - 1
        for i, turn in enumerate(turns):
            piece = turn + [self.sep_id]
            ids += piece
            speaker = (first + i) % 2  # speaker identity follows the original position
            take = loss_on == "all" or (loss_on == "replies" and speaker == 1) or (loss_on == "last" and i == last)
            labels += piece if take else [-100] * len(piece)
        return EncodedDialogue(ids, labels, first, cut)

    def encode_prompt(
        self, utterances: list[str], max_history: int | None = None, reserve: int = 0, step: int = 1
    ) -> list[int]:
        """Generation prompt: the latest turns, ending with [SEP] so the model writes the next turn.

        Keeps at most `max_history` turns and leaves `reserve` positions free for the reply; an
        utterance too long to fit keeps its end (the most recent words). Turns that must go (past
        `max_history`, or past the length) go `step` at a time from the start of the conversation,
        so the prompt starts at a turn whose index is a multiple of `step`: the prompts of a growing
        conversation keep the same start for several turns and each continues the one before, which
        is what lets a server reuse the earlier prompt's keys and values (chat/batching.PrefixCache).
        A window sliding one turn at a time changes every prompt from its first token on.
        """
        budget = self.max_len - max(reserve, 0)
        if budget < 8:
            raise ValueError(f"no room for a prompt: max_len {self.max_len} minus {reserve} reserved tokens")
        step, start = max(1, step), 0
        if max_history is not None and max_history > 0 and len(utterances) > max_history:
            start = -(-(len(utterances) - max_history) // step) * step  # rounded up to a multiple of step
        turns = self.tokenize(utterances[min(start, len(utterances) - 1) :])  # only what may be kept
        first, last = 0, len(turns) - 1
        while first < last and 1 + sum(len(t) + 1 for t in turns[first:]) > budget:
            first += step  # the start stays on a multiple of step
        _, turns, _ = self._fit(turns[min(first, last) :], min_turns=1, keep="tail", budget=budget)
        ids = [self.cls_id]
        for turn in turns:
            ids += turn + [self.sep_id]
        return ids

    def _fit(self, turns, min_turns: int, keep: str, budget: int | None = None):
        """Drop earliest turns, then shorten single utterances, until the sequence fits."""
        budget = budget or self.max_len
        size = 1 + sum(len(t) + 1 for t in turns)
        first = 0
        while size > budget and len(turns) - first > min_turns:
            size -= len(turns[first]) + 1
            first += 1
        turns = turns[first:]
        cut = 0
        if size > budget:
            # Still too long: share what is left evenly, longest utterances shortened first.
            room = budget - 1 - len(turns)
            caps = _fair_caps([len(t) for t in turns], room)
            new = []
            for t, cap in zip(turns, caps):
                if len(t) > cap:
                    cut += 1
                    t = t[:cap] if keep == "head" else t[len(t) - cap :]
                new.append(t)
            turns = new
        return first, turns, cut


def _fair_caps(lengths: list[int], room: int) -> list[int]:
    """Largest per-item caps whose capped lengths sum to at most `room` (water filling)."""
    caps = list(lengths)
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    left, n = room, len(lengths)
    for k, i in enumerate(order):
        share = left // (n - k)
        caps[i] = min(lengths[i], share)
        left -= caps[i]
    return caps
