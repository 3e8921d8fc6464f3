"""ChatEngine: history + message -> reply, streamed, from a chat checkpoint folder.

The prompt is built by `data.DialogueEncoder` (the encoder training used): the latest
turns as `[CLS]u1[SEP]u2[SEP]...`, within `max_history` turns and the model's length; when a
conversation outgrows them, its oldest turns go `max_history // 2` at a time (see `build_prompt`).
Generation is `model.generate` with the KV cache; `[SEP]` ends the reply.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
from dataclasses import fields, replace
from typing import Iterator

import torch

from chat.compute import COMPUTE
from chat.settings import MAX_HISTORY, MAX_MESSAGE_CHARS, GenerationSettings
from data import DialogueEncoder, InputError, despace

log = logging.getLogger("chat")

PRECISIONS = ("fp32", "bf16", "int8")
_MORE = object()  # more tokens will follow
_SEEDED = threading.Lock()  # torch's CPU generator is process-wide: seeded runs go one at a time


def normalize_history(history) -> list[str]:
    """Accept [{"role", "content"}] (Gradio messages), [[user, bot], ...] pairs, or plain strings."""
    if history is None:
        return []
    if not isinstance(history, (list, tuple)):
        raise InputError(f"history must be a list of messages, got {type(history).__name__}")
    turns: list[str] = []
    for i, item in enumerate(history):
        if isinstance(item, str):
            turns.append(item)
        elif isinstance(item, dict):
            content = item.get("content")
            if item.get("role") not in ("user", "assistant") or not isinstance(content, str):
                raise InputError(f"history[{i}] must look like {{'role': 'user'|'assistant', 'content': str}}")
            turns.append(content)
        elif isinstance(item, (list, tuple)) and len(item) == 2 and all(x is None or isinstance(x, str) for x in item):
            turns.extend(x for x in item if x)
        else:
            raise InputError(f"history[{i}] is a {type(item).__name__}; use {{'role', 'content'}} dicts or strings")
    return [t.strip() for t in turns if t and t.strip()]


class _Text:
    """Token ids -> readable text deltas.

    Hand-written instead of TextIteratorStreamer: that one yields BERT-style decoded text
    ("你 好") piece by piece, and removing spaces from pieces would also glue English
    words together. Here the whole reply so far is decoded and de-spaced, and only the new
    suffix is sent, so streamed text always equals the final text.
    """

    def __init__(self, engine: "ChatEngine"):
        self.engine, self.ids, self.sent = engine, [], ""

    def add(self, ids: list[int], final: bool = False) -> str:
        """The text that `ids` add (a trailing ASCII word is held back until it ends: "hel" may become "hello")."""
        self.ids.extend(ids)
        text = self.engine.decode(self.ids)
        if not (text.startswith(self.sent) and len(text) > len(self.sent)):
            return ""
        cut = (
            len(text)
            if final or not text[-1].isascii()
            else len(text.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
        )
        if cut <= len(self.sent):
            return ""
        piece, self.sent = text[len(self.sent) : cut], text[:cut]
        return piece


class _Streamer(_Text):
    """A `generate` streamer: text deltas into a queue, None at the end."""

    def __init__(self, engine: "ChatEngine"):
        super().__init__(engine)
        self.queue: queue.Queue = queue.Queue()
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first pushes the prompt
            self.prompt_seen = True
            return
        if piece := self.add(value.reshape(-1).tolist()):
            self.queue.put(piece)

    def end(self) -> None:
        if piece := self.add([], final=True):
            self.queue.put(piece)
        self.queue.put(None)


class _Cancelled:
    """Stopping criterion: ends `generate` once the stream's reader has gone away."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _load(folder: str, precision: str):
    """(model, tokenizer, generation config) of a chat folder, with its weights in `precision`'s layout."""
    from chat.loading import load_chat_model

    model, tokenizer, gen = load_chat_model(folder, dtype=torch.bfloat16 if precision == "bf16" else None)
    if precision == "int8":
        from chat.quantize import quantize_int8

        model = quantize_int8(model)
    elif precision == "fp32":
        from chat.quantize import pack_fp32

        model = pack_fp32(model)  # the same fp32 products, laid out for oneDNN: see chat/quantize.py
    return model, tokenizer, gen


class ChatEngine:
    """Multi-turn chat over a GPT-2 checkpoint: `reply(history, message)` and `stream(...)`."""

    def __init__(
        self,
        model,
        tokenizer,
        generation_config,
        max_history: int = MAX_HISTORY,
        name: str = "chat",
        batching: bool = False,
    ):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        # batching: concurrent replies share decode steps (chat/batching.py; the app's default)
        self.batcher = None
        # the thread its model runs on without the batcher: from_pretrained's engines load and run on chat.compute's
        # (chat/compute.py); one built here on a model you hold runs in the thread that calls it
        self.compute = None
        if batching:
            from chat.batching import ContinuousBatcher

            self.batcher = ContinuousBatcher(model)
        self.max_history = max_history
        self.precision = "bf16" if model.dtype == torch.bfloat16 else "fp32"  # from_pretrained says "int8"
        self.max_len = int(model.config.n_positions)
        self.encoder = DialogueEncoder(tokenizer, self.max_len)
        banned = {tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.mask_token_id} - {
            None
        }
        self.defaults = generation_config
        # Whatever the folder says, [SEP] ends a reply and special tokens are never written.
        self.defaults.eos_token_id = tokenizer.sep_token_id
        self.defaults.pad_token_id = tokenizer.pad_token_id
        self.defaults.bos_token_id = tokenizer.cls_token_id
        self.defaults.suppress_tokens = sorted(banned | set(self.defaults.suppress_tokens or []))
        # A reply is never empty: [SEP] (the end of a turn) cannot be its first token (issue #36).
        self.defaults.begin_suppress_tokens = sorted(
            {tokenizer.sep_token_id} | set(self.defaults.begin_suppress_tokens or [])
        )

    @classmethod
    def from_pretrained(
        cls, folder: str, precision: str = "fp32", max_history: int = MAX_HISTORY, batching: bool = False
    ) -> "ChatEngine":
        """Load a chat checkpoint folder.

        precision: "fp32" (prepacked for oneDNN where torch has it, chat/quantize.py), "bf16" (half
        the weight bytes; fast on CPUs with AMX or AVX512-BF16) or "int8" (dynamic quantisation, a
        quarter of the bytes: the fastest on CPU, see `bench/decode.py`). batching: concurrent
        `stream`/`reply` calls share decode steps (`chat.batching.ContinuousBatcher`); the replies
        are the same.
        """
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        # loaded on the thread that will run it (chat/compute.py: a second thread running torch slows the first)
        model, tokenizer, gen = COMPUTE.run(_load, folder, precision)
        engine = cls(model, tokenizer, gen, max_history=max_history, name=folder, batching=batching)
        engine.precision, engine.compute = precision, COMPUTE
        return engine

    # -- text ------------------------------------------------------------------
    def decode(self, ids: list[int]) -> str:
        """Written Chinese: ## pieces joined, no spaces between CJK characters or around Chinese punctuation."""
        return despace(self.tokenizer.decode(ids, skip_special_tokens=True))

    def build_prompt(self, history, message: str, max_new_tokens: int) -> list[int]:
        if not isinstance(message, str):
            raise InputError(f"the message must be text, got {type(message).__name__}")
        message = message.strip()
        if not message:
            raise InputError("the message is empty; type something to say")
        if len(message) > MAX_MESSAGE_CHARS:
            log.warning("message of %d characters cut to its last %d", len(message), MAX_MESSAGE_CHARS)
            message = message[-MAX_MESSAGE_CHARS:]
        turns = normalize_history(history) + [message]
        # The oldest turns go half the window at a time, not one by one: then most turns' prompts continue
        # the previous turn's prompt and the batcher's prefix cache runs only the new tokens. Sliding by
        # one changed every prompt of a long conversation from its first token (16 visitors of a base-size
        # model: those full prefills, arriving together, set the app's first-token p95).
        step = max(1, self.max_history // 2)
        return self.encoder.encode_prompt(turns, max_history=self.max_history, reserve=max_new_tokens, step=step)

    # -- generation ------------------------------------------------------------
    def _config(self, settings: GenerationSettings | None, overrides: dict):
        s = replace(settings or GenerationSettings(), **overrides)
        s.check()
        values = {f.name: getattr(s, f.name) for f in fields(s) if f.name != "seed" and getattr(s, f.name) is not None}
        if values.get("temperature") == 0:  # temperature 0 reads as "no randomness"
            values.pop("temperature")
            values["do_sample"] = False
        config = copy.deepcopy(self.defaults)
        config.update(**values)
        room = self.max_len - 9  # leave at least a [CLS], a few prompt tokens and [SEP]
        if (config.max_new_tokens or 64) > room:
            config.max_new_tokens = room
        return config, s.seed

    def _generate(
        self, ids: list[int], config, seed: int | None, streamer=None, cancel: threading.Event | None = None
    ) -> list[int]:
        if self._batching():
            return self._cut([token for piece in self._batched(ids, config, seed) for token in piece])
        if self.compute is None:
            return self._generate_here(ids, config, seed, streamer, cancel)
        return self.compute.run(self._generate_here, ids, config, seed, streamer, cancel)

    def _generate_here(self, ids: list[int], config, seed: int | None, streamer, cancel) -> list[int]:
        from transformers import StoppingCriteriaList

        input_ids = torch.tensor([ids], device=self.model.device)
        kwargs = dict(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=config,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)] if cancel else []),
        )
        with torch.inference_mode():
            if seed is None:
                out = self.model.generate(**kwargs)
            else:
                with _SEEDED:
                    torch.manual_seed(seed)
                    out = self.model.generate(**kwargs)
        return self._cut(out[0, input_ids.shape[1] :].tolist())

    def _batching(self) -> bool:
        """Through the batcher, unless called on the compute thread itself (by a job), where waiting for the
        batcher's turns would wait forever: there the reply is generated without it (the same tokens; `stream`
        then generates in a helper thread)."""
        return self.batcher is not None and not self.batcher.compute.in_thread()

    def _cut(self, new: list[int]) -> list[int]:
        return new[: new.index(self.tokenizer.sep_token_id)] if self.tokenizer.sep_token_id in new else new

    def _batched(self, ids: list[int], config, seed: int | None) -> Iterator[list[int]]:
        """The reply's tokens from the batcher as they come (each read takes all that arrived)."""
        request = self.batcher.submit(ids, config, seed)
        try:
            while True:
                item, tokens = request.tokens.get(), []
                while isinstance(item, int):
                    tokens.append(item)
                    try:
                        item = request.tokens.get_nowait()
                    except queue.Empty:
                        item = _MORE
                if tokens:
                    yield tokens
                if item is None:
                    return
                if item is not _MORE:
                    raise item
        finally:  # also when the reader stops early (a closed browser tab): the row is freed at the next step
            self.batcher.release(request)

    def generate_ids(self, history, message: str, settings: GenerationSettings | None = None, **overrides) -> list[int]:
        """Token ids of the reply (without the closing [SEP])."""
        config, seed = self._config(settings, overrides)
        return self._generate(self.build_prompt(history, message, config.max_new_tokens), config, seed)

    def reply(self, history, message: str, settings: GenerationSettings | None = None, **overrides) -> str:
        """The whole reply at once."""
        return self.decode(self.generate_ids(history, message, settings, **overrides))

    def stream(
        self,
        history,
        message: str,
        settings: GenerationSettings | None = None,
        usage: dict | None = None,
        **overrides,
    ) -> Iterator[str]:
        """Yield the reply in pieces as it is generated (join them for the full text). With `usage` (a dict),
        the prompt's and the reply's token counts are put there when the reply ends (the API's `usage`)."""
        config, seed = self._config(settings, overrides)
        ids = self.build_prompt(history, message, config.max_new_tokens)
        sep = self.tokenizer.sep_token_id
        if self._batching():
            text = _Text(self)
            for tokens in self._batched(ids, config, seed):
                if piece := text.add(self._cut(tokens)):
                    yield piece
            if piece := text.add([], final=True):
                yield piece
            if usage is not None:
                usage.update(prompt_tokens=len(ids), completion_tokens=len(text.ids), limit=config.max_new_tokens)
            return
        streamer = _Streamer(self)
        errors: list[BaseException] = []
        cancel = threading.Event()

        def work():
            try:
                self._generate_here(ids, config, seed, streamer, cancel)
            except BaseException as e:  # surfaced in the caller's thread below
                errors.append(e)
                streamer.queue.put(None)

        # on the compute thread, where the model was loaded (chat/compute.py); one reply at a time there
        compute = self.compute
        if compute is None or compute.in_thread():  # (a job that streams cannot wait on a job queued behind itself)
            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            done = thread.join
        else:
            job = compute.submit(work)

            def done():  # a reader collected on the compute thread must not wait there for a job queued behind it
                if not compute.in_thread():
                    job.result()

        try:
            while (piece := streamer.queue.get()) is not None:
                yield piece
        finally:  # also when the caller stops reading (a closed browser tab): generation stops after this token
            cancel.set()
            done()
        if usage is not None:
            reply = streamer.ids[: streamer.ids.index(sep)] if sep in streamer.ids else streamer.ids
            usage.update(prompt_tokens=len(ids), completion_tokens=len(reply), limit=config.max_new_tokens)
        if errors:
            raise errors[0]
