"""Gradio app: Chat, Fill-Mask and Similarity tabs over the checkpoint folders.

    python app.py                      # serve checkpoints/ (demo models are built if a tab has none)
    python app.py --share              # also ask Gradio for a public link
    python app.py --chat-model checkpoints/chat --port 7861

`import app` is cheap: nothing is loaded until `main()` runs or a tab is used. The handlers
only call `chat/` objects (ChatEngine, FillMaskPredictor, SimilarityPredictor), each loaded
once per process on first use. `build_demo()` returns the `gr.Blocks`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field

from app_demos import DEMO_DATA, DEMO_PREFIX, DemoBuilder

ROOT = os.path.dirname(os.path.abspath(__file__))
SAMPLES = os.path.join(ROOT, "data", "samples")
TASKS = ("chat", "cloze", "similarity")
TAB_TITLES = {"chat": "聊天 Chat", "cloze": "完形填空 Fill-Mask", "similarity": "语义相似度 Similarity"}
# Limits enforced on the server for every request (the browser's boxes refuse longer input first,
# but API clients skip the browser): a 5-million-character message grew the server by 2 GB.
MAX_MESSAGE_CHARS = 1000
MAX_SENTENCE_CHARS = 1000
MAX_KEPT_MESSAGES = 40  # chat history kept per visitor (the model reads the last 6 turns anyway)
MAX_KEPT_CHARS = 20_000
ABOUT_HEIGHT = 84  # px: the model line keeps its height when the picked model changes (the chat box stayed put)
MAX_UPLOAD = "1mb"  # the app has no upload box; Gradio's upload route still exists, so keep it small
RELOAD_FAILED_AFTER_S = 30.0  # a failed model load is tried again after this long, or at once when its folder changes
EXIT_BAD_INPUT = 2
WEAK_ACCURACY = 0.75  # a similarity model below this on its dev pairs gets a "rough guesses" note

HOW_TO_TRAIN = {
    "chat": "python training/chat.py --data 你的对话.txt --output checkpoints/chat",
    "cloze": "python training/cloze.py --data 你的文本.txt --output checkpoints/cloze",
    "similarity": "python training/similarity.py --train 你的句对.tsv --output checkpoints/similarity",
}


# -- settings ------------------------------------------------------------------------------

@dataclass
class Settings:
    """Everything the command line (or, on Spaces, the environment) can set."""

    checkpoints: str = "checkpoints"
    models: dict = field(default_factory=dict)  # task -> folder or Hub id given explicitly
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    concurrency: int = 16
    demo: bool = True
    fast: bool = False  # chat model with int8 weights
    demo_minutes: float | None = None  # time budget per demo model (None: app_demos.BUDGET_MINUTES)


ENV = {  # flag -> environment variable (Spaces sets variables, not flags)
    "checkpoints": "APP_CHECKPOINTS", "chat_model": "APP_CHAT_MODEL", "cloze_model": "APP_CLOZE_MODEL",
    "similarity_model": "APP_SIMILARITY_MODEL", "host": "APP_HOST", "port": "APP_PORT", "share": "APP_SHARE",
    "concurrency": "APP_CONCURRENCY", "no_demo": "APP_NO_DEMO", "demo_minutes": "APP_DEMO_MINUTES", "fast": "APP_FAST",
}


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def parse_settings(argv: list[str] | None = None) -> Settings:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python app.py", description="网页演示 Web demo: Chat, Fill-Mask and Similarity over your checkpoints.",
                                epilog="Every flag can also come from an environment variable: " + ", ".join(f"--{k.replace('_', '-')}={v}" for k, v in ENV.items()))
    p.add_argument("--checkpoints", default=env("APP_CHECKPOINTS", "checkpoints"), help="folder searched for checkpoint folders (default: checkpoints)")
    p.add_argument("--chat-model", default=env("APP_CHAT_MODEL"), help="chat model folder or Hub id (default: found under --checkpoints)")
    p.add_argument("--cloze-model", default=env("APP_CLOZE_MODEL"), help="fill-mask model folder or Hub id")
    p.add_argument("--similarity-model", default=env("APP_SIMILARITY_MODEL"), help="sentence-pair model folder or Hub id")
    p.add_argument("--host", default=env("APP_HOST") or env("GRADIO_SERVER_NAME") or "127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=int(env("APP_PORT") or env("GRADIO_SERVER_PORT") or 7860), help="port (default 7860; 0: the first free one from 7860)")
    p.add_argument("--share", action="store_true", default=_env_bool("APP_SHARE"), help="ask Gradio's share server for a public link")
    p.add_argument("--concurrency", type=int, default=int(env("APP_CONCURRENCY") or 16), help="requests a tab runs at once; the rest wait in the queue (default 16)")
    p.add_argument("--no-demo", action="store_true", default=_env_bool("APP_NO_DEMO"), help="do not build demo models for tabs without a checkpoint")
    p.add_argument("--demo-minutes", type=float, default=float(env("APP_DEMO_MINUTES") or 0) or None,
                   help="time budget per demo model on this CPU (default: 1.5 chat, 2 fill-mask, 1 similarity); smaller trains a weaker demo sooner")
    p.add_argument("--fast", action="store_true", default=_env_bool("APP_FAST"), help="chat model with int8 weights: about 3x faster replies on CPU")
    a = p.parse_args(argv)
    if not 1 <= a.concurrency <= 64:
        p.error(f"--concurrency must be between 1 and 64, got {a.concurrency}")
    if not 0 <= a.port < 65536:
        p.error(f"--port must be between 0 (any free port) and 65535, got {a.port}")
    if a.demo_minutes is not None and not 0.05 <= a.demo_minutes <= 60:
        p.error(f"--demo-minutes must be between 0.05 and 60, got {a.demo_minutes:g}")
    if os.path.exists(a.checkpoints) and not os.path.isdir(a.checkpoints):
        p.error(f"--checkpoints {a.checkpoints} is a file, not a folder")
    models = {t: m for t, m in (("chat", a.chat_model), ("cloze", a.cloze_model), ("similarity", a.similarity_model)) if m}
    return Settings(a.checkpoints, models, a.host, a.port, a.share, a.concurrency, not a.no_demo, a.fast, a.demo_minutes)


# -- finding checkpoints -------------------------------------------------------------------

@dataclass
class Checkpoint:
    task: str
    path: str  # local folder or Hub id
    label: str  # what the picker shows
    demo: bool = False
    report: dict = field(default_factory=dict)


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def find_checkpoints(root: str) -> dict[str, list[Checkpoint]]:
    """Checkpoint folders under `root` (and one level below), per task; your models before demo ones."""
    from chat.loading import find_checkpoint_folders

    found: dict[str, list[Checkpoint]] = {t: [] for t in TASKS}
    for task, path in find_checkpoint_folders(root):
        demo = os.path.basename(path).startswith(DEMO_PREFIX)
        label = os.path.relpath(path, root) + (DEMO_SUFFIX if demo else "")
        found[task].append(Checkpoint(task, path, label, demo, _read_json(os.path.join(path, "training_report.json"))))
    for items in found.values():
        items.sort(key=lambda c: (c.demo, c.label))
    return found


def about(ckpt: Checkpoint | None, task: str) -> str:
    """The "about this model" line, from its training report."""
    if ckpt is None:
        return (f"⚠ 没有可用的模型 No {task} model yet. 训练一个 Train one: `{HOW_TO_TRAIN[task]}`, "
                f"然后重启 then restart `python app.py` (或去掉 or drop `--no-demo`).")
    r = ckpt.report
    base = r.get("base_model")
    base = "从零训练 trained from scratch" if base == "scratch" else (base or "?")
    train = (r.get("data") or {}).get("train") or {}
    data = f"{os.path.basename(str(train.get('path', '?')))} ({train.get('rows', '?')} rows)" if train else "?"
    best = r.get("best") or {}
    score = ""
    if task == "chat" and "valid_perplexity" in best:
        score = f" · 困惑度 perplexity {best['valid_perplexity']:.1f}"
    elif task == "cloze" and (r.get("prompts") or {}).get("top1_accuracy_after") is not None:
        score = f" · 测验命中 quiz top-1 {r['prompts']['top1_accuracy_after']:.0%}"
    elif task == "cloze" and (r.get("self_quiz") or {}).get("probes"):
        q = r["self_quiz"]
        score = f" · 自测 self-quiz: 记住 recalls {q['recalled']}/{q['probes']} 个你文本里的事实 facts of your text"
    elif task == "similarity" and r.get("metric") in best:
        score = f" · {r['metric']} {best[r['metric']]:.3f}"
    line = f"**{ckpt.label}** · 基座 base: {base} · 数据 data: {data}{score}" if r else f"**{ckpt.label}** ({ckpt.path})"
    if task == "similarity" and r.get("warning") and r.get("majority_baseline") is not None:  # set by training/similarity.py
        line += (f"\n\n⚠ 这个模型在开发集上不比“总回答最常见的标签”({r['majority_baseline']:.0%})更准，还没学会这个任务。"
                 f"On dev it is no better than always answering the commonest label ({r['majority_baseline']:.0%}): "
                 "it has not learned the task yet.")
    accuracy = r.get("dev_accuracy_at_threshold") or best.get("accuracy")
    if task == "similarity" and not r.get("warning") and accuracy is not None and accuracy < WEAK_ACCURACY:
        line += (f"\n\n⚠ 它在留出的句对上只答对 {accuracy:.0%}，结果仅供参考。"
                 f"On held-out pairs it was right {accuracy:.0%} of the time: treat its answers as rough guesses.")
    if ckpt.demo:
        line += (f"\n\n这是用 `{DEMO_DATA[task]}` 训练的小型演示模型，只会样例里的内容。"
                 f"This is a small demo model trained on the sample data. 训练你自己的 Train your own: `{HOW_TO_TRAIN[task]}`")
    return line


# -- demo models -----------------------------------------------------------------------------

DEMO_SUFFIX = " (演示 demo)"

def missing_demos(settings: Settings) -> list[str]:
    """Tasks with neither an explicit model nor a checkpoint folder: their tabs get a demo model."""
    found = find_checkpoints(settings.checkpoints)
    return [t for t in TASKS if t not in settings.models and not found[t]]


# -- loaded models ---------------------------------------------------------------------------

class _Gate:
    """Many users of loaded models at once, or one load alone (writers first).

    `from_pretrained` switches process-wide torch state while it loads (a meta default
    device, the default dtype, patched `torch.nn.init`). A generation running in another
    thread meanwhile failed with "Tensor on device meta" or NaN probabilities: 4 of 4
    browser-test runs without this gate, 0 of 6 with it. So a load waits for running
    requests and holds new ones back until it is done.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._waiting_writers = 0

    @contextlib.contextmanager
    def use(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._writing and not self._waiting_writers)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def load(self):
        with self._cond:
            self._waiting_writers += 1
            self._cond.wait_for(lambda: not self._writing and not self._readers)
            self._waiting_writers -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def _folder_signature(path: str) -> tuple:
    """Changes when a checkpoint folder is retrained, restored or replaced (new files, new inode)."""
    out = []
    for name in ("", "model.safetensors", "config.json", "adapter"):
        try:
            st = os.stat(os.path.join(path, name))
            out.append((name, st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((name, None))
    return tuple(out)


class ModelStore:
    """Predictors loaded on first use and kept; reloaded when their folder changes on disk (a
    retrained model); a failed load is remembered with its reason for RELOAD_FAILED_AFTER_S, or
    until the folder changes, then tried again.

    Handlers call `get` first, then run the model inside `with store.serving():`.
    """

    def __init__(self, chat_precision: str = "fp32", retry_after_s: float = RELOAD_FAILED_AFTER_S):
        self.chat_precision = chat_precision
        self.retry_after_s = retry_after_s
        self._loaded: dict[tuple[str, str], tuple[object, tuple]] = {}
        self._failed: dict[tuple[str, str], tuple[str, float, tuple]] = {}
        self._gate = _Gate()

    def serving(self):
        return self._gate.use()

    def _fresh(self, key) -> bool:
        """Is what we hold for `key` (a model or a failure) still true of the folder?"""
        signature = _folder_signature(key[1])
        if key in self._loaded:
            return self._loaded[key][1] == signature
        if key in self._failed:
            _, when, was = self._failed[key]
            return was == signature and time.monotonic() - when < self.retry_after_s
        return False

    def get(self, task: str, path: str):
        from data import InputError

        key = (task, path)
        if not self._fresh(key):
            with self._gate.load():  # one load at a time, with no request running
                if not self._fresh(key):
                    self._loaded.pop(key, None)
                    self._failed.pop(key, None)
                    signature = _folder_signature(path)
                    try:
                        self._loaded[key] = (_load(task, path, self.chat_precision), signature)
                    except InputError as e:
                        self._failed[key] = (str(e), time.monotonic(), signature)
                    except Exception as e:  # a broken folder must disable its tab, not the app
                        reason = f"{path} could not be loaded: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
                        self._failed[key] = (reason, time.monotonic(), signature)
        if key in self._failed:
            raise InputError(self._failed[key][0])
        return self._loaded[key][0]


def _load(task: str, path: str, chat_precision: str = "fp32"):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if task == "chat":
        from chat import ChatEngine

        return ChatEngine.from_pretrained(path, precision=chat_precision)
    if task == "cloze":
        from chat.fill_mask import FillMaskPredictor

        return FillMaskPredictor.from_pretrained(path)
    from chat.similarity import SimilarityPredictor

    return SimilarityPredictor.from_pretrained(path)


# -- the UI ------------------------------------------------------------------------------------

def _sample_lines(name: str, limit: int) -> list[list[str]]:
    rows = []
    try:
        with open(os.path.join(SAMPLES, name), encoding="utf-8") as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    rows.append(line.rstrip("\n").split("\t"))
    except OSError:
        pass
    return rows[:limit]


def catalogue(settings: Settings) -> dict[str, list[Checkpoint]]:
    """Models per tab: an explicit --*-model first, then what --checkpoints holds."""
    found = find_checkpoints(settings.checkpoints)
    for task, name in settings.models.items():
        path = os.path.expanduser(name)
        report = _read_json(os.path.join(path, "training_report.json")) if os.path.isdir(path) else {}
        found[task] = [Checkpoint(task, name, name, False, report)] + [c for c in found[task] if os.path.abspath(c.path) != os.path.abspath(path)]
    return found


def warm_up(settings: Settings, store: ModelStore) -> threading.Thread:
    """Load each tab's first model in the background so the first visitor does not wait."""
    def work():
        for task, items in catalogue(settings).items():
            if items:
                try:
                    store.get(task, items[0].path)
                except Exception as e:  # the tab shows the reason; the terminal gets one line
                    print(f"[app] {task} tab disabled: {e}", file=sys.stderr)

    thread = threading.Thread(target=work, name="warm-up", daemon=True)
    thread.start()
    return thread


def build_demo(settings: Settings | None = None, store: ModelStore | None = None, builder: DemoBuilder | None = None):
    """The Blocks app. Cheap: it lists checkpoint folders but loads no model. With a `builder`
    (demo models training in the background) a tab without a model shows the build's progress
    and turns on by itself when its model is ready."""
    import gradio as gr

    from data import InputError

    settings = settings or Settings()
    store = store or ModelStore()
    models = catalogue(settings)
    by_key = {task: {c.label: c for c in items} for task, items in models.items()}
    from app_widgets import CheckedSlider as Slider, ModelPicker as Picker

    def refreshed(task: str):
        """Each page load lists the checkpoint folders anew: a model trained after the start appears."""
        def fn(label):
            fresh = rescan()
            labels = [c.label for c in fresh[task]] or building(task)
            value = label if label in labels else (labels[0] if labels else None)
            return gr.update(choices=labels, value=value, interactive=len(labels) > 1)
        return fn

    def building(task: str) -> list[str]:
        """The picker entry of a demo model still being built (none when there is no build, or it failed)."""
        build = builder.status(task) if builder is not None else None
        return [DEMO_PREFIX + task + DEMO_SUFFIX] if build is not None and build.state != "failed" else []

    def no_model(task: str) -> str:
        """What a tab without a model says: its demo build's progress, else how to train one."""
        return (builder.message(task) if builder else None) or about(None, task)

    def too_long(text, limit: int, what: str):
        if len(text or "") > limit:
            raise gr.Error(f"{what}太长 too long: {len(text):,} 字 characters, 最多 at most {limit:,}", print_exception=False)

    def rescan():
        fresh = catalogue(settings)
        models.update(fresh)
        for t, items in fresh.items():
            by_key[t] = {c.label: c for c in items}
        return fresh

    def pick(task: str, label: str | None):
        ckpt = by_key[task].get(label or "")
        if ckpt is None and label:  # trained after the start? (API clients skip the page load that rescans)
            rescan()
            ckpt = by_key[task].get(label)
        if ckpt is None:
            raise gr.Error(no_model(task) if not by_key[task] else "没有这个模型 Unknown model; reload the page.", print_exception=False)
        try:
            return store.get(task, ckpt.path)
        except InputError as e:
            raise gr.Error(f"模型加载失败 The model failed to load: {e}", print_exception=False)

    def status(task: str):
        """About line + whether the tab's inputs work, after trying to load the chosen model."""
        def check(label):
            ckpt = by_key[task].get(label or "")
            if ckpt is None:
                return no_model(task), gr.update(interactive=False)
            try:
                store.get(task, ckpt.path)
            except InputError as e:
                return f"⚠ 模型加载失败，此页停用 This tab is off: {e}", gr.update(interactive=False)
            return about(ckpt, task), gr.update(interactive=True)
        return check

    def picker(task: str):
        items = models[task]
        names = [c.label for c in items] or building(task)  # a demo being built: API clients get it as the default
        return Picker(choices=names, value=names[0] if names else None, label="模型 Model", interactive=len(names) > 1, scale=1)

    with gr.Blocks(title="小模型微调工坊 · Chinese small-model demo") as demo:
        gr.Markdown("# 小模型微调工坊 · Small-model fine-tuning for Chinese text\n"
                    "用你自己的文本训练的小模型：聊天、完形填空、语义相似度。Models trained on your own text: chat, fill-mask, similarity.")

        # ---- Chat ----
        with gr.Tab(TAB_TITLES["chat"]) as tab:
            tab.select(None, js=CLOSE_TOASTS_JS, api_visibility="private")
            with gr.Row():
                chat_model = picker("chat")
                chat_about = gr.Markdown(elem_id="chat-about", elem_classes="model-about", height=ABOUT_HEIGHT, value=about(models["chat"][0], "chat") if models["chat"] else no_model("chat"))
            chatbot = gr.Chatbot(label="对话 Conversation", height=380, buttons=["copy"], elem_id="chatbot")
            history = gr.State([])  # what the model sees; one per browser session
            with gr.Row():
                message = gr.Textbox(placeholder="说点什么… Say something…", show_label=False, max_length=MAX_MESSAGE_CHARS,
                                     scale=5, autofocus=True, elem_id="chat-input")
                send = gr.Button("发送 Send", variant="primary", scale=1, elem_id="chat-send")
                clear = gr.Button("清空 Clear", scale=1, elem_id="chat-clear")
            with gr.Accordion("生成设置 Generation settings", open=False):
                with gr.Row():
                    temperature = Slider(0, 2, value=0.8, step=0.05, label="温度 temperature (0 = greedy)")
                    top_k = Slider(0, 50, value=8, step=1, label="top-k (0 = off)")
                    top_p = Slider(0.05, 1, value=0.9, step=0.05, label="top-p")
                    repetition = Slider(1, 2, value=1.2, step=0.05, label="重复惩罚 repetition penalty")
                    max_new = Slider(8, 256, value=64, step=8, label="最长回复 max new tokens")
            gr.Examples([["你好"], ["早上好"], ["在吗？"], ["周末去哪儿玩？"], ["我今天好累"]], inputs=[message], label="试试 Try")

            def respond(message, turns, model, temperature, top_k, top_p, repetition_penalty, max_new_tokens):
                from chat import GenerationSettings

                turns = list(turns or [])
                if not (message or "").strip():
                    gr.Warning("请先输入内容 Please type a message first.")
                    yield turns, turns, message
                    return
                too_long(message, MAX_MESSAGE_CHARS, "消息 Message ")
                turns = trim_history(turns)
                engine = pick("chat", model)
                settings_ = GenerationSettings(max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_k=int(top_k),
                                               top_p=float(top_p), repetition_penalty=float(repetition_penalty))
                shown = turns + [{"role": "user", "content": message.strip()}, {"role": "assistant", "content": ""}]
                yield shown, turns, ""
                try:
                    with store.serving():
                        for piece in engine.stream(turns, message, settings_):
                            shown[-1] = {"role": "assistant", "content": shown[-1]["content"] + piece}
                            yield shown, turns, ""
                except InputError as e:
                    raise gr.Error(str(e), print_exception=False)
                if not shown[-1]["content"]:
                    shown[-1] = {"role": "assistant", "content": "……"}
                yield shown, shown, ""

            chat_io = dict(fn=respond, inputs=[message, history, chat_model, temperature, top_k, top_p, repetition, max_new],
                           outputs=[chatbot, history, message])
            message.submit(**chat_io, api_visibility="private")
            send.click(**chat_io, api_name="chat")
            clear.click(lambda: ([], []), outputs=[chatbot, history], api_name="clear", queue=False)
            chat_status = status("chat")
            sliders = [temperature, top_k, top_p, repetition, max_new]

            def chat_state_fn(label):
                """The about line, and the sliders set to the chosen model's generation_config.json."""
                about_line, send_update = chat_status(label)
                ckpt = by_key["chat"].get(label or "")
                if ckpt is None or not send_update.get("interactive"):
                    return about_line, send_update, *[gr.update() for _ in sliders]
                return about_line, send_update, *[gr.update(value=v) for v in slider_values(store.get("chat", ckpt.path).defaults)]

            chat_state = dict(fn=chat_state_fn, inputs=[chat_model], outputs=[chat_about, send, *sliders], api_visibility="private")
            chat_model.change(lambda: ([], []), outputs=[chatbot, history], api_visibility="private", queue=False)

        # ---- Fill-Mask ----
        with gr.Tab(TAB_TITLES["cloze"]) as tab:
            tab.select(None, js=CLOSE_TOASTS_JS, api_visibility="private")
            with gr.Row():
                cloze_model = picker("cloze")
                cloze_about = gr.Markdown(elem_id="cloze-about", elem_classes="model-about", height=ABOUT_HEIGHT, value=about(models["cloze"][0], "cloze") if models["cloze"] else no_model("cloze"))
            masked = gr.Textbox(label="带 [MASK] 的句子 Text with [MASK]", placeholder="例如 e.g. 三国人物诸[MASK][MASK]懂得治水。",
                                max_length=MAX_SENTENCE_CHARS, lines=2, elem_id="cloze-input")
            with gr.Row():
                cloze_k = Slider(1, 20, value=5, step=1, label="候选数 top-k")
                joint = gr.Checkbox(value=True, label="连续 [MASK] 按整词填 Fill consecutive masks as one word")
                fill = gr.Button("填空 Fill", variant="primary", elem_id="cloze-fill")
            filled = gr.Markdown(elem_id="cloze-filled")
            candidates = gr.Dataframe(headers=["空位 slot", "候选 candidate", "概率 probability"], label="候选 Candidates",
                                      interactive=False, wrap=True)
            gr.Examples([[r[0]] for r in _sample_lines("cloze_prompts.txt", 6)] + [["今天天气很[MASK]。"]], inputs=[masked], label="试试 Try")

            def fill_mask(text, model, top_k, joint):
                if not (text or "").strip():
                    raise gr.Error("请输入带 [MASK] 的句子 Please type a sentence with [MASK].", print_exception=False)
                too_long(text, MAX_SENTENCE_CHARS, "句子 Text ")
                predictor = pick("cloze", model)
                try:
                    with store.serving():
                        slots = predictor.predict(text, top_k=int(top_k), joint=bool(joint))
                except InputError as e:  # no [MASK], more than 10, longer than the model reads: the reason, also for API clients
                    raise gr.Error(str(e), print_exception=False)
                rows, best = [], []
                for n, slot in enumerate(slots, 1):
                    best.append(slot.candidates[0].text if slot.candidates else "?")
                    rows += [[n, c.text, round(c.probability, 4)] for c in slot.candidates]
                return "**最可能 Most likely:** " + _fill_text(text, slots, best), rows

            fill_io = dict(fn=fill_mask, inputs=[masked, cloze_model, cloze_k, joint], outputs=[filled, candidates])
            fill.click(**fill_io, api_name="fill_mask")
            masked.submit(**fill_io, api_visibility="private")
            cloze_state = dict(fn=status("cloze"), inputs=[cloze_model], outputs=[cloze_about, fill], api_visibility="private")

        # ---- Similarity ----
        with gr.Tab(TAB_TITLES["similarity"]) as tab:
            tab.select(None, js=CLOSE_TOASTS_JS, api_visibility="private")
            with gr.Row():
                sim_model = picker("similarity")
                sim_about = gr.Markdown(elem_id="sim-about", elem_classes="model-about", height=ABOUT_HEIGHT, value=about(models["similarity"][0], "similarity") if models["similarity"] else no_model("similarity"))
            with gr.Row():
                first = gr.Textbox(label="句子一 Sentence 1", max_length=MAX_SENTENCE_CHARS, elem_id="sim-first")
                second = gr.Textbox(label="句子二 Sentence 2", max_length=MAX_SENTENCE_CHARS, elem_id="sim-second")
            compare = gr.Button("比较 Compare", variant="primary", elem_id="sim-compare")
            verdict = gr.Markdown(elem_id="sim-verdict")
            probabilities = gr.Label(label="概率 Probabilities", num_top_classes=3)
            rows = _sample_lines("pairs.tsv", 1000)
            same, different = ([r[:2] for r in rows if len(r) > 2 and r[2] == label][:4] for label in ("1", "0"))
            gr.Examples([x for pair in zip(same, different) for x in pair], inputs=[first, second],
                        label="试试（含字面相近但意思不同的句子）Try, near-misses included")

            def similarity(sentence1, sentence2, model):
                if not (sentence1 or "").strip() or not (sentence2 or "").strip():
                    raise gr.Error("请输入两个句子 Please type both sentences.", print_exception=False)
                too_long(sentence1, MAX_SENTENCE_CHARS, "句子一 Sentence 1 ")
                too_long(sentence2, MAX_SENTENCE_CHARS, "句子二 Sentence 2 ")
                judge = pick("similarity", model)
                try:
                    with store.serving():
                        result = judge.score(sentence1, sentence2)
                except InputError as e:
                    raise gr.Error(str(e), print_exception=False)
                if "score" in result:
                    return f"**相似度 Similarity: {result['score']:.2f} / 5**", {"score / 5": max(0.0, min(1.0, result["score"] / 5))}
                names = {"0": "不同 different", "1": "相同 same"}
                probs = {names.get(k, k): v for k, v in result["probabilities"].items()}
                same = judge.labels == ["0", "1"]
                # text and CSS, not emoji: Debian's Chromium without an emoji font showed empty boxes
                text = ((VERDICT_SAME if result["label"] == "1" else VERDICT_DIFFERENT) if same else f"**{result['label']}**")
                if same:
                    text += f" · p(相同 same) = {result['probability']:.2f}"
                return text, probs

            sim_io = dict(fn=similarity, inputs=[first, second, sim_model], outputs=[verdict, probabilities])
            compare.click(**sim_io, api_name="similarity")
            second.submit(**sim_io, api_visibility="private")
            sim_state = dict(fn=status("similarity"), inputs=[sim_model], outputs=[sim_about, compare], api_visibility="private")

        for task, state, dropdown in (("chat", chat_state, chat_model), ("cloze", cloze_state, cloze_model), ("similarity", sim_state, sim_model)):
            demo.load(refreshed(task), inputs=[dropdown], outputs=[dropdown], api_visibility="private", show_progress="hidden").then(
                **state, show_progress="hidden")
            dropdown.change(**state, show_progress="hidden")
        if builder is not None and builder.builds:
            # While demo models train, a tab without a model shows the build's progress every 2 s; when
            # its model is ready the tick lists it in the picker and turns the tab on (the picker may
            # already show the demo's name, so its change event would not fire). The timer stops once
            # no build is left.
            timer = gr.Timer(2.0)
            tabs = {"chat": (chat_model, chat_state), "cloze": (cloze_model, cloze_state), "similarity": (sim_model, sim_state)}

            def progress(*labels):
                out, fresh = [], None
                for (task, (_, state)), label in zip(tabs.items(), labels):
                    build, width = builder.status(task), len(state["outputs"])
                    if label in by_key[task] or build is None:
                        out += [gr.update()] * (1 + width)
                    elif build.state == "ready":
                        fresh = fresh or rescan()
                        names = [c.label for c in fresh[task]]
                        value = label if label in names else (names[0] if names else None)
                        out += [gr.update(choices=names, value=value, interactive=len(names) > 1), *state["fn"](value)]
                    else:
                        out += [gr.update(), builder.message(task)] + [gr.update(interactive=False)] + [gr.update()] * (width - 2)
                return *out, gr.Timer(active=builder.pending())

            timer.tick(progress, inputs=[dropdown for dropdown, _ in tabs.values()],
                       outputs=[x for dropdown, state in tabs.values() for x in (dropdown, *state["outputs"])] + [timer],
                       api_visibility="private", show_progress="hidden", queue=False)
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=256)
    return demo


def trim_history(turns: list) -> list:
    """At most MAX_KEPT_MESSAGES messages and MAX_KEPT_CHARS characters per visitor, oldest dropped first."""
    turns = turns[-MAX_KEPT_MESSAGES:]
    while turns and sum(len(str(t.get("content", ""))) if isinstance(t, dict) else 0 for t in turns) > MAX_KEPT_CHARS:
        turns = turns[2:] if len(turns) > 1 else []
    return turns


def slider_values(config) -> list[float]:
    """Chat slider positions (temperature, top-k, top-p, repetition penalty, max new tokens) for a
    checkpoint's GenerationConfig, clamped to the sliders' ranges; greedy configs get temperature 0."""
    clamp = lambda v, lo, hi, default: min(hi, max(lo, v if v is not None else default))  # noqa: E731
    temperature = clamp(config.temperature, 0, 2, 0.8) if config.do_sample else 0
    return [temperature, int(clamp(config.top_k, 0, 50, 8)), clamp(config.top_p, 0.05, 1, 0.9),
            clamp(config.repetition_penalty, 1, 2, 1.2), int(clamp(config.max_new_tokens, 8, 256, 64))]


def _fill_text(text: str, slots, best: list[str]) -> str:
    """The sentence with each run of masks replaced (in bold) by its top candidate."""
    from data.corpus import MASK, normalize_masks

    parts = normalize_masks(text.strip()).split(MASK)
    out, k = [parts[0]], 0
    for slot, word in zip(slots, best):
        out += [f"**{word}**", *parts[k + 1 : k + slot.length], parts[k + slot.length]]  # the run's inner parts are empty
        k += slot.length
    return "".join(out)


# -- entry point -------------------------------------------------------------------------------

VERDICT_SAME = '<span class="verdict verdict-same">相同 Same meaning</span>'
VERDICT_DIFFERENT = '<span class="verdict verdict-different">不同 Different meaning</span>'
CSS = """
.verdict { display: inline-block; padding: 1px 10px; border-radius: 6px; font-weight: 600; }
.verdict-same { background: #dcfce7; color: #166534; }
.verdict-different { background: #fee2e2; color: #991b1b; }
.model-about { overflow-y: auto; }
"""
# Closes the toasts of the tab you leave (a Fill-Mask warning stayed on over the next tab).
CLOSE_TOASTS_JS = "() => document.querySelectorAll('[data-testid=\"toast-close\"]').forEach(b => b.click())"
SERVE_OPTIONS = dict(show_error=False, footer_links=["api", "gradio"], max_file_size=MAX_UPLOAD, css=CSS)


def share_server_reachable(timeout: float = 3.0) -> bool:
    """Gradio asks api.gradio.app for a share server; offline that fails after a long wait."""
    import socket

    try:
        with socket.create_connection(("api.gradio.app", 443), timeout=timeout):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    sys.path.insert(0, ROOT)
    from data import InputError

    started = time.perf_counter()
    try:
        store = ModelStore(chat_precision="int8" if settings.fast else "fp32")
        # Tabs without a model get a demo model, trained in the background while the page already answers.
        builder = DemoBuilder(settings.checkpoints, missing_demos(settings) if settings.demo else [], on_ready=store.get,
                              minutes=settings.demo_minutes)
        demo = build_demo(settings, store, builder)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    share = settings.share and not os.environ.get("SPACE_ID")
    if share and not share_server_reachable():
        print("note: Gradio's share server cannot be reached (offline?), so there is no public link; serving locally only.", file=sys.stderr)
        share = False
    try:
        # quiet: Gradio's own lines advise `launch(share=True)`; the app prints its own address and link
        demo.launch(server_name=settings.host, server_port=settings.port or None, share=share, prevent_thread_lock=True,
                    quiet=True, **SERVE_OPTIONS)
    except OSError as e:
        busy = "port" in str(e).lower()
        reason = "the port is in use" if busy else (str(e).splitlines() or [""])[0].split(". You can")[0]
        print(f"error: cannot serve on {settings.host}:{settings.port}: {reason} (try --port {settings.port + 1}, "
              "or --port 0 for the first free one)", file=sys.stderr)
        return EXIT_BAD_INPUT
    if share and demo.share_url:
        print(f"[app] public link: {demo.share_url} (works while this app runs, up to a week)", flush=True)
    elif share:
        print("note: no public link: Gradio's share server did not answer; serving locally only.", file=sys.stderr)
    print(f"[app] serving at http://{'localhost' if settings.host in ('127.0.0.1', '0.0.0.0') else settings.host}:{demo.server_port} "
          f"({time.perf_counter() - started:.0f} s after start); Ctrl-C stops it", flush=True)
    warm_up(settings, store)
    builder.start()
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        builder.stop()
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
