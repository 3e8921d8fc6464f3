"""The page: a header, then one tab per registered task (chat.tasks), each built by its tab module.

`build_demo()` returns the `gr.Blocks`. It lists checkpoint folders but loads no model. What every
tab needs (its model picker and about line, loading the picked model, input limits, the demo
build's progress) is in `TabContext`; a tab module's `build(ctx, task)` lays out its own inputs
and handlers and returns `TabParts`: its picker and the handler that refreshes the tab when the
picked model changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from chat.settings import MAX_MESSAGE_CHARS  # noqa: F401 (what the chat model reads of a message)
from chat.tasks import TASKS, Task
from webui.demos import DEMO_PREFIX, DemoBuilder
from webui.settings import Settings, predictor_options
from webui.store import DEMO_SUFFIX, ModelStore, about, base_of, catalogue

# Limits enforced on the server for every request (the browser's boxes refuse longer input first,
# but API clients skip the browser): a 5-million-character message grew the server by 2 GB.
MAX_PASTE_CHARS = 20_000  # a longer chat message is refused; up to this, its end is sent, with a notice
MAX_SENTENCE_CHARS = 1000
ABOUT_HEIGHT = 84  # px: the model line keeps its height when the picked model changes (the chat box stayed put)
MAX_UPLOAD = "1mb"  # the app has no upload box; Gradio's upload route still exists, so keep it small
CSS = """
.verdict { display: inline-block; padding: 1px 10px; border-radius: 6px; font-weight: 600; }
.verdict-same { background: #dcfce7; color: #166534; }
.verdict-different { background: #fee2e2; color: #991b1b; }
.model-about { overflow-y: auto; }
"""
# Closes the toasts of the tab you leave (a Fill-Mask warning stayed on over the next tab).
CLOSE_TOASTS_JS = "() => document.querySelectorAll('[data-testid=\"toast-close\"]').forEach(b => b.click())"
SERVE_OPTIONS = dict(show_error=False, footer_links=["api", "gradio"], max_file_size=MAX_UPLOAD, css=CSS)


@dataclass
class TabParts:
    picker: object  # the tab's model dropdown
    # refresh(label) -> updates for `outputs` (the about line first, then the tab's own), after the
    # picked model changes, the page loads, or its demo model becomes ready
    refresh: Callable
    outputs: list


class TabContext:
    """What every tab shares: the model catalogue (rescanned on page load), the store, the demo builds."""

    def __init__(self, settings: Settings, store: ModelStore, builder: DemoBuilder | None):
        self.settings, self.store, self.builder = settings, store, builder
        self.models = catalogue(settings)
        self.by_key = {task: {c.label: c for c in items} for task, items in self.models.items()}
        self.bases: dict[str, dict] = {task: {} for task in self.models}  # Compare's "基座 base: ..." entries

    def rescan(self):
        fresh = catalogue(self.settings)
        self.models.update(fresh)
        for t, items in fresh.items():
            self.by_key[t] = {c.label: c for c in items}
        return fresh

    def building(self, task: str) -> list[str]:
        """The picker entry of a demo model still being built (none when there is no build, or it failed)."""
        build = self.builder.status(task) if self.builder is not None else None
        return [DEMO_PREFIX + task + DEMO_SUFFIX] if build is not None and build.state != "failed" else []

    def no_model(self, task: str) -> str:
        """What a tab without a model says: its demo build's progress, else how to train one."""
        return (self.builder.message(task) if self.builder else None) or about(None, task)

    def header(self, task: Task):
        """The model picker and the about line of a tab, side by side."""
        import gradio as gr

        from webui.widgets import ModelPicker

        items = self.models[task.name]
        names = [c.label for c in items] or self.building(
            task.name
        )  # a demo being built: API clients get it as the default
        with gr.Row():
            picker = ModelPicker(
                choices=names,
                value=names[0] if names else None,
                label="模型 Model",
                interactive=len(names) > 1,
                scale=1,
                elem_id=f"{task.name}-model",
            )
            line = about(items[0], task.name) if items else self.no_model(task.name)
            about_md = gr.Markdown(line, elem_id=f"{task.name}-about", elem_classes="model-about", height=ABOUT_HEIGHT)
        return picker, about_md

    @staticmethod
    def too_long(text, limit: int, what: str) -> None:
        import gradio as gr

        if len(text or "") > limit:
            raise gr.Error(
                f"{what}太长 too long: {len(text):,} 字 characters, 最多 at most {limit:,}", print_exception=False
            )

    def pick(self, task: str, label: str | None):
        """The loaded predictor of the picked model, or a gr.Error with the reason."""
        import gradio as gr

        from data import InputError

        ckpt = self.by_key[task].get(label or "") or self.bases[task].get(label or "")
        if ckpt is None and label:  # trained after the start? (API clients skip the page load that rescans)
            self.rescan()
            ckpt = self.by_key[task].get(label)
        if ckpt is None:
            raise gr.Error(
                self.no_model(task) if not self.by_key[task] else "没有这个模型 Unknown model; reload the page.",
                print_exception=False,
            )
        try:
            return self.store.get(task, ckpt.path)
        except InputError as e:
            raise gr.Error(f"模型加载失败 The model failed to load: {e}", print_exception=False)

    def run(self, fn, *args, **kwargs):
        """Run a model call while no model loads, its InputError shown as the error."""
        import gradio as gr

        from data import InputError

        try:
            with self.store.serving():
                return fn(*args, **kwargs)
        except InputError as e:  # the reason, also for API clients
            raise gr.Error(str(e), print_exception=False)

    def status(self, task: str, label):
        """(about line, update for the tab's action button) after trying to load the picked model."""
        import gradio as gr

        from data import InputError

        ckpt = self.by_key[task].get(label or "")
        if ckpt is None:
            return self.no_model(task), gr.update(interactive=False)
        try:
            self.store.get(task, ckpt.path)
        except InputError as e:
            return f"⚠ 模型加载失败，此页停用 This tab is off: {e}", gr.update(interactive=False)
        return about(ckpt, task), gr.update(interactive=True)

    def picker_update(self, task: str, label, fresh=None):
        import gradio as gr

        fresh = fresh or self.rescan()
        labels = [c.label for c in fresh[task]] or self.building(task)
        value = label if label in labels else (labels[0] if labels else None)
        return gr.update(choices=labels, value=value, interactive=len(labels) > 1), value

    # 对比 Compare: a second model beside the first, for the same input

    def compare_toggle(self, task: Task):
        import gradio as gr

        return gr.Checkbox(
            value=False,
            label="对比 Compare: 两个模型并排回答 two models side by side",
            info="默认对比微调前的基座（若可加载）The base before fine-tuning, when it loads here",
            elem_id=f"{task.name}-compare",
        )

    def second_picker(self, task: Task):
        """The second model's picker and its about line (inside the tab's second column)."""
        import gradio as gr

        from webui.widgets import ModelPicker

        picker = ModelPicker(
            choices=[], value=None, label="对比模型 Compared with", elem_id=f"{task.name}-model-b", interactive=True
        )
        line = gr.Markdown(elem_classes="model-about", height=ABOUT_HEIGHT, elem_id=f"{task.name}-about-b")
        return picker, line

    def compare_choices(self, task: str, first, current=None) -> tuple[list[str], str | None]:
        """(choices, default) of the second picker: the task's models plus the first model's base when it
        loads here; the default is that base, else the current choice, else another model."""
        labels = [c.label for c in self.rescan()[task]]
        ckpt = self.by_key[task].get(first or "")
        base = base_of(ckpt) if ckpt is not None else None
        if base is not None:
            same = next((c for c in self.models[task] if os.path.abspath(c.path) == os.path.abspath(base.path)), None)
            if same is None:
                self.bases[task][base.label] = base
                labels.insert(0, base.label)
            return labels, (same or base).label
        if current in labels and current != first:
            return labels, current
        return labels, next((x for x in labels if x != first), first)

    def compare_about(self, task: str, label) -> str:
        ckpt = self.by_key[task].get(label or "") or self.bases[task].get(label or "")
        return about(ckpt, task) if ckpt is not None else ""

    def wire_compare(self, task: Task, toggle, column, first, second, second_about) -> None:
        """Show the second column while Compare is on; set the second picker when it turns on and when
        the first model changes."""
        import gradio as gr

        name = task.name

        def choose(on, a, b):
            if not on:
                return gr.update(visible=False), gr.update(), gr.update()
            labels, value = self.compare_choices(name, a, b)
            return gr.update(visible=True), gr.update(choices=labels, value=value), self.compare_about(name, value)

        common = dict(outputs=[column, second, second_about], api_visibility="private", show_progress="hidden")
        toggle.change(choose, inputs=[toggle, first, second], **common)
        first.change(choose, inputs=[toggle, first, second], **common)
        second.change(
            lambda label: self.compare_about(name, label),
            inputs=[second],
            outputs=[second_about],
            api_visibility="private",
            show_progress="hidden",
        )


def build_demo(
    settings: Settings | None = None,
    store: ModelStore | None = None,
    builder: DemoBuilder | None = None,
    trainer=None,
):
    """The Blocks app: one tab per registered task. With a `builder` (demo models training in the
    background) a tab without a model shows the build's progress and turns on by itself when its
    model is ready. With a `trainer` (webui.jobs.TrainingJobs) the last tab, 训练 Train, runs training
    scripts; without one it says how to turn it on."""
    import gradio as gr

    settings = settings or Settings()
    ctx = TabContext(settings, store or ModelStore(predictor_options(settings)), builder)
    titles = "、".join(t.title.split(" ", 1)[0] for t in TASKS.values())
    with gr.Blocks(title="小模型微调工坊 · Chinese small-model demo") as demo:
        gr.Markdown(
            "# 小模型微调工坊 · Small-model fine-tuning for Chinese text\n"
            f"用你自己的文本训练的小模型：{titles}。Models trained on your own text: "
            + ", ".join(t.title.split(" ", 1)[-1].lower() for t in TASKS.values())
            + "."
        )
        parts: dict[str, TabParts] = {}
        for task in TASKS.values():
            with gr.Tab(task.title) as tab:
                tab.select(None, js=CLOSE_TOASTS_JS, api_visibility="private")
                parts[task.name] = task.tab_module().build(ctx, task)
        with gr.Tab("训练 Train") as tab:
            tab.select(None, js=CLOSE_TOASTS_JS, api_visibility="private")
            from webui.tabs import train

            train.build(ctx, trainer)
        for name, p in parts.items():
            # each page load lists the checkpoint folders anew: a model trained after the start appears
            demo.load(
                lambda label, name=name: ctx.picker_update(name, label)[0],
                inputs=[p.picker],
                outputs=[p.picker],
                api_visibility="private",
                show_progress="hidden",
            ).then(p.refresh, inputs=[p.picker], outputs=p.outputs, api_visibility="private", show_progress="hidden")
            p.picker.change(
                p.refresh, inputs=[p.picker], outputs=p.outputs, api_visibility="private", show_progress="hidden"
            )
        if builder is not None and builder.builds:
            _follow_builds(ctx, parts)
    demo.queue(default_concurrency_limit=ctx.settings.concurrency, max_size=256)
    return demo


def _follow_builds(ctx: TabContext, parts: dict[str, TabParts]) -> None:
    """While demo models train, a tab without a model shows the build's progress every 2 s; when
    its model is ready the tick lists it in the picker and turns the tab on (the picker may
    already show the demo's name, so its change event would not fire). The timer stops once no
    build is left."""
    import gradio as gr

    timer = gr.Timer(2.0)

    def progress(*labels):
        out, fresh = [], None
        for (task, p), label in zip(parts.items(), labels):
            build, width = ctx.builder.status(task), len(p.outputs)
            if label in ctx.by_key[task] or build is None:
                out += [gr.update()] * (1 + width)
            elif build.state == "ready":
                fresh = fresh or ctx.rescan()
                update, value = ctx.picker_update(task, label, fresh)
                out += [update, *p.refresh(value)]
            else:  # the about line shows the build; the action button stays off
                out += [gr.update(), ctx.builder.message(task), gr.update(interactive=False)] + [gr.update()] * (
                    width - 2
                )
        return *out, gr.Timer(active=ctx.builder.pending())

    timer.tick(
        progress,
        inputs=[p.picker for p in parts.values()],
        outputs=[x for p in parts.values() for x in (p.picker, *p.outputs)] + [timer],
        api_visibility="private",
        show_progress="hidden",
        queue=False,
    )
