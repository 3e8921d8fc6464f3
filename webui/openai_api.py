"""OpenAI-compatible `/v1/models`, `/v1/chat/completions` and `/v1/completions` on the app's own port (issues #36,
#46): chat models answer chat completions, writers (the write task) text completions of a prompt.

The routes are added to the FastAPI app Gradio serves, so `/v1` shares the page's address, its
public link and its models: the chat checkpoints the Chat tab lists, loaded once by the same
`ModelStore` and answered by the same `ChatEngine` (with the continuous batcher unless
`--no-batching`). Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`,
so the official clients raise their usual exceptions. With `--api-key` (or APP_API_KEY), every
`/v1` request needs `Authorization: Bearer KEY`.

What maps how: `temperature` (0: greedy), `top_p`, `max_tokens` / `max_completion_tokens`, `seed`,
`stop` (up to 4 strings: the reply ends before the first), and the extras `top_k` and
`repetition_penalty`; `n` must be 1; `frequency_penalty` and `presence_penalty` other than 0 are
refused (this model's sampling has `repetition_penalty` instead); `system` messages are left out
as the chat template does (the format has no system prompt). Every field is checked before any model
work; a body over MAX_BODY_BYTES is refused with 413 before the rest of it is read.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
import uuid
from typing import NamedTuple

from fastapi import Request  # module level: the routes' annotations are read by name

from chat.settings import MAX_MESSAGE_CHARS, MAX_NEW_TOKENS_LIMIT, GenerationSettings
from data import InputError

MAX_MESSAGES = 200  # the page keeps a conversation's last 8 turns; a request of more is a mistake
# The largest body read: MAX_MESSAGES messages of MAX_MESSAGE_CHARS characters is the biggest request that can be
# valid, and JSON writes a character in at most 12 bytes (an emoji as two \uXXXX escapes; the official clients
# escape all non-ASCII), plus 64 KiB for the rest (roles, settings, stop strings). A body over it is refused
# before the rest is read, so a huge one costs neither the memory nor the parsing.
MAX_BODY_BYTES = MAX_MESSAGES * MAX_MESSAGE_CHARS * 12 + 2**16
MAX_PROMPT_CHARS = 20_000  # a /v1/completions prompt; the writer reads its end (chat/writer.py)
_DONE = object()


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self):
        from fastapi.responses import JSONResponse

        kind = {401: "authentication_error", 404: "invalid_request_error"}.get(self.status, "invalid_request_error")
        if self.status >= 500:
            kind = "server_error"
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


def _number(body: dict, name: str, low: float, high: float, integer: bool = False):
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ApiError(400, f"{name} must be {'an integer' if integer else 'a number'}", name)
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low:g} and {high:g}, got {value}", name)
    return value


def _text(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        if any(p.get("type") != "text" for p in content):
            raise ApiError(400, f"{where}: only text parts are understood (no images or audio)", "messages")
        if not all(isinstance(p.get("text", ""), str) for p in content):
            raise ApiError(400, f"{where}: a text part's text must be a string", "messages")
        return "".join(p.get("text", "") for p in content)
    raise ApiError(400, f"{where}.content must be text", "messages")


class Asked(NamedTuple):
    """A chat completion request, checked."""

    model: str
    history: list[dict]
    message: str
    settings: GenerationSettings
    stop: list[str]
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the token counts


def _include_usage(body: dict) -> bool:
    """stream_options.include_usage; `stream_options` must be an object (or absent, or null)."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise ApiError(400, 'stream_options must be an object, e.g. {"include_usage": true}', "stream_options")
    usage = options.get("include_usage")
    if usage is not None and not isinstance(usage, bool):
        raise ApiError(400, "stream_options.include_usage must be true or false", "stream_options")
    return bool(usage)


def parse_request(body) -> Asked:
    """The checked chat request (every field read here, before any model work), or ApiError."""
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", "messages")
    if len(messages) > MAX_MESSAGES:
        raise ApiError(
            400, f"at most {MAX_MESSAGES} messages per request (the model sees the last 8 turns)", "messages"
        )
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
            raise ApiError(400, f"messages[{i}] must have role system, user or assistant", "messages")
        text = _text(m.get("content"), f"messages[{i}]")
        if len(text) > MAX_MESSAGE_CHARS:
            raise ApiError(
                400, f"messages[{i}] has {len(text):,} characters; at most {MAX_MESSAGE_CHARS:,}", "messages"
            )
        if m["role"] in ("user", "assistant") and text.strip():  # no system prompt in this format
            turns.append({"role": m["role"], "content": text.strip()})
    if not turns or turns[-1]["role"] != "user":
        raise ApiError(400, "the last message with text must be the user's", "messages")
    settings, stop, stream = _generation(body)
    return Asked(model, turns[:-1], turns[-1]["content"], settings, stop, stream, _include_usage(body))


def _model(body) -> str:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required: one of GET /v1/models", "model")
    return model


def parse_completion(body) -> Asked:
    """A checked /v1/completions request (OpenAI's completions API: `prompt` is the opening a writer continues)."""
    model = _model(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(400, "prompt must be a non-empty string (one prompt per request)", "prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ApiError(400, f"prompt has {len(prompt):,} characters; at most {MAX_PROMPT_CHARS:,}", "prompt")
    for name in ("echo", "suffix", "logprobs", "best_of"):
        if body.get(name) not in (None, False, 1 if name == "best_of" else None):
            raise ApiError(400, f"{name} is not supported", name)
    settings, stop, stream = _generation(body)
    return Asked(model, [], prompt, settings, stop, stream, _include_usage(body))


def _generation(body: dict) -> tuple[GenerationSettings, list[str], bool]:
    """(sampling settings, stop strings, stream) of a chat or text completion request."""
    if body.get("n", 1) != 1:
        raise ApiError(400, "n must be 1: one reply per request", "n")
    for name in ("frequency_penalty", "presence_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise ApiError(
                400, f"{name} is not supported; pass repetition_penalty (1.0-2.0, default 1.2) instead", name
            )
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        max_tokens = _number({"max_tokens": max_tokens}, "max_tokens", 1, MAX_NEW_TOKENS_LIMIT, integer=True)
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, "stop must be a string or a list of up to 4 non-empty strings", "stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false", "stream")
    settings = GenerationSettings(
        max_new_tokens=max_tokens,
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        top_k=_number(body, "top_k", 0, 1000, integer=True),
        repetition_penalty=_number(body, "repetition_penalty", 1, 2),
        seed=_number(body, "seed", 0, 2**32 - 1, integer=True),
    )
    try:
        settings.check()
    except InputError as e:
        raise ApiError(400, str(e))
    return settings, stop, stream


async def read_json(request: Request):
    """The request's JSON body. Over MAX_BODY_BYTES it is a 413 as soon as that shows: from Content-Length before
    any of it is read, else (a chunked body) at the chunk that passes it, so at most one chunk more is held."""
    too_big = ApiError(
        413,
        f"the request body is over {MAX_BODY_BYTES:,} bytes "
        f"(at most {MAX_MESSAGES} messages of {MAX_MESSAGE_CHARS:,} characters)",
        code="request_too_large",
    )
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_big
    try:
        return json.loads(body)
    except RecursionError:  # json's parser recurses once per level: deep nesting is no ValueError
        raise ApiError(400, "the request body is not valid JSON: it is nested too deeply")
    except ValueError:  # UnicodeDecodeError too
        raise ApiError(400, "the request body is not valid JSON")


class _Reply:
    """One reply's text with `stop` applied: what may be sent so far, and whether a stop string ended it."""

    def __init__(self, stop: list[str]):
        self.stop, self.text, self.sent, self.stopped = stop, "", 0, False

    def add(self, piece: str, final: bool = False) -> str:
        self.text += piece
        cut = min((i for i in (self.text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = self.text[:cut], True
        # hold back a tail that could still grow into a stop string
        hold = 0 if final or self.stopped else max((len(s) - 1 for s in self.stop), default=0)
        upto = max(self.sent, len(self.text) - hold)
        out, self.sent = self.text[self.sent : upto], upto
        return out


def _check_key(request: Request, api_key: str | None) -> None:
    if not api_key:
        return
    given = request.headers.get("authorization", "")
    token = given[7:] if given.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(token.encode(), api_key.encode()):
        raise ApiError(401, "a valid API key is required: Authorization: Bearer KEY", code="invalid_api_key")


class _Models:
    """A task's checkpoints by name (chat: /v1/chat/completions; write: /v1/completions). A name not seen scans the
    folder again (a model trained since), at most once per RESCAN_AFTER_S: a client repeating an unknown name must
    not keep the server scanning."""

    def __init__(self, settings, task: str):
        from webui.store import ScanThrottle

        self.settings, self.task, self.throttle = settings, task, ScanThrottle()
        self.seen: dict | None = None  # the last scan's, replaced whole (requests run in threads)

    def scan(self) -> dict:
        from webui.store import catalogue

        self.seen = {c.label: c for c in catalogue(self.settings)[self.task]}
        return self.seen

    def find(self, name: str):
        models = self.seen
        if models is None or (name not in models and self.throttle.due()):  # the first lookup always scans
            models = self.scan()
        return models.get(name)


class _Completion:
    """One chat completion's answer: the whole reply as one JSON object, or a stream of chunks."""

    kind, prefix = "chat.completion", "chatcmpl"

    def __init__(self, name: str, stop: list[str], usage: dict):
        self.name, self.usage, self.reply = name, usage, _Reply(stop)
        self.id, self.created = f"{self.prefix}-{uuid.uuid4().hex}", int(time.time())

    @property
    def chunk_kind(self) -> str:
        return "chat.completion.chunk"

    def _head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.name}

    def finish(self) -> str:
        if self.reply.stopped:
            return "stop"
        usage = self.usage
        return "length" if usage.get("completion_tokens", 0) >= (usage.get("limit") or 10**9) else "stop"

    def counts(self) -> dict:
        prompt, done = self.usage.get("prompt_tokens", 0), self.usage.get("completion_tokens", 0)
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    def whole(self, text: str) -> dict:
        self.reply.add(text, final=True)
        choice = {"index": 0, "message": {"role": "assistant", "content": self.reply.text}, "finish_reason": None}
        choice["finish_reason"] = self.finish()
        return {**self._head("chat.completion"), "choices": [choice], "usage": self.counts()}

    def chunk(self, delta: dict, finish_reason=None, opening: bool = False, **extra) -> str:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
        data = {**self._head(self.chunk_kind), "choices": choices, **extra}
        return self.chunk_json(data)

    @staticmethod
    def chunk_json(data: dict) -> str:
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    async def events(self, request: Request, feed, first, want_usage: bool):
        reply = self.reply
        try:
            if opening := self.chunk({"role": "assistant", "content": ""}, opening=True):
                yield opening
            piece = first
            while piece is not _DONE and not reply.stopped:
                if text := reply.add(piece):
                    yield self.chunk({"content": text})
                if await request.is_disconnected():  # the client left: free its batch row now
                    return
                piece = await asyncio.to_thread(feed.next)
            if text := reply.add("", final=True):
                yield self.chunk({"content": text})
            yield self.chunk({}, self.finish())
            if want_usage:
                yield self.chunk_json({**self._head(self.chunk_kind), "choices": [], "usage": self.counts()})
            yield "data: [DONE]\n\n"
        finally:  # also when the server cancels this stream (a disconnect): no await may run here
            feed.close_soon()


class _TextCompletion(_Completion):
    """One text completion's answer (/v1/completions): the writer's continuation of the prompt."""

    kind, prefix = "text_completion", "cmpl"

    @property
    def chunk_kind(self) -> str:
        return "text_completion"

    def whole(self, text: str) -> dict:
        self.reply.add(text, final=True)
        choice = {"text": self.reply.text, "index": 0, "logprobs": None, "finish_reason": self.finish()}
        return {**self._head("text_completion"), "choices": [choice], "usage": self.counts()}

    def chunk(self, delta: dict, finish_reason=None, opening: bool = False, **extra) -> str:
        if opening:  # no role chunk in the completions API
            return ""
        choices = [{"text": delta.get("content", ""), "index": 0, "logprobs": None, "finish_reason": finish_reason}]
        return self.chunk_json({**self._head("text_completion"), "choices": choices, **extra})


async def _first_piece(store, models: _Models, name: str, history, message, gen, usage: dict):
    """(the reply's feed, its first piece): read before answering, so bad input is a 400, not a broken stream."""
    ckpt = await asyncio.to_thread(models.find, name)
    if ckpt is None:
        raise ApiError(404, f"the model {name!r} does not exist; GET /v1/models lists them", "model", "model_not_found")
    try:
        engine = await asyncio.to_thread(store.get, models.task, ckpt.path)
    except InputError as e:
        raise ApiError(503, f"the model failed to load: {e}", "model")
    feed = _Feed(_pieces(store, engine, history, message, gen, usage))
    try:
        return feed, await asyncio.to_thread(feed.next)
    except InputError as e:
        feed.close_soon()
        raise ApiError(400, str(e), "messages" if models.task == "chat" else "prompt")
    except BaseException:  # the client went away meanwhile
        feed.close_soon()
        raise


def mount_openai(app, settings, store, api_key: str | None = None) -> None:
    """Add `/v1/models`, `/v1/chat/completions` (chat models) and `/v1/completions` (writers) to `app` (Gradio's
    FastAPI app)."""
    from fastapi.responses import JSONResponse, StreamingResponse

    chats, writers = _Models(settings, "chat"), _Models(settings, "write")

    @app.get("/v1/models")
    def list_models(request: Request):
        try:
            _check_key(request, api_key)
        except ApiError as e:
            return e.response()
        labels = [*chats.scan(), *writers.scan()]
        data = [{"id": label, "object": "model", "created": 0, "owned_by": "local"} for label in labels]
        return JSONResponse({"object": "list", "data": data})

    async def answer(request: Request, parse, models: _Models, kind: type):
        usage: dict = {}
        try:
            _check_key(request, api_key)
            name, history, message, gen, stop, stream, want_usage = parse(await read_json(request))
            feed, first = await _first_piece(store, models, name, history, message, gen, usage)
        except ApiError as e:
            return e.response()
        completion = kind(name, stop, usage)
        if stream:
            events = completion.events(request, feed, first, want_usage)
            return StreamingResponse(events, media_type="text/event-stream")
        try:
            text = "" if first is _DONE else first
            text += "".join(await asyncio.to_thread(feed.rest))
        finally:
            feed.close_soon()
        return JSONResponse(completion.whole(text))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await answer(request, parse_request, chats, _Completion)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await answer(request, parse_completion, writers, _TextCompletion)


class _Feed:
    """A reply's pieces, read in worker threads one at a time. `close_soon` ends the reply from anywhere
    without waiting (a cancelled stream may not await): after any read in flight, the generator is closed,
    which frees the batcher's row and the store's gate (`_pieces`)."""

    def __init__(self, pieces):
        self.pieces, self.lock = pieces, threading.Lock()

    def next(self):
        with self.lock:
            return next(self.pieces, _DONE)

    def rest(self) -> list[str]:
        with self.lock:
            return list(self.pieces)

    def close_soon(self) -> None:
        def close():
            with self.lock:
                self.pieces.close()

        threading.Thread(target=close, name="close-reply", daemon=True).start()


def _pieces(store, engine, history, message, settings, usage):
    """The reply's text pieces, produced while the store lets models run (no load in between)."""
    with store.serving():
        yield from engine.stream(history, message, settings, usage=usage)
