"""续写 Write: an opening in, the writer's continuation streamed out; 继续 Continue writes on from the whole text."""

from __future__ import annotations

import time

import gradio as gr

from webui.blocks import TabParts
from webui.compare import Compare
from webui.tabs.chat import UPDATE_EVERY_S, slider_values
from webui.widgets import CheckedSlider as Slider

MAX_TEXT_CHARS = 20_000  # the text box; the writer reads the end of it (chat/writer.py MAX_OPENING_CHARS)
OPENINGS = ["那天早上，", "第一章　", "雨下了整整一夜，"]
# the sliders' defaults before a model is picked (a picked model's generation_config.json replaces them)
DEFAULTS = dict(temperature=0.8, top_k=40, top_p=0.92, repetition_penalty=1.15, max_new_tokens=120)


def _sliders() -> list:
    d = DEFAULTS
    with gr.Accordion("生成设置 Generation settings", open=False):
        with gr.Row():
            return [
                Slider(0, 2, value=d["temperature"], step=0.05, label="温度 temperature (0 = greedy)"),
                Slider(0, 50, value=d["top_k"], step=1, label="top-k (0 = off)"),
                Slider(0.05, 1, value=d["top_p"], step=0.05, label="top-p"),
                Slider(1, 2, value=d["repetition_penalty"], step=0.05, label="重复惩罚 repetition penalty"),
                Slider(8, 256, value=d["max_new_tokens"], step=8, label="长度 new tokens"),
            ]


def _write(ctx, name, opening, model, temperature, top_k, top_p, repetition_penalty, max_new_tokens):
    """Yields the opening with its continuation as it is written."""
    from chat import GenerationSettings
    from data import InputError

    engine = ctx.pick(name, model)
    settings = GenerationSettings(
        max_new_tokens=int(max_new_tokens),
        do_sample=float(temperature) > 0,
        temperature=float(temperature),
        top_k=int(top_k),
        top_p=float(top_p),
        repetition_penalty=float(repetition_penalty),
    )
    text, sent = opening, 0.0
    try:
        with ctx.store.serving():
            for piece in engine.stream([], opening, settings):
                text += piece
                if time.monotonic() - sent >= UPDATE_EVERY_S:
                    sent = time.monotonic()
                    yield text
    except InputError as e:
        raise gr.Error(str(e), print_exception=False)
    yield text


def build(ctx, task) -> TabParts:
    name = task.name
    picker, about = ctx.header(task)
    compare = Compare(ctx, task)
    opening = gr.Textbox(
        label="开头 Opening", lines=2, max_length=MAX_TEXT_CHARS, placeholder="写一个开头… Type an opening…"
    )
    with gr.Row():
        go = gr.Button("续写 Write", variant="primary", elem_id="write-run")
        more = gr.Button("继续 Continue", elem_id="write-more")
    with gr.Row():
        with gr.Column():
            written = gr.Textbox(label="续写 Written", lines=12, max_length=MAX_TEXT_CHARS, elem_id="write-output")
        with compare.side():
            written_b = gr.Textbox(label="对比 Compared", lines=12, interactive=False, elem_id="write-output-b")
    sliders = _sliders()
    examples = gr.Examples([[x] for x in OPENINGS], inputs=[opening], label="试试 Try")

    def write(text, model, *sampling):
        if not (text or "").strip():
            raise gr.Error("请先写一个开头 Type an opening first.", print_exception=False)
        ctx.too_long(text, MAX_TEXT_CHARS, "开头 Opening ")
        yield from _write(ctx, name, text.strip(), model, *sampling)

    def write_more(text, model, *sampling):
        """继续: the whole text so far is the next opening."""
        if not (text or "").strip():
            raise gr.Error("还没有可以继续的文字 Nothing to continue yet: write first.", print_exception=False)
        yield from _write(ctx, name, text[-MAX_TEXT_CHARS:], model, *sampling)

    def write_second(text, temperature, top_k, top_p, repetition_penalty, max_new_tokens, model):
        yield from _write(ctx, name, text.strip(), model, temperature, top_k, top_p, repetition_penalty, max_new_tokens)

    def valid(text):
        return bool((text or "").strip()) and len(text) <= MAX_TEXT_CHARS

    go.click(write, [opening, picker, *sliders], [written], api_name=name)
    more.click(write_more, [written, picker, *sliders], [written], api_name=f"{name}_more")
    go.click(
        compare.second(write_second, valid, 1),
        [opening, *compare.inputs, *sliders],
        [written_b],
        api_name=f"{name}_compare",
    )
    compare.wire(picker)

    def follow(label):
        ckpt = ctx.by_key[name][label]
        return dict(zip(sliders, slider_values(ctx.store.get(name, ckpt.path).defaults)))

    return TabParts(picker, about, go, examples.dataset, [[x] for x in OPENINGS], follow, sliders)
