"""Decoding controls of a chat reply, shared by the engine, the terminal chat's flags and the app.

Kept apart from chat/engine.py (which imports torch) so `python -m chat --help` and the flag
parsing are instant. The terminal chat's flags are these fields (transformers' HfArgumentParser).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data import InputError

MAX_NEW_TOKENS_LIMIT = 512
# Turns of a conversation the chat model sees. A longer one drops its oldest turns half this many at a
# time (chat/engine.py build_prompt): with the new message last, the model sees 5 or 7 turns of it, 6 on
# average, as many as the window of 6 sliding one turn at a time that this replaced.
MAX_HISTORY = 8
# Input limits, the one place each is defined: the engine, the predictors, the page and /v1 read them here.
MAX_MESSAGE_CHARS = 1000  # a longer chat message keeps its last this many characters (engine, template, page)
MAX_PASTE_CHARS = 20_000  # the page and /v1 refuse a longer chat message (a 5-million one grew the server 2 GB)
MAX_SENTENCE_CHARS = 1000  # fill-mask text and each similarity sentence: longer is refused (predictor and page)


def _f(help: str):
    return field(default=None, metadata={"help": help})


@dataclass
class GenerationSettings:
    """None means "the checkpoint's generation_config.json value"."""

    max_new_tokens: int | None = _f("longest reply in tokens")
    temperature: float | None = _f("sampling temperature (0: greedy)")
    top_k: int | None = _f("sample from the k likeliest tokens (0: off)")
    top_p: float | None = _f("nucleus sampling mass")
    repetition_penalty: float | None = _f(">1 discourages repeating tokens")
    no_repeat_ngram_size: int | None = _f("never repeat an n-gram of this size (0: off)")
    do_sample: bool | None = _f("sample (true) or always pick the likeliest token (false)")
    seed: int | None = _f("seed for reproducible sampling")

    def check(self) -> None:
        rules = [
            ("max_new_tokens", lambda v: 1 <= v <= MAX_NEW_TOKENS_LIMIT, f"between 1 and {MAX_NEW_TOKENS_LIMIT}"),
            ("temperature", lambda v: 0 <= v <= 5, "between 0 and 5 (0 means greedy)"),
            ("top_k", lambda v: v >= 0, "0 (off) or more"),
            ("top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
            ("repetition_penalty", lambda v: 1 <= v <= 5, "between 1 (off) and 5"),
            ("no_repeat_ngram_size", lambda v: v >= 0, "0 (off) or more"),
        ]
        for name, ok, text in rules:
            value = getattr(self, name)
            if value is not None and not ok(value):
                raise InputError(f"{name} must be {text}, got {value}")
