"""The page: a header, then one tab per registered task (chat.tasks), each built by its tab module.

`build_demo()` returns the `gr.Blocks`. It lists checkpoint folders but loads no model. What every
tab needs (its model picker and about line, loading the picked model, input limits, the demo
build's progress) is in `TabContext`; a tab module's `build(ctx, task)` lays out its own inputs
and handlers (with webui.compare.Compare for the second model) and returns `TabParts`, named: its
picker, about line, action button and Try examples, which the page refreshes when the picked model
changes. Gradio is imported here at module level; app.py imports this module only to build the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import gradio as gr

from chat.compute import COMPUTE, in_own_thread
from chat.tasks import TASKS, Task
from data import InputError
from webui.compare import ABOUT_HEIGHT
from webui.demos import DEMO_PREFIX, DemoBuilder
from webui.settings import Settings, predictor_options
from webui.store import DEMO_SUFFIX, ModelStore, ScanThrottle, about, catalogue
from webui.widgets import ModelPicker

# Closes the toasts of the tab you leave (a Fill-Mask warning stayed on over the next tab).
CLOSE_TOASTS_JS = "() => document.querySelectorAll('[data-testid=\"toast-close\"]').forEach(b => b.click())"


@dataclass
class TabParts:
    """What a tab module's build() hands back; the page refreshes these when the picked model changes,
    the page loads, or the tab's demo model becomes ready."""

    picker: gr.Dropdown  # the tab's model picker
    about: gr.Markdown  # the picked model's about line
    action: gr.Button  # on when the picked model loads, off without one
    examples: gr.Dataset | None = None  # the Try examples, refilled from the picked model's own data
    default_examples: list = field(default_factory=list)  # when the model's report has none (Task.examples)
    # what else follows the picked model: label -> {component: update} for `follows` (chat: its sliders)
    follow: Callable | None = None
    follows: list = field(default_factory=list)

    @property
    def outputs(self) -> list:
        return [self.about, self.action, *([self.examples] if self.examples is not None else []), *self.follows]


class TabContext:
    """What every tab shares: the model catalogue (rescanned on page load), the store, the demo builds."""

    def __init__(self, settings: Settings, store: ModelStore, builder: DemoBuilder | None):
        self.settings, self.store, self.builder = settings, store, builder
        self.models = catalogue(settings)
        self.by_key = {task: {c.label: c for c in items} for task, items in self.models.items()}
        self.bases: dict[str, dict] = {task: {} for task in self.models}  # Compare's "基座 base: ..." entries
        self.misses = ScanThrottle()  # when a model name not in the catalogue may rescan for it

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
            about_md = gr.Markdown(
                line, elem_id=f"{task.name}-about", elem_classes="model-about", min_height=ABOUT_HEIGHT
            )
        return picker, about_md

    @staticmethod
    def too_long(text, limit: int, what: str) -> None:
        if len(text or "") > limit:
            raise gr.Error(
                f"{what}太长 too long: {len(text):,} 字 characters, 最多 at most {limit:,}", print_exception=False
            )

    def pick(self, task: str, label: str | None):
        """The loaded predictor of the picked model, or a gr.Error with the reason."""
        ckpt = self.by_key[task].get(label or "") or self.bases[task].get(label or "")
        # trained after the start? (API clients skip the page load that rescans)
        if ckpt is None and label and self.misses.due():
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
        """Run a model call on the compute thread (chat/compute.py: one thread for all model work) while no
        model loads, its InputError shown as the error."""
        return self._serving(COMPUTE.run, fn, *args, **kwargs)

    def run_aside(self, fn, *args, **kwargs):
        """The same in a thread of its own that ends with the job: for a long job (a whole file), which on the
        compute thread would hold every chat reply back until it ends (and in a Gradio worker, which lives on,
        would leave a second OpenMP team behind: chat/compute.py)."""
        return self._serving(in_own_thread, fn, *args, **kwargs)

    def _serving(self, fn, *args, **kwargs):
        try:
            with self.store.serving():
                return fn(*args, **kwargs)
        except InputError as e:  # the reason, also for API clients
            raise gr.Error(str(e), print_exception=False)

    def status(self, task: str, label):
        """(about line, update for the tab's action button) after trying to load the picked model."""
        ckpt = self.by_key[task].get(label or "")
        if ckpt is None:
            return self.no_model(task), gr.update(interactive=False)
        try:
            self.store.get(task, ckpt.path)
        except InputError as e:
            return f"⚠ 模型加载失败，此页停用 This tab is off: {e}", gr.update(interactive=False)
        return about(ckpt, task), gr.update(interactive=True)

    def picker_update(self, task: str, label, fresh=None):
        fresh = fresh or self.rescan()
        labels = [c.label for c in fresh[task]] or self.building(task)
        value = label if label in labels else (labels[0] if labels else None)
        return gr.update(choices=labels, value=value, interactive=len(labels) > 1), value

    def examples(self, task: str, label, parts: TabParts) -> list:
        """The Try examples for the picked model: from its own data (Task.examples over its training
        report), else the tab's defaults (the sample data the demo model learns)."""
        ckpt = self.by_key[task].get(label or "")
        rows = TASKS[task].examples(ckpt.report) if ckpt is not None else []
        return rows or parts.default_examples

    def refresh(self, task: str, parts: TabParts, label) -> dict:
        """Updates of a tab's parts for the picked model, by component."""
        line, action = self.status(task, label)
        out = {parts.about: line, parts.action: action}
        if parts.examples is not None:
            out[parts.examples] = gr.Dataset(samples=self.examples(task, label, parts))
        if parts.follow is not None and action.get("interactive"):
            out.update(parts.follow(label))
        return out


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
        with gr.Tab("历史 Runs") as tab:
            tab.select(None, js=CLOSE_TOASTS_JS, api_visibility="private")
            runs_listing = _runs_tab(ctx, trainer)
        quiet = dict(api_visibility="private", show_progress="hidden")
        for name, p in parts.items():

            def refresh(label, name=name, p=p):
                return ctx.refresh(name, p, label)

            # each page load lists the checkpoint folders anew: a model trained after the start appears
            demo.load(
                lambda label, name=name: ctx.picker_update(name, label)[0],
                inputs=[p.picker],
                outputs=[p.picker],
                **quiet,
            ).then(refresh, inputs=[p.picker], outputs=p.outputs, **quiet)
            p.picker.change(refresh, inputs=[p.picker], outputs=p.outputs, **quiet)
        if runs_listing is not None:
            load, pick, table = runs_listing
            demo.load(load, pick, [table, pick], **quiet)
        if builder is not None and builder.builds:
            _follow_builds(ctx, parts)
    demo.queue(default_concurrency_limit=ctx.settings.concurrency, max_size=256)
    return demo


def _runs_tab(ctx: TabContext, trainer):
    """The Runs tab where training is on (it resumes and deletes runs); a note where the page is public."""
    from webui.jobs import public_reason
    from webui.tabs import runs

    reason = public_reason(ctx.settings)
    if reason or trainer is None:
        gr.Markdown(
            f"⚠ 历史记录已关闭 The run list is off {reason or 'in this app'} (it can resume and delete runs). "
            "命令行 From a terminal: `python -m training.history checkpoints`",
            elem_id="runs-off",
        )
        return None
    return runs.build(ctx, trainer)


def _follow_builds(ctx: TabContext, parts: dict[str, TabParts]) -> None:
    """While demo models train, a tab without a model shows the build's progress every 2 s; when
    its model is ready the tick lists it in the picker and turns the tab on (the picker may
    already show the demo's name, so its change event would not fire). The timer stops once no
    build is left."""
    timer = gr.Timer(2.0)

    def progress(*labels):
        out, fresh = {}, None
        for (task, p), label in zip(parts.items(), labels):
            build = ctx.builder.status(task)
            if label in ctx.by_key[task] or build is None:
                continue
            if build.state == "ready":
                fresh = fresh or ctx.rescan()
                out[p.picker], value = ctx.picker_update(task, label, fresh)
                out.update(ctx.refresh(task, p, value))
            else:  # the about line shows the build; the action button stays off
                out.update({p.about: ctx.builder.message(task), p.action: gr.update(interactive=False)})
        out[timer] = gr.Timer(active=ctx.builder.pending())
        return out

    timer.tick(
        progress,
        inputs=[p.picker for p in parts.values()],
        outputs=[x for p in parts.values() for x in (p.picker, *p.outputs)] + [timer],
        api_visibility="private",
        show_progress="hidden",
        queue=False,
    )
