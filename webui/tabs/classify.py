"""文本分类 Classify: a text in, its most likely labels (the user's own) with probabilities out; a file of texts in,
a CSV of labels out."""

from __future__ import annotations

import os
import tempfile

import gradio as gr

from chat.settings import MAX_SENTENCE_CHARS
from webui.blocks import TabParts
from webui.compare import Compare

TOP = 5


def _samples(task) -> list[list[str]]:
    """Two texts of each class of the sample data (the demo model's own; a model of yours gets its dev texts)."""
    from data import InputError
    from data.labelled import read_labelled

    training = task.training
    try:
        found = read_labelled(training.path(training.sample)) if training and training.sample else None
    except InputError:
        found = None
    picked: dict = {}
    for text, label in found.rows if found else []:
        if len(picked.setdefault(label, [])) < 2:
            picked[label].append(text)
    return [[text] for pair in zip(*picked.values()) for text in pair][:8]


def build(ctx, task) -> TabParts:
    name = task.name
    picker, about = ctx.header(task)
    text = gr.Textbox(
        label="文本 Text", max_length=MAX_SENTENCE_CHARS, lines=3, elem_id="classify-input", placeholder="输入一段文字"
    )
    go = gr.Button("分类 Classify", variant="primary", elem_id="classify-run")
    compare = Compare(ctx, task)
    with gr.Row():
        with gr.Column():
            labels = gr.Label(label="类别 Labels", num_top_classes=TOP, elem_id="classify-labels")
        with compare.side():
            labels_b = gr.Label(label="类别 Labels", num_top_classes=TOP, elem_id="classify-labels-b")
    samples = _samples(task)
    examples = gr.Examples(samples, inputs=[text], label="试试 Try")
    with gr.Accordion("批量 A file of texts → CSV", open=False):
        upload = gr.File(
            label="每行一段文字，或带 text/文本/评论 列的 CSV · one text per line, or a CSV with a text column"
        )
        run_file = gr.Button("全部分类 Classify them all", elem_id="classify-file-run")
        result_file = gr.File(label="结果 Labels (CSV)", interactive=False, elem_id="classify-file-out")

    def answer(value, model):
        result = ctx.run(ctx.pick(name, model).predict, value)
        return result["probabilities"]

    def classify(value, model):
        if not (value or "").strip():
            raise gr.Error("请输入内容 Please type a text first.", print_exception=False)
        ctx.too_long(value, MAX_SENTENCE_CHARS, "文本 Text ")
        return answer(value, model)

    def classify_file(file, model):
        if not file:
            raise gr.Error("请先上传文件 Upload a file first.", print_exception=False)
        source = file if isinstance(file, str) else getattr(file, "name", str(file))
        out = os.path.join(tempfile.mkdtemp(prefix="classify-"), os.path.splitext(os.path.basename(source))[0] + ".csv")
        ctx.run_aside(ctx.pick(name, model).predict_file, source, out)
        return out

    def valid(value):
        return bool((value or "").strip()) and len(value) <= MAX_SENTENCE_CHARS

    io = dict(fn=classify, inputs=[text, picker], outputs=[labels])
    io_b = dict(fn=compare.second(answer, valid, 1), inputs=[text, *compare.inputs], outputs=[labels_b])
    go.click(**io, api_name=name)
    text.submit(**io, api_visibility="private")
    go.click(**io_b, api_name=f"{name}_compare")
    text.submit(**io_b, api_visibility="private")
    run_file.click(classify_file, inputs=[upload, picker], outputs=[result_file], api_name=f"{name}_file")
    compare.wire(picker)
    return TabParts(picker, about, go, examples.dataset, samples)
