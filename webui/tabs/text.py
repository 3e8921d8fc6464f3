"""The tab of a task without a tab module of its own: a text box in, the predictor's
`predict(text) -> str` out (Markdown). API name: the task's name."""

from __future__ import annotations

import gradio as gr

from chat.settings import MAX_SENTENCE_CHARS
from webui.blocks import TabParts


def build(ctx, task) -> TabParts:
    name = task.name
    picker, about = ctx.header(task)
    text = gr.Textbox(label="输入 Input", max_length=MAX_SENTENCE_CHARS, lines=2, elem_id=f"{name}-input")
    go = gr.Button("运行 Run", variant="primary", elem_id=f"{name}-run")
    answer = gr.Markdown(elem_id=f"{name}-output")

    def predict(value, model):
        if not (value or "").strip():
            raise gr.Error("请输入内容 Please type something first.", print_exception=False)
        ctx.too_long(value, MAX_SENTENCE_CHARS, "输入 Input ")
        return str(ctx.run(ctx.pick(name, model).predict, value))

    go.click(predict, inputs=[text, picker], outputs=[answer], api_name=name)
    text.submit(predict, inputs=[text, picker], outputs=[answer], api_visibility="private")
    return TabParts(picker, about, go)
