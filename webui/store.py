"""Checkpoint folders per task, the "about this model" line, and the models loaded to serve them."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass, field

from chat.compute import COMPUTE
from chat.tasks import TASKS, task_named
from data.textio import read_json_dict
from webui.demos import DEMO_PREFIX

DEMO_SUFFIX = " (演示 demo)"
RELOAD_FAILED_AFTER_S = 30.0  # a failed model load is tried again after this long, or at once when its folder changes
# A model name that is not in the catalogue rescans the checkpoints folder at most once per this many seconds: a
# scan reads every checkpoint's config and report (30 calls naming a missing model spent 5.9 s scanning), while a
# model trained meanwhile still shows up within this long.
RESCAN_AFTER_S = 5.0


@dataclass
class Checkpoint:
    task: str
    path: str  # local folder or Hub id
    label: str  # what the picker shows
    demo: bool = False
    report: dict = field(default_factory=dict)


def find_checkpoints(root: str) -> dict[str, list[Checkpoint]]:
    """Checkpoint folders under `root` (and one level below), per task; your models before demo ones."""
    from chat.loading import find_checkpoint_folders

    found: dict[str, list[Checkpoint]] = {t: [] for t in TASKS}
    for task, path in find_checkpoint_folders(root):
        demo = os.path.basename(path).startswith(DEMO_PREFIX)
        label = os.path.relpath(path, root) + (DEMO_SUFFIX if demo else "")
        found[task].append(
            Checkpoint(task, path, label, demo, read_json_dict(os.path.join(path, "training_report.json")))
        )
    for items in found.values():
        items.sort(key=lambda c: (c.demo, c.label))
    return found


def catalogue(settings) -> dict[str, list[Checkpoint]]:
    """Models per tab: an explicit --<task>-model first, then what --checkpoints holds."""
    found = find_checkpoints(settings.checkpoints)
    for task, name in settings.models.items():
        path = os.path.expanduser(name)
        report = read_json_dict(os.path.join(path, "training_report.json")) if os.path.isdir(path) else {}
        found[task] = [Checkpoint(task, name, name, False, report)] + [
            c for c in found[task] if os.path.abspath(c.path) != os.path.abspath(path)
        ]
    return found


class ScanThrottle:
    """Says when a lookup that missed may rescan the checkpoints folder: at most once per RESCAN_AFTER_S,
    whatever the names asked for (many made-up names cost no more than one)."""

    def __init__(self):
        self._last: float | None = None
        self._lock = threading.Lock()

    def due(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last < RESCAN_AFTER_S:
                return False
            self._last = now
            return True


UNDERTRAINED_SHARE = 0.6  # a demo that trained less than this share of its wanted steps is rebuilt


def undertrained(report: dict) -> tuple[int, int] | None:
    """(steps allowed, steps wanted) of a run whose time budget cut it well short of what its rule wanted (a
    busy machine made each step slow: the plan shrank, or the cap ended it), else None. A run that stopped
    early on its own (patience, the self-quiz) within a full plan is not undertrained."""
    schedule = report.get("schedule") or {}
    wanted, planned = schedule.get("wanted_steps"), schedule.get("planned_steps")
    if not (isinstance(wanted, int) and isinstance(planned, int) and wanted > 0):
        return None
    replans = [r.get("steps") for r in schedule.get("replanned") or [] if isinstance(r, dict)]
    allowed = min([planned, *[n for n in replans if isinstance(n, int)]])
    if schedule.get("ended_by_time_cap") and isinstance(schedule.get("steps_trained"), int):
        allowed = min(allowed, schedule["steps_trained"])
    return (allowed, wanted) if allowed < UNDERTRAINED_SHARE * wanted else None


def built_here(ckpt: Checkpoint) -> bool:
    """A demo folder the app's DemoBuilder made (its marker), which a rebuild may replace."""
    from webui.demos import DEMO_MARKER

    return os.path.isfile(os.path.join(ckpt.path, DEMO_MARKER))


def missing_demos(settings) -> list[str]:
    """Tasks with a demo recipe and neither an explicit model nor a checkpoint folder, or only an undertrained
    demo model (built while the machine was busy): their tabs get a demo model, built again (issue #38),
    unless --demo-minutes asked for smaller demos (then a short one is what was asked for)."""
    found = find_checkpoints(settings.checkpoints)
    rebuild = settings.demo_minutes is None
    return [
        t.name
        for t in TASKS.values()
        if t.has_demo
        and t.name not in settings.models
        and all(c.demo and rebuild and built_here(c) and undertrained(c.report) for c in found[t.name])
    ]


def base_of(ckpt: Checkpoint) -> Checkpoint | None:
    """The model `ckpt` was fine-tuned from, when it loads here as a model of the same task: a local
    folder, or a Hub model already in the cache (the app never downloads for a comparison). None for a
    scratch run, or a base of another kind (a plain BERT is no similarity model before its head is trained).
    Compare's default second model: before vs after fine-tuning."""
    from chat.loading import task_of

    name = ckpt.report.get("base_model")
    if not name or ckpt.report.get("base_model_source") in (None, "scratch"):
        return None
    folder = os.path.expanduser(str(name))
    if not os.path.isdir(folder):
        if ckpt.report.get("base_model_source") != "hub":
            return None  # a folder that was moved or deleted since
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(str(name), "config.json")
        if not isinstance(config, str):
            return None
        folder = os.path.dirname(config)
    if os.path.abspath(folder) == os.path.abspath(ckpt.path) or task_of(folder) != ckpt.task:
        return None
    path = folder if os.path.isdir(os.path.expanduser(str(name))) else str(name)
    report = read_json_dict(os.path.join(folder, "training_report.json"))
    return Checkpoint(ckpt.task, path, f"基座 base: {name}", report=report)


def about(ckpt: Checkpoint | None, task: str) -> str:
    """The "about this model" line, from its training report and the task's figures and notes."""
    spec = task_named(task)
    if ckpt is None:
        how = (
            f"训练一个 Train one: `{spec.how_to_train}`, 然后重启 then restart"
            if spec.how_to_train
            else "加上 Add one with `--{task}-model`, 然后重启 then restart"
        )
        return f"⚠ 没有可用的模型 No {task} model yet. {how} `python app.py` (或去掉 or drop `--no-demo`)."
    r = ckpt.report
    if not r:
        line = f"**{ckpt.label}** ({ckpt.path})"
    else:
        base = r.get("base_model")
        base = "从零训练 trained from scratch" if base == "scratch" else (base or "?")
        train = (r.get("data") or {}).get("train") or {}
        data = f"{os.path.basename(str(train.get('path', '?')))} ({train.get('rows', '?')} rows" if train else "?"
        held = (r.get("self_quiz") or {}).get("held_out_lines")
        if train:  # the preview counts every usable line: say where the rest went (issue #38)
            data += f" + {held} 行留作自测 held out for the self-quiz)" if held else ")"
        line = f"**{ckpt.label}** · 基座 base: {base} · 数据 data: {data}{spec.figures(r)}"
    notes = spec.notes(r) if r else ""
    if notes:
        line += "\n\n" + notes
    if ckpt.demo:
        line += (
            f"\n\n这是用 `{spec.training.sample}` 训练的小型演示模型，只会样例里的内容。"
            f"This is a small demo model trained on the sample data. 训练你自己的 Train your own: `{spec.how_to_train}`"
        )
        short = undertrained(r)
        if short:
            line += (
                f"\n\n⚠ 这个演示模型训练不足：建的时候机器很忙，时间只够训练应有的 {short[0]:,}/{short[1]:,} 步，"
                "回答可能是乱的；下次启动时会重新训练。"
                f"This demo is undertrained: the machine was busy while it was built and its time allowed "
                f"{short[0]:,} of the {short[1]:,} steps it should have, so its answers may be nonsense; the next "
                "start builds it again."
            )
    return line


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

    Handlers call `get` first, then run the model inside `with store.serving():`. `options` are
    per-task keyword arguments of the predictor's from_pretrained, e.g. {"chat": {"precision": "int8"}}.
    """

    def __init__(self, options: dict | None = None, retry_after_s: float = RELOAD_FAILED_AFTER_S):
        self.options = options or {}
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
                        self._loaded[key] = (self._load(task, path), signature)
                    except InputError as e:
                        self._failed[key] = (str(e), time.monotonic(), signature)
                    except Exception as e:  # a broken folder must disable its tab, not the app
                        reason = (
                            f"{path} could not be loaded: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
                        )
                        self._failed[key] = (reason, time.monotonic(), signature)
        if key in self._failed:
            raise InputError(self._failed[key][0])
        return self._loaded[key][0]

    def _load(self, task: str, path: str):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        # on the compute thread, which runs the model afterwards (chat/compute.py: a second thread that has
        # run torch slows every later step of the first)
        return COMPUTE.run(task_named(task).load, path, **self.options.get(task, {}))


def warm_up(settings, store: ModelStore) -> threading.Thread:
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
