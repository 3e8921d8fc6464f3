"""Demo models for the tabs that have no checkpoint, built in the background while the app serves.

A new user's first `python app.py` must answer at once, not after three trainings. Each missing
demo model is trained by the real training script in a child process (so the app's own torch
state is untouched, and a build can be stopped at any time) at low CPU priority (so visitors'
requests come first), one after another: chat, then fill-mask, then similarity. Every recipe is
capped by a time budget (`--max-minutes`, measured on this CPU by the schedule rule), so a slow
CPU gets a smaller demo, not a longer wait. Progress comes from the run's
`<output>.partial/progress.json` (training/runner.py ProgressFile).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from chat.tasks import ROOT, TASKS, task_named
from data.precision import cpu_bf16_support
from training.ownership import adopt

DEMO_PREFIX = "demo-"
# Written into a demo folder this builder made: only such a folder is ever rebuilt over (a folder of yours
# named demo-chat is yours, whatever its report says)
DEMO_MARKER = "demo_build.json"
LOWER_PRIORITY = 10  # `nice` increment of a build: chat replies stay responsive while a demo trains


def spawn_training(command: list[str], log_path: str, append: bool = False, cwd: str | None = None) -> subprocess.Popen:
    """A training script as a child process of the app (demo builds, the Train tab): output to
    `log_path`, its own session (the app's Ctrl-C is the app's to pass on), at lower CPU priority."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "TRAINING_FROM_APP": "1"}
    with open(log_path, "a" if append else "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            command,
            cwd=cwd or ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    if hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, proc.pid, LOWER_PRIORITY)
        except OSError:
            pass
    return proc


def demo_recipe(task: str, output: str, minutes: float | None = None) -> list[str]:
    """The task's sample data and demo options (training/tasks/<task>/demo.yaml: tiny seeded configs that train in
    a minute or two on 2 CPU cores) plus the common ones: scratch, the output, the time budget."""
    training = task_named(task).training
    minutes = training.demo_minutes if minutes is None else minutes
    argv = [training.data_flag, training.path(training.sample), "--config", training.path(training.demo)]
    argv += ["--model", "scratch", "--output", output, "--overwrite", "--seed", "0", "--max-minutes", f"{minutes:g}"]
    return argv + (["--bf16"] if cpu_bf16_support() else [])  # emulated bf16 is slower: not even a note then


@dataclass
class Build:
    task: str
    output: str
    state: str = "queued"  # queued -> preparing -> training -> saving -> ready | failed
    reason: str = ""
    step: int = 0
    max_steps: int = 0
    eta_s: float | None = None
    started: float | None = None
    seconds: float | None = None  # how long it took, once ready

    @property
    def log(self) -> str:
        return self.output + ".log"


class DemoBuilder:
    """Trains the missing demo models one after another in a background thread.

    `status(task)` is the task's Build (None when the task needs no demo); `message(task)` the
    bilingual line a tab shows; `on_ready(task, path)` is called when a model is published.
    """

    def __init__(
        self,
        checkpoints: str,
        tasks,
        say=print,
        on_ready=None,
        minutes: float | None = None,
        python: str = sys.executable,
        poll_s: float = 0.5,
    ):
        # in tab order: chat, the first tab, first
        self.builds = {
            t: Build(t, os.path.join(checkpoints, DEMO_PREFIX + t)) for t in TASKS if t in tasks and TASKS[t].has_demo
        }
        self.say, self.on_ready, self.minutes, self.python, self.poll_s = say, on_ready, minutes, python, poll_s
        self._proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()

    def start(self) -> DemoBuilder:
        if self.builds:
            self._thread = threading.Thread(target=self._work, name="demo-builds", daemon=True)
            self._thread.start()
        return self

    def pending(self) -> bool:
        return any(b.state not in ("ready", "failed") for b in self.builds.values())

    def status(self, task: str) -> Build | None:
        build = self.builds.get(task)
        if build is not None and build.state in ("training", "saving", "preparing"):
            self._read_progress(build)
        return build

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every build ended (tests, docs/take_screenshots.py); False on timeout."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.pending()

    def stop(self, grace_s: float = 10.0) -> None:
        """End a running build (the app is closing): SIGTERM saves nothing worth keeping, so it gets a
        short grace, then SIGKILL. The next start trains the demo afresh (--overwrite)."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def message(self, task: str) -> str | None:
        """What a tab without a model says about its demo build (None: no build for this task)."""
        b = self.status(task)
        if b is None:
            return None
        if b.state == "queued":
            order = list(self.builds)  # builds run in this order: only those before this one are ahead of it
            ahead = [
                x.task
                for x in self.builds.values()
                if x.state not in ("ready", "failed") and order.index(x.task) < order.index(task)
            ]
            return (
                f"演示模型排队中 The demo model is queued: 先训练 first {', '.join(ahead)}（一次训练一个 one at a "
                "time）。"
                if ahead
                else "演示模型即将开始训练 The demo model is about to start training."
            )
        if b.state == "preparing":
            return "正在准备演示模型 Preparing the demo model: 读取数据、建立模型 reading the data, building the model…"
        if b.state == "training":
            left = f"，约 {b.eta_s:.0f} 秒 about {b.eta_s:.0f} s left" if b.eta_s is not None else ""
            return (
                f"正在训练演示模型 Building the demo model: 第 step {b.step}/{b.max_steps} 步{left}。"
                "训练完成后此页自动可用 This tab works as soon as it is ready."
            )
        if b.state == "saving":
            return "正在保存演示模型 Saving the demo model…"
        if b.state == "failed":
            return f"⚠ 演示模型训练失败 The demo model could not be built: {b.reason}"
        return None

    # -- the worker -------------------------------------------------------------------------

    def _read_progress(self, b: Build) -> None:
        try:
            with open(os.path.join(b.output + ".partial", "progress.json"), encoding="utf-8") as f:
                p = json.load(f)
        except (OSError, ValueError):
            return
        if not isinstance(p, dict) or not b.started or p.get("updated", 0) < b.started:
            return  # a file left by an earlier, interrupted build
        with self._state_lock:  # the page's poll must not turn a build the worker just ended back into "saving"
            if b.state in ("ready", "failed"):
                return
            b.state = "saving" if p.get("phase") == "saving" else "training"
            b.step, b.max_steps, b.eta_s = int(p.get("step") or 0), int(p.get("max_steps") or 0), p.get("eta_s")

    def _work(self) -> None:
        for b in self.builds.values():
            if self._stopping.is_set():
                return
            self._build(b)

    def _end(self, b: Build, state: str, reason: str = "") -> None:
        with self._state_lock:
            b.state, b.reason = state, reason

    def _build(self, b: Build) -> None:
        training = task_named(b.task).training
        script = training.path(training.script)
        minutes = self.minutes or training.demo_minutes
        self.say(
            f"[app] building the {b.task} demo model from {training.sample} in the background "
            f"(at most ~{minutes:g} min; the tab shows its progress) -> {b.output}"
        )
        b.state, b.started = "preparing", time.time()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(b.output)), exist_ok=True)
            with self._lock:
                self._proc = spawn_training([self.python, script, *demo_recipe(b.task, b.output, minutes)], b.log)
                proc = self._proc
            while proc.poll() is None:
                time.sleep(self.poll_s)
                self._read_progress(b)
        except OSError as e:
            self._end(b, "failed", f"cannot start the training script: {e.strerror or e}")
            self.say(f"[app] {b.task} demo model failed: {b.reason}")
            return
        finally:
            with self._lock:
                self._proc = None
        if self._stopping.is_set():
            self._end(b, "failed", "the app is closing")
            return
        if proc.returncode != 0 or not os.path.isfile(os.path.join(b.output, "config.json")):
            self._end(b, "failed", f"{last_error(b.log)} (exit {proc.returncode}; log: {b.log})")
            self.say(f"[app] {b.task} demo model failed: {b.reason}")
            return
        b.seconds = time.time() - b.started
        adopt(b.output, DEMO_MARKER)  # listed first in the checkpoint's manifest: a rebuild may replace it
        with open(os.path.join(b.output, DEMO_MARKER), "w", encoding="utf-8") as f:  # ours: may be rebuilt
            json.dump({"task": b.task, "built_at": time.time()}, f)
        if self.on_ready is not None:
            try:
                self.on_ready(b.task, b.output)
            except Exception as e:  # the tab shows the load error itself
                self.say(f"[app] {b.task} demo model built but not loaded: {e}")
        self._end(b, "ready")
        self.say(f"[app] {b.task} demo model ready in {b.seconds:.0f} s")
        try:
            os.remove(b.log)
        except OSError:
            pass


def last_error(log: str) -> str:
    """The script's own one-line reason (`error: ...`), else its last line."""
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return "the training script failed"
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["the training script failed"])[-1][:300]
