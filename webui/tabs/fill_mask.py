"""完形填空 Fill-Mask: the candidates for each run of [MASK] in a sentence."""

from __future__ import annotations

import os

import gradio as gr

from chat.settings import MAX_SENTENCE_CHARS
from chat.tasks import SAMPLES
from webui.blocks import TabParts
from webui.compare import Compare
from webui.widgets import CheckedSlider as Slider


def sample_lines(name: str, limit: int) -> list[list[str]]:
    """Tab-separated rows of a sample file (comments and blank lines skipped); [] when it is missing."""
    rows = []
    try:
        with open(os.path.join(SAMPLES, name), encoding="utf-8") as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    rows.append(line.rstrip("\n").split("\t"))
    except OSError:
        pass
    return rows[:limit]


def fill_text(text: str, slots, best: list[str]) -> str:
    """The sentence with each run of masks replaced (in bold) by its top candidate."""
    from data.corpus import MASK, normalize_masks

    parts = normalize_masks(text.strip()).split(MASK)
    out, k = [parts[0]], 0
    for slot, word in zip(slots, best):
        out += [
            f"**{word}**",
            *parts[k + 1 : k + slot.length],
            parts[k + slot.length],
        ]  # the run's inner parts are empty
        k += slot.length
    return "".join(out)


def build(ctx, task) -> TabParts:
    name = task.name
    picker, about = ctx.header(task)
    masked = gr.Textbox(
        label="带 [MASK] 的句子 Text with [MASK]",
        placeholder="例如 e.g. 三国人物诸[MASK][MASK]懂得治水。",
        max_length=MAX_SENTENCE_CHARS,
        lines=2,
        elem_id="cloze-input",
    )
    with gr.Row():
        top_k = Slider(1, 20, value=5, step=1, label="候选数 top-k")
        joint = gr.Checkbox(value=True, label="连续 [MASK] 按整词填 Fill consecutive masks as one word")
        fill = gr.Button("填空 Fill", variant="primary", elem_id="cloze-fill")
    compare = Compare(ctx, task)
    headers = ["空位 slot", "候选 candidate", "概率 probability"]
    with gr.Row():
        with gr.Column():
            filled = gr.Markdown(elem_id="cloze-filled")
            candidates = gr.Dataframe(headers=headers, label="候选 Candidates", interactive=False, wrap=True)
        with compare.side():
            filled_b = gr.Markdown(elem_id="cloze-filled-b")
            candidates_b = gr.Dataframe(headers=headers, label="候选 Candidates", interactive=False, wrap=True)
    # the sample facts asked in other words (what the demo model learns); a model of yours gets prompts of
    # its own quiz instead (Task.examples). A fact model knows nothing of the weather: "今天天气很[MASK]。"
    # read as broken (issue #38).
    samples = [[r[0]] for r in sample_lines("cloze_prompts.txt", 8)]
    examples = gr.Examples(
        samples, inputs=[masked], label="试试（所选模型学过的事实）Try: facts the picked model learned"
    )

    def answer(text, model, top_k, joint):
        predictor = ctx.pick(name, model)
        # no [MASK], more than 10, longer than the model reads: one sentence, also for API clients
        slots = ctx.run(predictor.predict, text, top_k=int(top_k), joint=bool(joint))
        rows, best = [], []
        for n, slot in enumerate(slots, 1):
            best.append(slot.candidates[0].text if slot.candidates else "?")
            rows += [[n, c.text, round(c.probability, 4)] for c in slot.candidates]
        return "**最可能 Most likely:** " + fill_text(text, slots, best), rows

    def fill_mask(text, model, top_k, joint):
        if not (text or "").strip():
            raise gr.Error("请输入带 [MASK] 的句子 Please type a sentence with [MASK].", print_exception=False)
        ctx.too_long(text, MAX_SENTENCE_CHARS, "句子 Text ")
        return answer(text, model, top_k, joint)

    def valid(text):
        return bool((text or "").strip()) and len(text) <= MAX_SENTENCE_CHARS

    io = dict(fn=fill_mask, inputs=[masked, picker, top_k, joint], outputs=[filled, candidates])
    io_b = dict(
        fn=compare.second(lambda text, top_k, joint, model: answer(text, model, top_k, joint), valid, 2),
        inputs=[masked, *compare.inputs, top_k, joint],
        outputs=[filled_b, candidates_b],
    )
    fill.click(**io, api_name="fill_mask")
    fill.click(**io_b, api_name="fill_mask_compare")
    masked.submit(**io, api_visibility="private")
    masked.submit(**io_b, api_visibility="private")
    compare.wire(picker)
    return TabParts(picker, about, fill, examples.dataset, samples)
