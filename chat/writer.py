"""A writer over a write checkpoint folder (GPT-2 trained on the user's prose): an opening in, its continuation out.

    from chat.writer import WriterEngine
    writer = WriterEngine.from_pretrained("checkpoints/write")
    print(writer.reply([], "那天早上，"))              # the continuation (a line break between paragraphs)
    for piece in writer.stream([], "那天早上，"):       # the same, as it is written
        print(piece, end="")

Everything chat has (chat/engine.py: sampling settings, seeds, streaming, int8, the batcher) with three
differences: the prompt is the opening's own tokens (no [CLS]/[SEP] turns), a writer never stops by itself
([SEP] is never written; max_new_tokens ends it), and the paragraph token prints as a line break.
"""

from __future__ import annotations

from chat.engine import ChatEngine
from data import InputError
from data.prose import PARAGRAPH
from data.text import despace

MAX_OPENING_CHARS = 2000  # a longer opening keeps its end (the model reads at most its block length anyway)


class WriterEngine(ChatEngine):
    def __init__(self, model, tokenizer, generation_config, name: str = "write", batching: bool = False, **kwargs):
        super().__init__(model, tokenizer, generation_config, name=name, batching=batching, **kwargs)
        self.defaults.suppress_tokens = sorted(set(self.defaults.suppress_tokens or []) | {tokenizer.sep_token_id})
        self.defaults.begin_suppress_tokens = None  # a continuation may start a new paragraph at once

    def decode(self, ids: list[int]) -> str:
        """Written Chinese, a line break where a paragraph ends."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return PARAGRAPH.join(despace(part) for part in text.split(PARAGRAPH))

    def build_prompt(self, history, message: str, max_new_tokens: int) -> list[int]:
        """The opening's tokens (its last ones, leaving room for max_new_tokens); `history` is not used: to go on
        writing, pass the text so far as the opening."""
        if not isinstance(message, str):
            raise InputError(f"the opening must be text, got {type(message).__name__}")
        opening = message.strip(" \t\u3000")
        if not opening.strip():
            raise InputError("the opening is empty; type the start of a text to continue")
        ids = self.tokenizer(opening[-MAX_OPENING_CHARS:], add_special_tokens=False)["input_ids"]
        return ids[-max(8, self.max_len - max_new_tokens) :]
