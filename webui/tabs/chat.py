"""聊天 Chat: streamed multi-turn replies, with the picked checkpoint's sampling settings."""

from __future__ import annotations

import time

import gradio as gr

from chat.settings import MAX_MESSAGE_CHARS, MAX_PASTE_CHARS
from data.encoder import CHAT_SAMPLING
from webui.blocks import TabParts
from webui.compare import Compare
from webui.widgets import CheckedSlider as Slider

# Streamed replies reach the page at most this often: each update costs the server ~8 ms of CPU (Gradio's
# diff, JSON, SSE), as much as a batched decode step's share per token with 16 visitors on 2 cores.
UPDATE_EVERY_S = 0.2
MAX_KEPT_MESSAGES = 40  # chat history kept per visitor (the model reads the last 6 turns anyway)
MAX_KEPT_CHARS = 20_000
OPENERS = ["你好", "早上好", "在吗？", "周末去哪儿玩？", "我今天好累"]


def trim_history(turns: list) -> list:
    """At most MAX_KEPT_MESSAGES messages and MAX_KEPT_CHARS characters per visitor, oldest dropped first."""
    turns = turns[-MAX_KEPT_MESSAGES:]
    while turns and sum(len(str(t.get("content", ""))) if isinstance(t, dict) else 0 for t in turns) > MAX_KEPT_CHARS:
        turns = turns[2:] if len(turns) > 1 else []
    return turns


def slider_values(config) -> list[float]:
    """Slider positions (temperature, top-k, top-p, repetition penalty, max new tokens) for a
    checkpoint's GenerationConfig, clamped to the sliders' ranges; greedy configs get temperature 0."""
    d = CHAT_SAMPLING

    def clamp(v, lo, hi, default):
        return min(hi, max(lo, v if v is not None else default))

    temperature = clamp(config.temperature, 0, 2, d["temperature"]) if config.do_sample else 0
    return [
        temperature,
        int(clamp(config.top_k, 0, 50, d["top_k"])),
        clamp(config.top_p, 0.05, 1, d["top_p"]),
        clamp(config.repetition_penalty, 1, 2, d["repetition_penalty"]),
        int(clamp(config.max_new_tokens, 8, 256, d["max_new_tokens"])),
    ]


def _sliders() -> list:
    """The generation settings, starting at the chat defaults (a picked model's own replace them)."""
    d = CHAT_SAMPLING
    with gr.Accordion("生成设置 Generation settings", open=False):
        with gr.Row():
            sliders = [
                Slider(0, 2, value=d["temperature"], step=0.05, label="温度 temperature (0 = greedy)"),
                Slider(0, 50, value=d["top_k"], step=1, label="top-k (0 = off)"),
                Slider(0.05, 1, value=d["top_p"], step=0.05, label="top-p"),
                Slider(1, 2, value=d["repetition_penalty"], step=0.05, label="重复惩罚 repetition penalty"),
                Slider(8, 256, value=d["max_new_tokens"], step=8, label="最长回复 max new tokens"),
            ]
    return sliders


def _converse(ctx, name, message, turns, model, temperature, top_k, top_p, repetition_penalty, max_new_tokens):
    """Yields (shown, kept): the conversation as it streams, and what the next turn builds on."""
    from chat import GenerationSettings
    from data import InputError

    turns = trim_history(list(turns or []))
    engine = ctx.pick(name, model)
    settings = GenerationSettings(
        max_new_tokens=int(max_new_tokens),
        do_sample=float(temperature) > 0,  # the slider decides, also over a greedy generation_config.json
        temperature=float(temperature),
        top_k=int(top_k),
        top_p=float(top_p),
        repetition_penalty=float(repetition_penalty),
    )
    shown = turns + [{"role": "user", "content": message.strip()}, {"role": "assistant", "content": ""}]
    yield shown, turns
    try:
        with ctx.store.serving():
            sent = 0.0
            for piece in engine.stream(turns, message, settings):
                shown[-1] = {"role": "assistant", "content": shown[-1]["content"] + piece}
                if time.monotonic() - sent >= UPDATE_EVERY_S:  # the first piece at once, then a few per second
                    sent = time.monotonic()
                    yield shown, gr.skip()  # the kept history changes once, at the end
    except InputError as e:
        raise gr.Error(str(e), print_exception=False)
    if not shown[-1]["content"]:
        shown[-1] = {"role": "assistant", "content": "……"}
    yield shown, shown


def build(ctx, task) -> TabParts:
    name = task.name
    picker, about = ctx.header(task)
    compare = Compare(ctx, task)
    with gr.Row():
        with gr.Column():
            chatbot = gr.Chatbot(label="对话 Conversation", height=380, buttons=["copy"], elem_id="chatbot")
        with compare.side():
            chatbot_b = gr.Chatbot(label="对比 Compared", height=296, buttons=["copy"], elem_id="chatbot-b")
    history = gr.State([])  # what the model sees; one per browser session
    history_b = gr.State([])  # Compare: the second model's own conversation
    with gr.Row():
        message = gr.Textbox(
            placeholder="说点什么… Say something…",
            show_label=False,
            max_length=MAX_PASTE_CHARS,  # longer pastes reach the server, which says what it sends
            scale=5,
            autofocus=True,
            elem_id="chat-input",
        )
        send = gr.Button("发送 Send", variant="primary", scale=1, elem_id="chat-send")
        clear = gr.Button("清空 Clear", scale=1, elem_id="chat-clear")
    sliders = _sliders()
    examples = gr.Examples([[x] for x in OPENERS], inputs=[message], label="试试 Try")

    def respond(message, turns, model, temperature, top_k, top_p, repetition_penalty, max_new_tokens):
        sampling = (temperature, top_k, top_p, repetition_penalty, max_new_tokens)
        if not (message or "").strip():
            gr.Warning("请先输入内容 Please type a message first.")
            yield turns or [], turns or [], message
            return
        ctx.too_long(message, MAX_PASTE_CHARS, "消息 Message ")
        if len(message.strip()) > MAX_MESSAGE_CHARS:  # the model reads the end of a long message: say so
            gr.Warning(
                f"消息过长，只发送了最后 {MAX_MESSAGE_CHARS:,} 个字（共 {len(message.strip()):,} 字）。"
                f"Message too long: only its last {MAX_MESSAGE_CHARS:,} of {len(message.strip()):,} characters "
                "were sent."
            )
            message = message.strip()[-MAX_MESSAGE_CHARS:]
        for shown, kept in _converse(ctx, name, message, turns, model, *sampling):
            yield shown, kept, ""

    def respond_enter(message, turns, model, *sampling):
        """Enter in the box. While there is no model (a demo still building) the Send button is disabled;
        Enter then says why in a notice and keeps the message, instead of a red "Error" over the chat."""
        try:
            ctx.pick(name, model)
        except gr.Error as e:
            gr.Warning(e.message)
            yield turns or [], turns or [], message
            return
        yield from respond(message, turns, model, *sampling)

    def respond_compare(message, turns, temperature, top_k, top_p, repetition_penalty, max_new_tokens, model):
        """The second model's reply to the same message while Compare is on, streamed beside the first
        (its own event, so both sides stream at once, through the batcher; with --no-batching they take turns;
        the first side reports bad input)."""
        message = message.strip()[-MAX_MESSAGE_CHARS:]  # as the first side sends it (which says so)
        sampling = (temperature, top_k, top_p, repetition_penalty, max_new_tokens)
        yield from _converse(ctx, name, message, turns, model, *sampling)

    io = dict(fn=respond, inputs=[message, history, picker, *sliders], outputs=[chatbot, history, message])
    io_b = dict(
        fn=compare.second(
            respond_compare, lambda message, _: 0 < len((message or "").strip()) <= MAX_PASTE_CHARS, 2, 2
        ),
        inputs=[message, history_b, *compare.inputs, *sliders],
        outputs=[chatbot_b, history_b],
    )
    message.submit(**{**io, "fn": respond_enter}, api_visibility="private")
    message.submit(**io_b, api_visibility="private")
    send.click(**io, api_name="chat")
    send.click(**io_b, api_name="chat_compare")
    clear.click(lambda: ([], []), outputs=[chatbot, history], api_name="clear", queue=False)
    clear.click(lambda: ([], []), outputs=[chatbot_b, history_b], api_name="clear_compare", queue=False)
    picker.change(lambda: ([], []), outputs=[chatbot, history], api_visibility="private", queue=False)
    compare.picker.change(lambda: ([], []), outputs=[chatbot_b, history_b], api_visibility="private", queue=False)
    compare.wire(picker)

    def follow(label):
        """The sliders set to the picked model's generation_config.json (it has loaded)."""
        ckpt = ctx.by_key[name][label]
        return dict(zip(sliders, slider_values(ctx.store.get(name, ckpt.path).defaults)))

    return TabParts(picker, about, send, examples.dataset, [[x] for x in OPENERS], follow, sliders)
