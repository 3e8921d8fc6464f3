"""对比 Compare: a second model beside the first, answering the same input. One component for every tab.

    compare = Compare(ctx, task)          # the checkbox
    with gr.Row():
        with gr.Column():
            ...                            # the first model's outputs
        with compare.side():              # the second picker and its about line, hidden while off
            ...                            # the second model's outputs
    button.click(compare.second(answer, check, 2), inputs=[text, *compare.inputs, *settings], outputs=[...])
    compare.wire(picker)                   # the second picker follows the first

The second picker defaults to the first model's base (before vs after) when that base loads here. A
model trained from scratch has no "before": the second picker then starts empty and says so, instead
of an unrelated model (issue #38).
"""

from __future__ import annotations

import contextlib
import inspect
import os
from typing import Callable

import gradio as gr

from webui.store import about, base_of
from webui.widgets import ModelPicker

ABOUT_HEIGHT = 84  # px: the smallest height of a model's about line (longer ones grow, short ones keep the layout)


def scratch_note(label: str) -> str:
    return (
        f"「{label}」是从零训练的，没有“训练前”的版本；可在上面任选一个模型对比。"
        f"{label} was trained from scratch, so there is no 'before' model: pick any model above to compare."
    )


def second_choices(ctx, task: str, first, current=None) -> tuple[list[str], str | None]:
    """(choices, default) of the second picker: the task's models plus the first model's base when it
    loads here; the default is that base, else (first model from scratch) none, else the current
    choice, else another model."""
    labels = [c.label for c in ctx.rescan()[task]]
    ckpt = ctx.by_key[task].get(first or "")
    base = base_of(ckpt) if ckpt is not None else None
    if base is not None:
        same = next((c for c in ctx.models[task] if os.path.abspath(c.path) == os.path.abspath(base.path)), None)
        if same is None:
            ctx.bases[task][base.label] = base
            labels.insert(0, base.label)
        return labels, (same or base).label
    if current in labels and current != first:
        return labels, current
    if ckpt is not None and ckpt.report.get("base_model_source") == "scratch":
        return labels, None
    return labels, next((x for x in labels if x != first), first)


class Compare:
    def __init__(self, ctx, task):
        self.ctx, self.task = ctx, task.name
        self.toggle = gr.Checkbox(
            value=False,
            label="对比 Compare: 两个模型并排回答 two models side by side",
            info="默认对比微调前的基座（若可加载）The base before fine-tuning, when it loads here",
            elem_id=f"{task.name}-compare",
        )
        self.column = self.picker = self.about = None

    @contextlib.contextmanager
    def side(self):
        """The second column (hidden while Compare is off): its picker and about line, then what the tab adds."""
        with gr.Column(visible=False) as self.column:
            self.picker = ModelPicker(
                choices=[], value=None, label="对比模型 Compared with", elem_id=f"{self.task}-model-b", interactive=True
            )
            self.about = gr.Markdown(
                elem_classes="model-about", min_height=ABOUT_HEIGHT, elem_id=f"{self.task}-about-b"
            )
            yield self.column

    def second(self, answer: Callable, valid: Callable[..., bool], outputs: int, leading: int = 1) -> Callable:
        """The second side's handler. Its inputs are the tab's first `leading` inputs (what is asked), then
        the toggle, then the second picker, then the rest (settings): the public API order of every
        `*_compare` endpoint. It calls `answer(*leading, *rest, model)` while Compare is on, a model is
        picked and `valid(*leading)` holds; otherwise its `outputs` stay as they are (the first side
        reports bad input)."""

        unchanged = gr.skip() if outputs == 1 else (gr.skip(),) * outputs  # one output is a value, not a tuple

        def split(args):
            asked, (on, model), rest = args[:leading], args[leading : leading + 2], args[leading + 2 :]
            return (asked, rest, model) if on and model and valid(*asked) else None

        if inspect.isgeneratorfunction(answer):  # a streamed answer (chat): Gradio streams generator functions

            def handler(*args):
                parts = split(args)
                if parts is None:
                    yield unchanged
                    return
                asked, rest, model = parts
                yield from answer(*asked, *rest, model)

        else:

            def handler(*args):
                parts = split(args)
                if parts is None:
                    return unchanged
                asked, rest, model = parts
                return answer(*asked, *rest, model)

        # the endpoint's parameter names (its API page, gradio_client's keywords) are answer's, in input order
        params = list(inspect.signature(answer).parameters.values())
        on = inspect.Parameter("on", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        handler.__signature__ = inspect.Signature([*params[:leading], on, params[-1], *params[leading:-1]])
        return handler

    @property
    def inputs(self) -> list:
        return [self.toggle, self.picker]

    def choices(self, first, current=None) -> tuple[list[str], str | None]:
        return second_choices(self.ctx, self.task, first, current)

    def about_line(self, label, first=None) -> str:
        """The second model's about line; with none picked, why (the first model has no "before")."""
        ctx = self.ctx
        ckpt = ctx.by_key[self.task].get(label or "") or ctx.bases[self.task].get(label or "")
        if ckpt is not None:
            return about(ckpt, self.task)
        first_ckpt = ctx.by_key[self.task].get(first or "")
        scratch = first_ckpt is not None and first_ckpt.report.get("base_model_source") == "scratch"
        return scratch_note(first) if scratch else ""

    def wire(self, first) -> None:
        """Show the second column while Compare is on; set the second picker when it turns on and when the
        first model changes."""

        def choose(on, a, b):
            if not on:
                return gr.update(visible=False), gr.update(), gr.update()
            labels, value = self.choices(a, b)
            return gr.update(visible=True), gr.update(choices=labels, value=value), self.about_line(value, a)

        quiet = dict(api_visibility="private", show_progress="hidden")
        outputs = [self.column, self.picker, self.about]
        self.toggle.change(choose, inputs=[self.toggle, first, self.picker], outputs=outputs, **quiet)
        first.change(choose, inputs=[self.toggle, first, self.picker], outputs=outputs, **quiet)
        self.picker.change(self.about_line, inputs=[self.picker, first], outputs=[self.about], **quiet)
