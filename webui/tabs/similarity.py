"""语义相似度 Similarity: do two sentences mean the same? (or a 0-5 score for a regression model)"""

from __future__ import annotations

import gradio as gr

from chat.settings import MAX_SENTENCE_CHARS
from webui.blocks import TabParts
from webui.compare import Compare
from webui.tabs.fill_mask import sample_lines

# text and CSS (webui.blocks.CSS), not emoji: Debian's Chromium without an emoji font showed empty boxes
VERDICT_SAME = '<span class="verdict verdict-same">相同 Same meaning</span>'
VERDICT_DIFFERENT = '<span class="verdict verdict-different">不同 Different meaning</span>'
NAMES = {"0": "不同 different", "1": "相同 same"}


def build(ctx, task) -> TabParts:
    name = task.name
    picker, about = ctx.header(task)
    with gr.Row():
        first = gr.Textbox(label="句子一 Sentence 1", max_length=MAX_SENTENCE_CHARS, elem_id="sim-first")
        second_text = gr.Textbox(label="句子二 Sentence 2", max_length=MAX_SENTENCE_CHARS, elem_id="sim-second")
    compare_button = gr.Button("比较 Compare", variant="primary", elem_id="sim-compare")
    compare = Compare(ctx, task)
    with gr.Row():
        with gr.Column():
            verdict = gr.Markdown(elem_id="sim-verdict")
            probabilities = gr.Label(label="概率 Probabilities", num_top_classes=3)
        with compare.side():
            verdict_b = gr.Markdown(elem_id="sim-verdict-b")
            probabilities_b = gr.Label(label="概率 Probabilities", num_top_classes=3)
    rows = sample_lines("pairs.tsv", 1000)
    same, different = ([r[:2] for r in rows if len(r) > 2 and r[2] == label][:4] for label in ("1", "0"))
    samples = [x for pair in zip(same, different) for x in pair]  # a model of yours: pairs of its own data
    examples = gr.Examples(
        samples, inputs=[first, second_text], label="试试（含字面相近但意思不同的句子）Try, near-misses included"
    )

    def answer(sentence1, sentence2, model):
        judge = ctx.pick(name, model)
        result = ctx.run(judge.score, sentence1, sentence2)
        if "score" in result:
            return f"**相似度 Similarity: {result['score']:.2f} / 5**", {
                "score / 5": max(0.0, min(1.0, result["score"] / 5))
            }
        probs = {NAMES.get(k, k): v for k, v in result["probabilities"].items()}
        if judge.labels != ["0", "1"]:
            return f"**{result['label']}**", probs
        # one scale for the verdict and the chart: the tuned threshold moved to 0.5 (issue #38)
        same = result["decision_probability"]
        text = VERDICT_SAME if result["label"] == "1" else VERDICT_DIFFERENT
        line = f"{text} · p(相同 same) = {same:.2f}"
        if abs(result["threshold"] - 0.5) > 0.005:
            line += (
                f"<br><small>按开发集调好的阈值 {result['threshold']:.2f} 换算，0.5 以上即“相同”"
                f" · rescaled so that the dev-tuned threshold {result['threshold']:.2f} sits at 0.5"
                f"（模型原始输出 raw p = {result['probability']:.2f}）</small>"
            )
        return line, {NAMES["1"]: same, NAMES["0"]: round(1 - same, 4)}

    def similarity(sentence1, sentence2, model):
        if not (sentence1 or "").strip() or not (sentence2 or "").strip():
            raise gr.Error("请输入两个句子 Please type both sentences.", print_exception=False)
        ctx.too_long(sentence1, MAX_SENTENCE_CHARS, "句子一 Sentence 1 ")
        ctx.too_long(sentence2, MAX_SENTENCE_CHARS, "句子二 Sentence 2 ")
        return answer(sentence1, sentence2, model)

    def valid(*texts):
        return all((t or "").strip() for t in texts) and max(len(t or "") for t in texts) <= MAX_SENTENCE_CHARS

    io = dict(fn=similarity, inputs=[first, second_text, picker], outputs=[verdict, probabilities])
    io_b = dict(
        fn=compare.second(answer, valid, 2, leading=2),
        inputs=[first, second_text, *compare.inputs],
        outputs=[verdict_b, probabilities_b],
    )
    compare_button.click(**io, api_name="similarity")
    second_text.submit(**io, api_visibility="private")
    compare_button.click(**io_b, api_name="similarity_compare")
    second_text.submit(**io_b, api_visibility="private")
    compare.wire(picker)
    return TabParts(picker, about, compare_button, examples.dataset, samples)
